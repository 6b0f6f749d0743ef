//! `k3s-asg-agent status`: what the node did and where it stands. No secrets:
//! the state file never holds any.

use crate::state::State;

pub fn human(state: Option<&State>) -> String {
    let Some(s) = state else {
        return "k3s-asg-agent has not run on this host (no state file)\n".into();
    };
    let mut out = String::new();
    let role = s.role.map(|r| r.to_string()).unwrap_or_else(|| "?".into());
    out.push_str(&format!("instance:   {}\n", s.instance_id));
    out.push_str(&format!("cluster:    {} ({role})\n", s.cluster));
    out.push_str(&format!("phase:      {}\n", s.phase));
    if let Some(mode) = s.mode {
        let how = match (mode, &s.server_url) {
            (crate::vocab::Mode::ClusterInit, _) => "initialised the cluster (cluster-init)".to_string(),
            (_, Some(url)) => format!("joined through {url}"),
            _ => "joining".to_string(),
        };
        out.push_str(&format!("k3s:        {how}\n"));
    }
    if let Some(e) = &s.election {
        out.push_str(&format!("election:   {e}\n"));
    }
    if let Some(r) = &s.recovery {
        out.push_str(&format!("recovery:   {}\n", r.outcome));
    }
    if let Some(w) = &s.waiting_for {
        out.push_str(&format!("waiting:    {w}\n"));
    }
    if let Some(r) = &s.api_record {
        out.push_str(&format!("api record: {r}\n"));
    }
    if s.target_groups.is_empty() {
        out.push_str("registered: (no target groups for this role)\n");
    } else {
        for (i, tg) in s.target_groups.iter().enumerate() {
            out.push_str(&format!("{} {tg}\n", if i == 0 { "registered:" } else { "           " }));
        }
    }
    if let Some(e) = &s.last_error {
        out.push_str(&format!("last error: {e}\n"));
    }
    let steps: Vec<&str> = s.steps.iter().map(|st| st.name.as_str()).collect();
    out.push_str(&format!("steps:      {}\n", steps.join(" → ")));
    out
}

pub fn json(state: Option<&State>) -> String {
    serde_json::to_string_pretty(&state).expect("state serialises") + "\n"
}
