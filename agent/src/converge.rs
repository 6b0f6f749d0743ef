//! Spec edits converge: `run` re-reads the cluster spec every `--spec-check` (jittered) and
//! puts the instance where the spec now says: registered into added target groups,
//! deregistered (and drained of connections) from removed ones, and a server's API record moved
//! to a renamed `api.hostname` (or zone), the old name's record removed once the new one exists,
//! and the published kubeconfigs pointed at the new name. What it did is recorded in the state
//! file, which is what a leave undoes. k3s's own keys (`k3s.server`, `k3s.agent`) and
//! `api.hostname` in the servers' TLS SANs take effect when an instance is replaced.
//!
//! [`changes`] decides (pure); [`converge`] performs.

use crate::api_record;
use crate::config::AgentConfig;
use crate::discover::{cluster_spec, Names};
use crate::effects::Effects;
use crate::error::Result;
use crate::render;
use crate::state::{Phase, State};
use k3s_asg_aws::spec::ClusterSpec;
use k3s_asg_aws::tags::Role;
use std::collections::BTreeSet;

pub use crate::api_record::{is_api_name, ApiName};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// (target group ARN, port) to register into.
    pub register: Vec<(String, u16)>,
    /// (target group ARN, port) to leave.
    pub deregister: Vec<(String, u16)>,
    /// A server's API record: from the recorded name to the spec's.
    pub move_api: Option<(Option<ApiName>, ApiName)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.register.is_empty() && self.deregister.is_empty() && self.move_api.is_none()
    }
}

/// What differs between what the instance was put into (the state file) and the spec.
pub fn changes(st: &State, spec: &ClusterSpec, role: Role) -> Changes {
    let recorded: BTreeSet<(String, u16)> = st.registrations().into_iter().collect();
    let wanted: BTreeSet<(String, u16)> = spec.target_groups_for(role).map(|tg| (tg.arn.clone(), tg.port)).collect();
    let move_api = if role.is_server() {
        let now = st.api_hostname.clone().zip(st.api_zone_id.clone());
        let same = now.as_ref().is_some_and(|n| is_api_name(&spec.api, n));
        let want = (spec.api.hostname.clone(), spec.api.hosted_zone_id.clone());
        (!same && st.api_record.is_some()).then_some((now, want))
    } else {
        None
    };
    Changes { register: wanted.difference(&recorded).cloned().collect(), deregister: recorded.difference(&wanted).cloned().collect(), move_api }
}

/// One look: re-reads the spec and converges the instance to it. A spec that does not parse
/// changes nothing (logged); a joined instance only.
pub async fn converge(cfg: &AgentConfig, fx: &Effects) -> Result<()> {
    let Some(mut st) = State::load(&fx.fs)?.filter(|s| s.phase == Phase::Ready) else {
        return Ok(());
    };
    let Some(role) = st.role else {
        return Ok(());
    };
    let names = Names::new(cfg, &st.cluster);
    let wanted = if role.is_server() { vec![names.config.clone()] } else { vec![names.config.clone(), names.drain.clone()] };
    let params = fx.parameters.get(&wanted).await?;
    let spec = match cluster_spec(&params, &names.config) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "the cluster spec does not read: keeping the instance as it is");
            return Ok(());
        }
    };
    if let Some(drain) = params.get(&names.drain) {
        // A node drains itself through this: keep it as published (a renamed API moves it).
        if fx.fs.write_if_changed(render::DRAIN_KUBECONFIG_PATH, drain.value.expose(), 0o600)? {
            tracing::info!(path = render::DRAIN_KUBECONFIG_PATH, "the drain kubeconfig changed; rewrote it");
        }
    }
    let me = st.instance_id.clone();
    // A rename interrupted after the new record was published: finish it.
    api_record::finish_rename(fx, &mut st, &me, &names).await?;
    let c = changes(&st, &spec, role);
    if c.is_empty() {
        return Ok(());
    }
    for (arn, port) in &c.register {
        crate::membership::register(fx, arn, *port, &me, &mut st).await?;
        tracing::info!(target_group = %arn, port, "the spec added a target group: registered");
    }
    if let Some((from, to)) = &c.move_api {
        move_api_record(fx, &spec, &me, &mut st, from.as_ref(), to).await?;
        api_record::finish_rename(fx, &mut st, &me, &names).await?;
    }
    for (arn, port) in &c.deregister {
        tracing::info!(target_group = %arn, port, "the spec removed a target group: deregistering; waiting out connection draining");
        crate::membership::remove(fx, &[(arn.clone(), *port)], &me, |delay| delay, None).await?;
        st.remove_registration(arn, *port);
        st.save(&fx.fs)?;
    }
    Ok(())
}

/// Publishes this server's record under the spec's name and records it, keeping the old name
/// in `api_previous` until `api_record::finish_rename` has removed the record there.
async fn move_api_record(fx: &Effects, spec: &ClusterSpec, me: &str, st: &mut State, from: Option<&ApiName>, to: &ApiName) -> Result<()> {
    let address = api_record::address(fx, &spec.api, None).await?;
    api_record::publish(fx, &spec.api, me, &address, st).await?;
    tracing::info!(hostname = %to.0, zone = %to.1, "the spec renamed the API: published this server's record under the new name");
    if st.api_previous.is_none() {
        st.api_previous = from.cloned();
    }
    st.save(&fx.fs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(groups: &[(&str, u16)], host: &str) -> ClusterSpec {
        let tgs: Vec<serde_json::Value> =
            groups.iter().map(|(a, p)| serde_json::json!({ "arn": a, "port": p, "roles": ["node", "control-plane"] })).collect();
        let json = serde_json::json!({ "api": { "hostname": host, "hosted_zone_id": "Z1" }, "target_groups": tgs });
        ClusterSpec::parse("/k3s-asg/clusters/a/config", &json.to_string()).unwrap()
    }

    const TG1: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/one/1";
    const TG2: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/two/2";

    #[test]
    fn a_replaced_group_and_a_renamed_api() {
        let st = State {
            target_groups: vec![format!("{TG1}:80")],
            api_hostname: Some("api.a.example.com".into()),
            api_zone_id: Some("Z1".into()),
            api_record: Some("api.a.example.com A 10.0.0.1 (set i-1)".into()),
            ..Default::default()
        };
        let c = changes(&st, &spec(&[(TG2, 80)], "api2.a.example.com"), Role::ControlPlane);
        assert_eq!(c.register, vec![(TG2.to_string(), 80)]);
        assert_eq!(c.deregister, vec![(TG1.to_string(), 80)]);
        assert_eq!(c.move_api, Some((Some(("api.a.example.com".into(), "Z1".into())), ("api2.a.example.com".into(), "Z1".into()))));
        // A node has no API record; a port change is a new registration.
        let c = changes(&st, &spec(&[(TG1, 8080)], "api.a.example.com"), Role::Node);
        assert_eq!((c.register.len(), c.deregister.len(), c.move_api), (1, 1, None));
        // Nothing changed.
        assert!(changes(&st, &spec(&[(TG1, 80)], "api.a.example.com"), Role::ControlPlane).is_empty());
    }
}
