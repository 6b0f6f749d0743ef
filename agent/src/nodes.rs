//! Nodes, one home: this instance's own Node (drain, the quorum check before its server's etcd
//! member goes, delete) and the Nodes of instances that died without leaving (ghosts, and the
//! servers a restore brought back that no longer run). k3s removes a deleted server Node's etcd
//! member, so every delete of a server's Node is a membership change.
//!
//! [`may_remove_member`] decides (pure); the rest perform through `K3s` (k3s kubectl) and EC2,
//! each safe to repeat: a Node already gone is deleted again without harm, a drain of a drained
//! Node finds nothing to evict.

use crate::effects::etcd::Member;
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

/// Quorum guard: may this server remove its etcd member now? A member that is not a voter (a
/// learner, or none at all) may always go. A voter may go only if the healthy voters left
/// afterwards are a majority of every member left, learners counted: so the cluster keeps its
/// quorum now and once its learners are promoted, and a roll waits for a replacement's
/// promotion rather than for its Node (which is Ready before its member votes). The last voter
/// may always go.
pub fn may_remove_member(members: &[Member], me: &str) -> Result<(), String> {
    if !members.iter().any(|m| m.node() == me && !m.learner) {
        return Ok(());
    }
    let left: Vec<&Member> = members.iter().filter(|m| m.node() != me).collect();
    let voters = left.iter().filter(|m| !m.learner).count();
    if voters == 0 {
        return Ok(());
    }
    let learners = left.len() - voters;
    let healthy = left.iter().filter(|m| !m.learner && m.healthy).count();
    let quorum = left.len() / 2 + 1;
    if healthy >= quorum {
        return Ok(());
    }
    let mut why = format!("removing this voter would leave {healthy} healthy of {voters} voting etcd members");
    if learners > 0 {
        why.push_str(&format!(" and {learners} learner(s) not yet promoted"));
    }
    why.push_str(&format!(" (quorum {quorum} of {})", left.len()));
    Err(why)
}

/// The etcd members of this server's cluster, as etcd sees them: asked of this server's own
/// member first, then of the server it joined through (a learner does not list members);
/// `None` when no etcd answers (k3s is not running here, or has never been set up).
pub async fn etcd_members(fx: &Effects) -> Result<Option<Vec<Member>>> {
    let Some(config) = fx.fs.read(render::CONFIG_PATH)? else {
        return Ok(None);
    };
    let mut addresses: Vec<String> = render::configured(&config, "node-ip").into_iter().collect();
    if let Some(ip) = render::configured(&config, "server").as_deref().and_then(render::server_address) {
        addresses.push(ip.to_string());
    }
    fx.etcd.members(&addresses).await
}

/// Whether this server holds the only etcd member left (`false` when its k3s is not running or
/// its etcd does not answer: it cannot tell).
pub async fn last_member(fx: &Effects, role: Role, me: &str) -> Result<bool> {
    if !role.is_server() || !fx.services.is_active(render::unit_name(role)).await? {
        return Ok(false);
    }
    Ok(etcd_members(fx).await?.is_some_and(|members| members.iter().all(|m| m.node() == me)))
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
/// etcd member keeps quorum, e.g. until a replacement's learner is promoted; `false` when the
/// wait ended first. What it waits for is in `st.waiting_for` (`status`).
pub async fn quorum_allows_removal(
    fx: &Effects,
    me: &str,
    st: &mut State,
    quorum_timeout: Duration,
    budget: Duration,
    hurry: &Hurry,
) -> Result<bool> {
    let mut w = Waiter::new("a voting replacement etcd member, so that removing this one keeps quorum", budget).hurry(hurry);
    loop {
        let verdict = match etcd_members(fx).await? {
            Some(members) => may_remove_member(&members, me),
            None => Err("no etcd member answers (this server's, or the one it joined through)".to_string()),
        };
        match verdict {
            Ok(()) => {
                if st.waiting_for.take().is_some() {
                    st.save(&fx.fs)?;
                }
                return Ok(true);
            }
            Err(why) => {
                let waiting = format!("{why}; waiting up to {} s for a voting replacement", quorum_timeout.as_secs());
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

/// Waits (within `budget`) until etcd no longer lists this server's member, after its Node was
/// deleted: k3s removes the member afterwards (its etcd controller), and etcd refuses to remove
/// a voter within its health interval (5 s) of a membership change ("unhealthy cluster", etcd
/// `server.go` `mayRemoveMember`). Stopping k3s first could leave the others without quorum for
/// good (one of two servers stopped before its removal). `false` when the wait ended first.
pub async fn member_removed(fx: &Effects, me: &str, budget: Duration, hurry: &Hurry) -> Result<bool> {
    let mut w = Waiter::new("k3s to remove this server's etcd member", budget).hurry(hurry);
    loop {
        // No etcd answering: k3s has exited, as it does once its member is removed. The last
        // member is never removed (etcd keeps a cluster's only member): nothing to wait for.
        match etcd_members(fx).await? {
            Some(members) if members.iter().any(|m| m.node() == me) && members.iter().any(|m| m.node() != me) => {}
            _ => return Ok(true),
        }
        if w.pending("etcd still lists this server's member").await.is_err() {
            return Ok(false);
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
        let m = |v: &[(&str, bool, bool)]| {
            v.iter()
                .map(|(n, learner, healthy)| Member { name: format!("{n}-0000000a"), client_urls: vec![], learner: *learner, healthy: *healthy })
                .collect::<Vec<_>>()
        };
        const V: bool = false; // a voter
        const L: bool = true; // a learner
        assert!(may_remove_member(&m(&[("a", V, true), ("b", V, true), ("c", V, true)]), "a").is_ok());
        // Two of three terminating at once: b is already down.
        let e = may_remove_member(&m(&[("a", V, true), ("b", V, false), ("c", V, true)]), "a").unwrap_err();
        assert!(e.contains("1 healthy of 2 voting"), "{e}");
        assert!(may_remove_member(&m(&[("a", V, true)]), "a").is_ok(), "the last voter may go");
        assert!(may_remove_member(&m(&[("a", V, true), ("b", V, true)]), "a").is_ok());
        assert!(may_remove_member(&m(&[("a", V, true), ("b", V, true), ("c", V, true), ("d", V, false), ("e", V, true)]), "a").is_ok());
        // A learner, or a server that is no member, may always go.
        assert!(may_remove_member(&m(&[("a", L, true), ("b", V, false), ("c", V, false)]), "a").is_ok());
        assert!(may_remove_member(&m(&[("b", V, false)]), "a").is_ok());
        // Ready is not voting: with b dead, the replacement d still a learner, a must wait for
        // d's promotion (healthy voters c alone are no majority of c, b, d).
        let e = may_remove_member(&m(&[("a", V, true), ("b", V, false), ("c", V, true), ("d", L, true)]), "a").unwrap_err();
        assert!(e.contains("1 learner(s) not yet promoted"), "{e}");
        assert!(may_remove_member(&m(&[("a", V, true), ("b", V, false), ("c", V, true), ("d", V, true)]), "a").is_ok());
        // A roll: after a first voter left, a second one waits while two replacements are learners.
        assert!(may_remove_member(&m(&[("a", V, true), ("b", V, true), ("c", V, true), ("d", L, true)]), "a").is_ok());
        assert!(may_remove_member(&m(&[("b", V, true), ("c", V, true), ("d", L, true), ("e", L, true)]), "b").is_err());
        // The member this server is known by carries k3s's suffix; a bare name works too.
        let bare = vec![Member { name: "a".into(), client_urls: vec![], learner: false, healthy: true }];
        assert!(may_remove_member(&bare, "a").is_ok());
    }
}
