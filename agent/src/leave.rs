//! The leave path (DESIGN.md "leave"): deregister and wait out draining →
//! delete own API record → drain → delete the Node → stop k3s → complete the
//! lifecycle action. Each step looks before it acts, so leave can run twice,
//! be interrupted anywhere, or run on a node that never joined.

use crate::config::AgentConfig;
use crate::effects::lifecycle::WaitingHook;
use crate::effects::Effects;
use crate::error::{Error, Result};
use crate::join::{cluster_and_role, cluster_spec, identity};
use crate::plan::{self, RecordChange};
use crate::render;
use crate::state::State;
use crate::wait::{hurried, Hurry, Waiter};
use k3s_asg_aws::spec::ClusterSpec;
use k3s_asg_aws::tags::Role;
use std::time::Duration;

/// Heartbeat often enough for the hook: a third of its timeout, at least every second.
pub fn heartbeat_interval(hook: &WaitingHook) -> Duration {
    Duration::from_secs((hook.heartbeat_timeout_s / 3).max(1))
}

pub async fn leave(cfg: &AgentConfig, fx: &Effects, hurry: &Hurry) -> Result<()> {
    let id = identity(fx).await?;
    let (cluster, role) = cluster_and_role(cfg, fx, &id.instance_id).await?;
    let config_name = cfg.prefix.cluster_config(&cluster);
    let drain_name = cfg.prefix.drain_kubeconfig(&cluster);
    let params = fx.parameters.get(&[config_name.clone(), drain_name.clone()]).await?;
    let spec = cluster_spec(&params, &config_name)?;
    let mut st = State::begin(&fx.fs, &id.instance_id, &cluster, role, "leaving")?;
    tracing::info!(instance = %id.instance_id, cluster = %cluster, role = %role, "leaving");

    let hook = fx.lifecycle.waiting_hook(&id.instance_id).await?;
    let work = steps(fx, &spec, role, &id.instance_id, params.get(&drain_name).map(|p| p.value.clone()), hurry, &mut st, cfg.quorum_timeout);
    match &hook {
        None => work.await?,
        Some(h) => {
            tracing::info!(group = %h.group, hook = %h.hook, "a terminating lifecycle hook is waiting; heartbeating while leaving");
            tokio::pin!(work);
            let beat = async {
                loop {
                    tokio::time::sleep(heartbeat_interval(h)).await;
                    if let Err(e) = fx.lifecycle.heartbeat(h, &id.instance_id).await {
                        tracing::warn!(error = %e, "lifecycle heartbeat failed");
                    }
                }
            };
            tokio::select! {
                r = &mut work => r?,
                _ = beat => unreachable!("the heartbeat loop never ends"),
            }
        }
    }
    if let Some(h) = &hook {
        fx.lifecycle.complete(h, &id.instance_id).await?;
        tracing::info!(group = %h.group, hook = %h.hook, "completed the lifecycle action with CONTINUE");
        st.step(&fx.fs, "lifecycle-completed")?;
    }
    st.phase = "left".into();
    st.target_groups.clear();
    st.api_record = None;
    st.save(&fx.fs)?;
    tracing::info!("left the cluster");
    Ok(())
}

async fn steps(
    fx: &Effects,
    spec: &ClusterSpec,
    role: Role,
    instance_id: &str,
    drain_kubeconfig: Option<crate::secret::Secret>,
    hurry: &Hurry,
    st: &mut State,
    quorum_timeout: Duration,
) -> Result<()> {
    // 1. Deregister, then wait until the groups report us gone or their delay has passed.
    let mut waiting: Vec<(String, u16)> = Vec::new();
    let mut delay = 0;
    for tg in spec.target_groups_for(role) {
        let members = fx.target_groups.members(&tg.arn).await?;
        let Some(me) = members.iter().find(|m| m.id == instance_id && m.port == tg.port) else {
            continue;
        };
        if me.state != "draining" {
            fx.target_groups.deregister(&tg.arn, instance_id, tg.port).await?;
            tracing::info!(target_group = %tg.arn, "deregistered");
        }
        delay = delay.max(fx.target_groups.deregistration_delay(&tg.arn).await?);
        waiting.push((tg.arn.clone(), tg.port));
    }
    if !waiting.is_empty() {
        let mut w = Waiter::new("target groups to finish draining this instance", Duration::from_secs(delay)).hurry(hurry);
        loop {
            let mut still = Vec::new();
            for (arn, port) in &waiting {
                let members = fx.target_groups.members(arn).await?;
                if members.iter().any(|m| m.id == instance_id && m.port == *port && m.state != "unused") {
                    still.push(arn.clone());
                }
            }
            if still.is_empty() {
                break;
            }
            if w.pending(format!("still draining in {}", still.join(", "))).await.is_err() {
                tracing::info!("connection draining time has passed; going on");
                break;
            }
        }
    }
    st.step(&fx.fs, "deregistered")?;

    // 2. Control plane: delete our own API record.
    if role.is_server() {
        let zone = &spec.api.hosted_zone_id;
        let records = fx.dns.a_records(zone, &spec.api.hostname).await?;
        let mine: Vec<RecordChange> = records
            .into_iter()
            .filter(|r| r.set_identifier == instance_id)
            .map(|record| RecordChange::Delete { name: spec.api.hostname.clone(), record })
            .collect();
        fx.dns.change(zone, &mine).await?;
        st.step(&fx.fs, "api-record-removed")?;
    }

    // 3-5. Drain, delete the Node, stop k3s — only where k3s was set up here.
    let unit = render::unit_name(role);
    let configured = fx.fs.exists(render::CONFIG_PATH);
    let active = fx.services.is_active(unit).await?;
    if configured && active {
        let kubeconfig = match (role, drain_kubeconfig) {
            (Role::Node, Some(kc)) => {
                fx.fs.write_if_changed(render::DRAIN_KUBECONFIG_PATH, kc.expose(), 0o600)?;
                Some(fx.fs.path(render::DRAIN_KUBECONFIG_PATH))
            }
            (Role::Node, None) => {
                tracing::warn!("no drain kubeconfig published; the node cannot drain itself");
                None
            }
            _ => None,
        };
        let can_reach_api = role.is_server() || kubeconfig.is_some();
        if can_reach_api {
            let timeout = if hurried(hurry) { 10.min(spec.drain.timeout_s) } else { spec.drain.timeout_s };
            tracing::info!(node = instance_id, timeout_s = timeout, "cordoning and draining");
            let drain = fx.k3s.drain(instance_id, kubeconfig.as_deref(), timeout, spec.drain.grace_period_s);
            let result = tokio::select! {
                r = drain => r,
                _ = until_hurried(hurry) => Err(Error::failed("drain node", instance_id, "cut short by a second SIGTERM")),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "drain did not finish; going on so the instance can terminate");
            }
            st.step(&fx.fs, "drained")?;
            if role.is_server() && !quorum_allows_removal(fx, instance_id, quorum_timeout, hurry).await? {
                tracing::error!(
                    node = instance_id,
                    "not deleting this server's Node (and so its etcd member): quorum would be lost; \
                     remove the member by hand once the control plane is healthy"
                );
                st.last_error = Some("etcd member kept: removing it would have lost quorum".into());
            } else {
                fx.k3s.delete_node(instance_id, kubeconfig.as_deref()).await?;
                st.step(&fx.fs, "node-deleted")?;
            }
        }
    }
    if active {
        fx.services.stop(unit).await?;
    }
    st.step(&fx.fs, "k3s-stopped")?;
    Ok(())
}

/// Waits (bounded, heartbeats continue meanwhile) until removing this server's
/// etcd member keeps quorum, e.g. until a replacement has joined.
async fn quorum_allows_removal(fx: &Effects, me: &str, timeout: Duration, hurry: &Hurry) -> Result<bool> {
    let mut w = Waiter::new("enough healthy control-plane members to remove this one", timeout).hurry(hurry);
    loop {
        let members = fx.k3s.control_plane_nodes().await?;
        match plan::may_remove_member(&members, me) {
            Ok(()) => return Ok(true),
            Err(why) => {
                if w.pending(why).await.is_err() {
                    return Ok(false);
                }
            }
        }
    }
}

async fn until_hurried(hurry: &Hurry) {
    while !hurried(hurry) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
