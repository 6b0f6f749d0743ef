//! Healing from a lost majority (issue 24): when a cluster's etcd has lost most of its voters
//! for good, no server can join it (etcd adds no member without a leader) and nothing else
//! ever recovers it, since the survivors still answer on the supervisor port. k3s's own answer
//! is `k3s server --cluster-reset` on a survivor: a one-member cluster that keeps that
//! survivor's data, token and CA (k3s docs, "Cluster Reset"; k3s-io/k3s `pkg/etcd/etcd.go`
//! `Reset`). Here a server in `run` does it, once:
//!
//! - only when no voter sees a leader and fewer voters answer than a quorum;
//! - only when EC2 says every voter that does not answer is gone (terminated, or unknown to
//!   it): never while one might come back (pending, stopped, running), and only after the
//!   grace (`--recovery-grace`) has passed with them gone;
//! - only on the survivor with the newest data (the highest raft index; ties to the lowest
//!   name): every survivor sees the same statuses (without a leader nothing commits), so
//!   exactly one resets. The others back up and wipe their datastore and join it.
//!
//! [`decide`] is pure; [`round`] observes and performs.

use crate::effects::etcd::{Member, Status};
use crate::effects::Effects;
use crate::error::{Error, Result};
use crate::state::State;
use crate::wait::Waiter;
use k3s_asg_aws::tags::Role;
use std::time::{Duration, Instant};

/// What a heal decision needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// etcd's members as this server's member lists them.
    pub members: Vec<Member>,
    /// The voters that answer, by node, with their own status (this server's included).
    pub answering: Vec<(String, Status)>,
    /// The voters that do not answer, by node, with EC2's state (`None`: EC2 does not know it).
    pub missing: Vec<(String, Option<String>)>,
    /// How long every missing voter has been gone (zero while one is not).
    pub gone_for: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A quorum holds, or this server holds no vote: nothing to heal.
    Healthy,
    /// The majority is lost, but it is not time to act; why.
    Wait(String),
    /// This server holds the newest data of the survivors: reset to a one-member cluster. The
    /// lost voters, by node.
    Reset { lost: Vec<String> },
    /// Another survivor (by node) resets; join it once it has.
    Follow { winner: String },
}

/// Whether EC2's answer says the instance is gone for good.
fn gone(state: &Option<String>) -> bool {
    state.as_deref().is_none_or(|s| s == "terminated")
}

pub fn decide(o: &Observed, me: &str, grace: Duration) -> Decision {
    let voters: Vec<&Member> = o.members.iter().filter(|m| !m.learner).collect();
    if !voters.iter().any(|m| m.node() == me) || o.answering.iter().any(|(_, s)| s.has_leader) {
        return Decision::Healthy;
    }
    let quorum = voters.len() / 2 + 1;
    let survivors: Vec<&(String, Status)> = o.answering.iter().filter(|(_, s)| !s.learner).collect();
    if survivors.len() >= quorum {
        return Decision::Wait(format!("{} of {} voters answer but none sees a leader yet (an etcd election)", survivors.len(), voters.len()));
    }
    if !survivors.iter().any(|(n, _)| n == me) {
        return Decision::Wait("this server's own etcd member does not answer".into());
    }
    let may_return: Vec<String> =
        o.missing.iter().filter(|(_, state)| !gone(state)).map(|(n, state)| format!("{n} ({})", state.as_deref().unwrap_or("?"))).collect();
    if !may_return.is_empty() {
        return Decision::Wait(format!(
            "etcd lost its majority ({} of {} voters answer); waiting for the others, which EC2 says may come back: {}",
            survivors.len(),
            voters.len(),
            may_return.join(", ")
        ));
    }
    let lost: Vec<String> = o.missing.iter().map(|(n, _)| n.clone()).collect();
    if o.gone_for < grace {
        return Decision::Wait(format!(
            "etcd lost its majority for good ({} gone); healing once they have been gone for {} s ({} s so far)",
            lost.join(", "),
            grace.as_secs(),
            o.gone_for.as_secs()
        ));
    }
    // The newest data wins; ties go to the lowest name.
    let winner = survivors.iter().max_by(|a, b| a.1.raft_index.cmp(&b.1.raft_index).then_with(|| b.0.cmp(&a.0))).expect("this server survives");
    if winner.0 == me {
        Decision::Reset { lost }
    } else {
        Decision::Follow { winner: winner.0.clone() }
    }
}

/// What a round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// etcd has a quorum (or does not answer, or this server holds no vote).
    Healthy,
    /// The majority is lost; it waits (`status` says for what).
    Waiting,
    /// This server reset etcd to a one-member cluster.
    Reset,
    /// Another survivor healed the cluster and this server's datastore was reset: the agent
    /// must join again.
    Rejoin,
}

/// One look, from `run` on a server: observes etcd and EC2, then waits, resets or follows.
/// `gone_since` carries, across rounds, since when every missing voter has been gone.
pub async fn round(fx: &Effects, me: &str, grace: Duration, limit: Duration, gone_since: &mut Option<Instant>) -> Result<Outcome> {
    let Some(members) = crate::nodes::etcd_members(fx).await? else {
        *gone_since = None;
        return Ok(Outcome::Healthy);
    };
    // A healthy voter has a leader: nothing more to look at.
    if members.iter().any(|m| !m.learner && m.healthy) {
        *gone_since = None;
        clear_wait(fx)?;
        return Ok(Outcome::Healthy);
    }
    let mut answering = Vec::new();
    let mut missing_nodes = Vec::new();
    for m in members.iter().filter(|m| !m.learner) {
        let status = match m.client_urls.first() {
            Some(url) => fx.etcd.status(url).await?,
            None => None,
        };
        match status {
            Some(s) => answering.push((m.node().to_string(), s)),
            None => missing_nodes.push(m.node().to_string()),
        }
    }
    let ids: Vec<String> = missing_nodes.iter().filter(|n| k3s_asg_aws::names::is_instance_id(n)).cloned().collect();
    let known = if ids.is_empty() { vec![] } else { fx.instances.describe(&ids).await? };
    let missing: Vec<(String, Option<String>)> =
        missing_nodes.into_iter().map(|n| (n.clone(), known.iter().find(|i| i.id == n).map(|i| i.state.clone()))).collect();
    if !missing.is_empty() && missing.iter().all(|(_, s)| gone(s)) {
        gone_since.get_or_insert_with(Instant::now);
    } else {
        *gone_since = None;
    }
    let observed = Observed { members, answering, missing, gone_for: gone_since.map(|t| t.elapsed()).unwrap_or_default() };
    match decide(&observed, me, grace) {
        Decision::Healthy => clear_wait(fx).map(|()| Outcome::Healthy),
        Decision::Wait(why) => {
            tracing::warn!(waiting = %why, "the control plane has no etcd quorum");
            set_wait(fx, Some(why)).map(|()| Outcome::Waiting)
        }
        Decision::Reset { lost } => reset(fx, me, &lost, limit).await.map(|()| Outcome::Reset),
        Decision::Follow { winner } => follow(fx, &observed, &winner).await.map(|rejoin| if rejoin { Outcome::Rejoin } else { Outcome::Waiting }),
    }
}

fn set_wait(fx: &Effects, why: Option<String>) -> Result<()> {
    if let Some(mut st) = State::load(&fx.fs)? {
        if st.waiting_for != why {
            st.waiting_for = why;
            st.save(&fx.fs)?;
        }
    }
    Ok(())
}

fn clear_wait(fx: &Effects) -> Result<()> {
    match State::load(&fx.fs)? {
        Some(st) if st.waiting_for.as_deref().is_some_and(|w| w.contains("etcd lost its majority") || w.contains("etcd election")) => {
            set_wait(fx, None)
        }
        _ => Ok(()),
    }
}

/// The winner: stops k3s, `k3s server --cluster-reset` (its own data, token and CA), starts it
/// again as a one-member cluster, and forgets the lost servers' Nodes.
async fn reset(fx: &Effects, me: &str, lost: &[String], limit: Duration) -> Result<()> {
    let unit = crate::render::unit_name(Role::ControlPlane);
    tracing::warn!(lost = ?lost, "etcd lost its majority for good: this server holds the newest data; resetting its member to a one-member cluster (k3s server --cluster-reset)");
    set_wait(fx, Some("resetting etcd to a one-member cluster (k3s server --cluster-reset)".into()))?;
    fx.services.stop(unit).await?;
    fx.k3s.cluster_reset(limit).await?;
    fx.services.start(unit).await?;
    let mut w = Waiter::new("k3s to start after the cluster reset", limit);
    while !fx.services.is_active(unit).await? {
        if fx.services.is_failed(unit).await? {
            return Err(Error::failed(
                "start k3s after the cluster reset",
                unit,
                format!("systemd reports unit {unit} failed (see journalctl -u {unit})"),
            ));
        }
        w.pending("k3s is starting").await.map_err(|why| Error::failed("start k3s after the cluster reset", unit, why))?;
    }
    crate::nodes::forget_lost_servers(fx, me).await?;
    let outcome = format!(
        "healed a lost etcd majority: reset this server's member to a one-member cluster with its own data, token and CA (lost: {})",
        lost.join(", ")
    );
    tracing::warn!(lost = ?lost, "{outcome}");
    if let Some(mut st) = State::load(&fx.fs)? {
        st.waiting_for = None;
        st.recovery = Some(crate::state::Recovery { epoch: 0, snapshot: None, restored: false, done: true, outcome });
        st.save(&fx.fs)?;
    }
    Ok(())
}

/// Another survivor resets. Once its etcd has a leader again, this one backs up and resets its
/// datastore (`true`: the agent joins the healed cluster again, as a new member).
async fn follow(fx: &Effects, o: &Observed, winner: &str) -> Result<bool> {
    let Some(url) = o.members.iter().find(|m| m.node() == winner).and_then(|m| m.client_urls.first()) else {
        set_wait(fx, Some(format!("{winner} holds the newest data and resets; its etcd address is unknown")))?;
        return Ok(false);
    };
    let healed = fx.etcd.status(url).await?.is_some_and(|s| s.has_leader);
    if !healed {
        set_wait(fx, Some(format!("{winner} holds the newest data and resets etcd to a one-member cluster; joining it once it has")))?;
        return Ok(false);
    }
    let unit = crate::render::unit_name(Role::ControlPlane);
    fx.services.stop(unit).await?;
    crate::datastore::back_up_and_reset(fx, "another survivor healed the lost etcd majority: this server joins it as a new member")?;
    fx.fs.remove_file(crate::render::CONFIG_PATH)?;
    if let Some(mut st) = State::load(&fx.fs)? {
        st.mode = Some(crate::vocab::Mode::Join);
        st.server_url = None;
        st.waiting_for = None;
        st.save(&fx.fs)?;
    }
    tracing::warn!(winner, "another survivor healed the lost etcd majority; this server's datastore is backed up and reset, and it joins again");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(node: &str, learner: bool) -> Member {
        Member { name: format!("{node}-0000000a"), client_urls: vec![format!("https://{node}:2379")], learner, healthy: false }
    }

    fn status(raft_index: u64) -> Status {
        Status { raft_index, has_leader: false, learner: false }
    }

    /// a survives; b and c are lost, gone for `gone_for`, in EC2 states `states`.
    fn lost_two(states: [Option<&str>; 2], gone_for: u64) -> Observed {
        Observed {
            members: vec![member("a", false), member("b", false), member("c", false)],
            answering: vec![("a".into(), status(10))],
            missing: vec![("b".into(), states[0].map(str::to_string)), ("c".into(), states[1].map(str::to_string))],
            gone_for: Duration::from_secs(gone_for),
        }
    }

    const GRACE: Duration = Duration::from_secs(60);

    #[test]
    fn a_lone_survivor_resets_once_the_others_are_gone_for_the_grace() {
        assert_eq!(decide(&lost_two([Some("terminated"), None], 61), "a", GRACE), Decision::Reset { lost: vec!["b".into(), "c".into()] });
        let Decision::Wait(why) = decide(&lost_two([Some("terminated"), None], 10), "a", GRACE) else { panic!() };
        assert!(why.contains("60 s (10 s so far)"), "{why}");
    }

    #[test]
    fn never_while_a_lost_voter_may_come_back() {
        for state in ["stopped", "pending", "running", "stopping", "shutting-down"] {
            let Decision::Wait(why) = decide(&lost_two([Some("terminated"), Some(state)], 600), "a", GRACE) else { panic!("{state}") };
            assert!(why.contains(&format!("c ({state})")), "{why}");
        }
    }

    #[test]
    fn a_quorum_or_a_leader_is_healthy_and_learners_do_not_heal() {
        let mut o = lost_two([None, None], 600);
        o.answering[0].1.has_leader = true;
        assert_eq!(decide(&o, "a", GRACE), Decision::Healthy);
        let mut o = lost_two([None, None], 600);
        o.answering.push(("b".into(), status(10)));
        o.missing.remove(0);
        assert!(matches!(decide(&o, "a", GRACE), Decision::Wait(w) if w.contains("etcd election")));
        let mut o = lost_two([None, None], 600);
        o.members[0].learner = true;
        assert_eq!(decide(&o, "a", GRACE), Decision::Healthy, "a learner holds no vote");
    }

    #[test]
    fn the_newest_data_wins_and_the_others_follow() {
        // Five voters, three lost: a (index 7) and b (index 9) survive; b resets, a follows.
        let o = Observed {
            members: ["a", "b", "c", "d", "e"].iter().map(|n| member(n, false)).collect(),
            answering: vec![("a".into(), status(7)), ("b".into(), status(9))],
            missing: vec![("c".into(), None), ("d".into(), None), ("e".into(), Some("terminated".into()))],
            gone_for: Duration::from_secs(600),
        };
        assert_eq!(decide(&o, "b", GRACE), Decision::Reset { lost: vec!["c".into(), "d".into(), "e".into()] });
        assert_eq!(decide(&o, "a", GRACE), Decision::Follow { winner: "b".into() });
        // A tie goes to the lowest name, the same on both.
        let mut tie = o.clone();
        tie.answering[1].1.raft_index = 7;
        assert_eq!(decide(&tie, "a", GRACE), Decision::Reset { lost: vec!["c".into(), "d".into(), "e".into()] });
        assert_eq!(decide(&tie, "b", GRACE), Decision::Follow { winner: "a".into() });
    }
}
