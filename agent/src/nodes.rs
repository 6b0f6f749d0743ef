//! Nodes, one home: this instance's own Node (drain, the quorum check before its server's etcd
//! member goes, delete) and the Nodes of instances that died without leaving (ghosts, and the
//! servers a restore brought back that no longer run). k3s removes a deleted server Node's etcd
//! member, so every delete of a server's Node is a membership change.
//!
//! [`may_remove_member`] decides (pure); the rest perform through `K3s` (k3s kubectl) and EC2,
//! each safe to repeat: a Node already gone is deleted again without harm, a drain of a drained
//! Node finds nothing to evict.

use crate::effects::Effects;
use crate::error::{Error, Result};
use crate::render;
use crate::state::State;
use crate::wait::{hurried, Hurry, Waiter};
use k3s_asg_aws::ec2::InstanceInfo;
use k3s_asg_aws::spec::DrainSpec;
use k3s_asg_aws::tags::Role;
use std::time::Duration;

/// Ghosts deleted per round at most (bounded: a bad EC2 answer cannot empty the cluster at once).
pub const GHOSTS_PER_ROUND: usize = 10;

/// Quorum guard: may this server remove its etcd member now? Only if the
/// healthy members left afterwards still form a quorum of the membership left
/// afterwards (the last server may always go).
pub fn may_remove_member(members: &[(String, bool)], me: &str) -> Result<(), String> {
    let others: Vec<&(String, bool)> = members.iter().filter(|(n, _)| n != me).collect();
    if others.is_empty() {
        return Ok(());
    }
    let healthy = others.iter().filter(|(_, ready)| *ready).count();
    let quorum = others.len() / 2 + 1;
    if healthy >= quorum {
        Ok(())
    } else {
        Err(format!("removing this member would leave {healthy} healthy of {} control-plane members (quorum {quorum})", others.len()))
    }
}

/// Whether this server is the only control-plane member left (`false` when its k3s is not
/// running: it cannot tell).
pub async fn last_member(fx: &Effects, role: Role, me: &str) -> Result<bool> {
    if !fx.services.is_active(render::unit_name(role)).await? {
        return Ok(false);
    }
    let members = fx.k3s.control_plane_nodes().await?;
    Ok(!members.iter().any(|(n, _)| n != me))
}

/// Cordons and drains this instance's Node within `timeout` (a second SIGTERM cuts it to 10 s
/// and then short); a drain that fails or is cut short is logged, and the caller goes on.
pub async fn drain(
    fx: &Effects,
    me: &str,
    kubeconfig: Option<&std::path::Path>,
    spec: &DrainSpec,
    budget: impl Fn(Duration) -> Duration,
    hurry: &Hurry,
) {
    let timeout = if hurried(hurry) { 10.min(spec.timeout_s) } else { spec.timeout_s };
    let timeout = budget(Duration::from_secs(timeout)).as_secs().max(1);
    tracing::info!(node = me, timeout_s = timeout, "cordoning and draining");
    let run = fx.k3s.drain(me, kubeconfig, timeout, spec.grace_period_s);
    let result = tokio::select! {
        r = run => r,
        _ = until_hurried(hurry) => Err(Error::failed("drain node", me, "cut short by a second SIGTERM")),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "drain did not finish; going on so the instance can terminate");
    }
}

/// Waits (within `budget`; a hook's heartbeats continue meanwhile) until removing this server's
/// etcd member keeps quorum, e.g. until a replacement is a Ready member; `false` when the wait
/// ended first. What it waits for is in `st.waiting_for` (`status`).
pub async fn quorum_allows_removal(
    fx: &Effects,
    me: &str,
    st: &mut State,
    quorum_timeout: Duration,
    budget: Duration,
    hurry: &Hurry,
) -> Result<bool> {
    let mut w = Waiter::new("a Ready replacement control-plane member, so that removing this one keeps quorum", budget).hurry(hurry);
    loop {
        let members = fx.k3s.control_plane_nodes().await?;
        match may_remove_member(&members, me) {
            Ok(()) => {
                if st.waiting_for.take().is_some() {
                    st.save(&fx.fs)?;
                }
                return Ok(true);
            }
            Err(why) => {
                let waiting = format!("{why}; waiting up to {} s for a Ready replacement", quorum_timeout.as_secs());
                if st.waiting_for.as_deref() != Some(waiting.as_str()) {
                    st.waiting_for = Some(waiting);
                    st.save(&fx.fs)?;
                }
                if w.pending(why).await.is_err() {
                    st.waiting_for = None;
                    return Ok(false);
                }
            }
        }
    }
}

/// Deletes the Nodes of instances that are terminated or unknown to EC2; returns their names.
pub async fn collect_ghosts(fx: &Effects, me: &str) -> Result<Vec<String>> {
    let gone = |i: Option<&InstanceInfo>| i.is_none_or(|i| i.state == "terminated");
    let ghosts = delete_of_dead(fx, me, fx.k3s.nodes().await?, gone, GHOSTS_PER_ROUND).await?;
    for g in &ghosts {
        tracing::warn!(node = %g, "deleted the Node of an instance that is terminated (it died without leaving)");
    }
    Ok(ghosts)
}

/// The winner of a restore deletes the Nodes the snapshot brought back of control-plane
/// instances that no longer run: they are not etcd members any more (the reset made a
/// one-member cluster), and counted as members they would block every quorum check.
pub async fn forget_lost_servers(fx: &Effects, me: &str) -> Result<()> {
    let servers = fx.k3s.control_plane_nodes().await?.into_iter().map(|(n, _)| n).collect();
    let not_running = |i: Option<&InstanceInfo>| i.is_none_or(|i| !i.is_live());
    for node in delete_of_dead(fx, me, servers, not_running, usize::MAX).await? {
        tracing::info!(node = %node, "deleted the Node of a server lost before the restore");
    }
    Ok(())
}

/// Of `nodes` (other than `me`) named by instance ids, deletes at most `limit` whose instance
/// `dead` judges from EC2's answer (`None`: EC2 does not know it); returns their names. Nodes
/// not named by an instance id are never touched.
pub async fn delete_of_dead(
    fx: &Effects,
    me: &str,
    nodes: Vec<String>,
    dead: impl Fn(Option<&InstanceInfo>) -> bool,
    limit: usize,
) -> Result<Vec<String>> {
    let named: Vec<String> = nodes.into_iter().filter(|n| n != me && k3s_asg_aws::names::is_instance_id(n)).collect();
    if named.is_empty() {
        return Ok(vec![]);
    }
    let known = fx.instances.describe(&named).await?;
    let doomed: Vec<String> = named.into_iter().filter(|n| dead(known.iter().find(|i| &i.id == n))).take(limit).collect();
    for node in &doomed {
        fx.k3s.delete_node(node, None).await?;
    }
    Ok(doomed)
}

async fn until_hurried(hurry: &Hurry) {
    while !hurried(hurry) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_guard() {
        let m = |v: &[(&str, bool)]| v.iter().map(|(n, r)| (n.to_string(), *r)).collect::<Vec<_>>();
        assert!(may_remove_member(&m(&[("a", true), ("b", true), ("c", true)]), "a").is_ok());
        // Two of three terminating at once: b is already down.
        let e = may_remove_member(&m(&[("a", true), ("b", false), ("c", true)]), "a").unwrap_err();
        assert!(e.contains("1 healthy of 2"), "{e}");
        assert!(may_remove_member(&m(&[("a", true)]), "a").is_ok(), "the last server may go");
        assert!(may_remove_member(&m(&[("a", true), ("b", true)]), "a").is_ok());
        assert!(may_remove_member(&m(&[("a", true), ("b", true), ("c", true), ("d", false), ("e", true)]), "a").is_ok());
    }
}
