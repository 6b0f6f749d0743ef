//! What the agent did, kept under `{root}/var/lib/k3s-asg/state.json` for
//! `status` and for a restarted agent. Holds no secrets. Typed: the phase, the
//! join mode and the step names are enums (the failpoints and the tests use the
//! same [`StepName`]), serialised as the kebab-case words earlier agents wrote.

use crate::effects::hostfs::HostFs;
use crate::error::Result;
pub use crate::vocab::{Mode, Phase, StepName, Trigger};
use k3s_asg_aws::tags::Role;
use serde::{Deserialize, Serialize};

pub const STATE_PATH: &str = "/var/lib/k3s-asg/state.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub instance_id: String,
    pub cluster: String,
    pub role: Option<Role>,
    /// How k3s was configured here; decides the mode of the next join on this host.
    pub mode: Option<Mode>,
    pub server_url: Option<String>,
    pub phase: Phase,
    pub api_hostname: Option<String>,
    pub api_record: Option<String>,
    /// A server's Node (and with it its etcd member) was deleted by a leave that has not yet
    /// wiped the datastore (a return from a warm pool or Standby): see `leave::forget_membership`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub member_removed: bool,
    /// A leave out of service found this server the cluster's last and kept its member,
    /// datastore and API record: a resumed leave (k3s already stopped) keeps them too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kept_cluster: bool,
    /// The API name (hostname, zone) this server published under before a spec rename, until its
    /// record there is removed and the kubeconfigs point at the new name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_previous: Option<(String, String)>,
    /// The hosted zone of the API record it published (a leave without a readable spec removes
    /// the record from what is recorded here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_zone_id: Option<String>,
    pub target_groups: Vec<String>,
    /// Steps completed, in order, with the Unix time (ms) each finished.
    pub steps: Vec<Step>,
    pub last_error: Option<String>,
    /// Why the last leave began.
    #[serde(default)]
    pub trigger: Option<Trigger>,
    /// The first-server election this instance won, and why it was held (no secret).
    #[serde(default)]
    pub election: Option<String>,
    /// What a join is waiting for right now, and why.
    #[serde(default)]
    pub waiting_for: Option<String>,
    /// Snapshots that failed to restore here, and how often (a recovery's winner retries one a
    /// few times, then sets it aside: `failed_snapshots`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub restore_failures: std::collections::BTreeMap<String, u32>,
    /// The latest election of its cluster when this server joined or won (a later recovery
    /// election means the cluster was brought back without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The recovery this server won (and leads or led).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recovery>,
    /// Unix seconds since when this server has seen no live server of its cluster and none that
    /// could come up (the recovery grace counts from here, across restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_since: Option<u64>,
}

/// A recovery this server won.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Recovery {
    pub epoch: u64,
    /// The snapshot restored (its name in the snapshot folder); `None`: a new cluster.
    pub snapshot: Option<String>,
    pub restored: bool,
    /// The join that recovered finished (the lease and the refresh of the kubeconfigs are over).
    #[serde(default)]
    pub done: bool,
    /// What happened, in words (`status` prints it).
    pub outcome: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub name: StepName,
    pub at_ms: u128,
}

/// Restores of one snapshot tried before the next newest is taken.
pub const RESTORE_ATTEMPTS: u32 = 3;

impl State {
    /// Snapshots set aside: they failed to restore `RESTORE_ATTEMPTS` times.
    pub fn failed_snapshots(&self) -> Vec<String> {
        self.restore_failures.iter().filter(|(_, n)| **n >= RESTORE_ATTEMPTS).map(|(name, _)| name.clone()).collect()
    }

    /// The spec a leave works from when the cluster spec cannot be read (deleted, a typo): the
    /// target groups and API record this instance recorded, default drain timeouts, nothing
    /// else. `None` when nothing was recorded.
    pub fn recorded_spec(&self, role: Role) -> Option<k3s_asg_aws::spec::ClusterSpec> {
        use k3s_asg_aws::spec::{ApiSpec, ClusterSpec, TargetGroupSpec};
        let target_groups: Vec<TargetGroupSpec> =
            self.registrations().into_iter().map(|(arn, port)| TargetGroupSpec { arn, port, roles: vec![role], ingress: false }).collect();
        let api = match (&self.api_hostname, &self.api_zone_id) {
            (Some(h), Some(z)) => ApiSpec { hostname: h.clone(), hosted_zone_id: z.clone(), ttl: 30, address: Default::default() },
            _ => ApiSpec { hostname: String::new(), hosted_zone_id: String::new(), ttl: 30, address: Default::default() },
        };
        if target_groups.is_empty() && api.hostname.is_empty() {
            return None;
        }
        Some(ClusterSpec { api, target_groups, readiness: vec![], k3s: Default::default(), drain: Default::default(), snapshots: None })
    }

    /// The target groups and ports this instance was registered into (`target_groups`'
    /// `arn:port` entries), in the order recorded.
    pub fn registrations(&self) -> Vec<(String, u16)> {
        self.target_groups.iter().filter_map(|tg| tg.rsplit_once(':').and_then(|(arn, port)| Some((arn.to_string(), port.parse().ok()?)))).collect()
    }

    /// Records a registration (once).
    pub fn add_registration(&mut self, arn: &str, port: u16) {
        let entry = format!("{arn}:{port}");
        if !self.target_groups.contains(&entry) {
            self.target_groups.push(entry);
        }
    }

    /// Forgets a registration.
    pub fn remove_registration(&mut self, arn: &str, port: u16) {
        let entry = format!("{arn}:{port}");
        self.target_groups.retain(|tg| *tg != entry);
    }

    /// The state file, or `None` when there is none; a corrupt one is an error naming the file.
    pub fn read(fs: &HostFs) -> Result<Option<State>> {
        match fs.read(STATE_PATH)? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                crate::error::Error::failed("read the state file", fs.path(STATE_PATH).display().to_string(), format!("it is corrupt ({e})"))
            }),
        }
    }

    /// The state for the agent's own use: a corrupt file is kept aside (`state.json.corrupt`),
    /// logged, and the agent goes on as on a fresh host (every step looks before it acts).
    pub fn load(fs: &HostFs) -> Result<Option<State>> {
        match State::read(fs) {
            Err(e) if e.detail.contains("corrupt") => {
                if let Some(text) = fs.read(STATE_PATH)? {
                    fs.write_if_changed(&format!("{STATE_PATH}.corrupt"), &text, 0o644)?;
                }
                tracing::warn!(error = %e, "the state file is corrupt: kept aside as state.json.corrupt; going on as on a fresh host");
                Ok(None)
            }
            r => r,
        }
    }

    /// Loads the state and starts a new phase (joining, leaving) with no steps done yet.
    pub fn begin(fs: &HostFs, instance_id: &str, cluster: &str, role: Role, phase: Phase) -> Result<State> {
        let mut st = State::load(fs)?.unwrap_or_default();
        st.instance_id = instance_id.to_string();
        st.cluster = cluster.to_string();
        st.role = Some(role);
        st.phase = phase;
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
    pub fn step(&mut self, fs: &HostFs, name: StepName) -> Result<()> {
        crate::failpoint::hit(name);
        let at_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
        self.steps.push(Step { name, at_ms });
        tracing::info!(step = name.as_str(), "done");
        self.save(fs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_words_earlier_agents_wrote() {
        for s in StepName::JOIN.iter().chain(StepName::LEAVE) {
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::Value::String(s.as_str().into()));
        }
        assert_eq!(serde_json::to_value(Phase::Leaving).unwrap(), "leaving");
        let old = r#"{"instance_id":"i-1","cluster":"a","role":"control-plane","mode":"cluster-init","server_url":null,"phase":"ready",
            "api_hostname":null,"api_record":null,"target_groups":[],"steps":[{"name":"api-record","at_ms":1}],"last_error":null}"#;
        let st: State = serde_json::from_str(old).unwrap();
        assert_eq!((st.phase, st.mode, st.steps[0].name), (Phase::Ready, Some(Mode::ClusterInit), StepName::ApiRecord));
        assert_eq!(StepName::join_steps(Role::Node).len(), 7);
        assert_eq!(StepName::join_steps(Role::ControlPlane), StepName::JOIN);
        assert!(st.recovery.is_none() && st.quiet_since.is_none());
    }
}
