//! What the agent did, kept under `{root}/var/lib/k3s-asg/state.json` for
//! `status` and for a restarted agent. Holds no secrets.

use crate::effects::hostfs::HostFs;
use crate::error::Result;
use crate::plan::Mode;
use k3s_asg_aws::tags::Role;
use serde::{Deserialize, Serialize};

pub const STATE_PATH: &str = "/var/lib/k3s-asg/state.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub instance_id: String,
    pub cluster: String,
    pub role: Option<Role>,
    pub mode: Option<Mode>,
    pub server_url: Option<String>,
    /// `joining`, `ready`, `failed`.
    pub phase: String,
    pub api_hostname: Option<String>,
    pub api_record: Option<String>,
    pub target_groups: Vec<String>,
    /// Steps completed, in order, with the Unix time (ms) each finished.
    pub steps: Vec<Step>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub name: String,
    pub at_ms: u128,
}

impl State {
    pub fn load(fs: &HostFs) -> Result<Option<State>> {
        Ok(fs.read(STATE_PATH)?.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Loads the state and starts a new phase (`joining`, `leaving`) with no steps done yet.
    pub fn begin(fs: &HostFs, instance_id: &str, cluster: &str, role: Role, phase: &str) -> Result<State> {
        let mut st = State::load(fs)?.unwrap_or_default();
        st.instance_id = instance_id.to_string();
        st.cluster = cluster.to_string();
        st.role = Some(role);
        st.phase = phase.to_string();
        st.steps.clear();
        st.last_error = None;
        st.save(fs)?;
        Ok(st)
    }

    pub fn save(&self, fs: &HostFs) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("state serialises") + "\n";
        fs.write_if_changed(STATE_PATH, &text, 0o644)?;
        Ok(())
    }

    /// Records a finished step (after its effect: see `failpoint`).
    pub fn step(&mut self, fs: &HostFs, name: &str) -> Result<()> {
        crate::failpoint::hit(name);
        let at_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
        self.steps.push(Step { name: name.to_string(), at_ms });
        tracing::info!(step = name, "done");
        self.save(fs)
    }
}
