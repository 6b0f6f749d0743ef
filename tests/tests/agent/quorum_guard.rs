//! The quorum guard, against real etcd members: a leaving server whose etcd member's removal
//! would cost the control plane its quorum waits for a replacement to become a voting member
//! or the lost member is removed (for its own bound, or behind a lifecycle hook for as long as
//! the hook allows), and without one leaves with its member kept. A replacement's Node is Ready before its member votes
//! (k3s joins members as learners and promotes them later): the guard waits for the vote.

use super::recovery::{join_each, keep_running, until, world};
use k3s_asg_testbed::check::{ok, state};
use k3s_asg_testbed::world::{Instance, World};
use std::time::Duration;

/// Cluster alpha with three servers joined, each a voting etcd member.
async fn three_voters() -> (World, Vec<Instance>) {
    let w = world(false).await;
    let s = w.servers("alpha", 3).await.unwrap();
    join_each(&w, &s).await;
    // k3s promotes a joined learner later, on its own (`manageLearners`): wait for the votes.
    until("three voters", || s[0].etcd_members().iter().filter(|(_, learner)| !learner).count() == 3).await;
    (w, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_guard_keeps_the_member_until_a_replacement_is_healthy() {
    let (mut w, s) = three_voters().await;
    let (a, b, c) = (&s[0], &s[1], &s[2]);
    // b dies (two of three terminating at once): c must not remove its member.
    b.kill_k3s().await;
    w.agent_env.insert("K3S_ASG_QUORUM_TIMEOUT".into(), "1".into());
    c.clear_stub_calls();
    let run = w.agent(c, &["leave"]).await.unwrap();
    ok(&run);
    assert!(run.stderr.contains("would leave 1 healthy of 2 voting etcd members"), "{}", run.stderr);
    assert!(!c.stub_calls().iter().any(|l| l.contains("delete node/")), "member kept");
    assert!(c.stub_calls().iter().any(|l| l.contains("systemctl\tstop k3s")));
    assert_eq!(a.etcd_members().len(), 3, "c's member is still one of the cluster's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_voter_waits_for_its_replacements_promotion_not_its_node() {
    let (mut w, s) = three_voters().await;
    let (a, b, c) = (&s[0], &s[1], &s[2]);
    // b's instance dies; a's agent collects its Node and member (etcd adds no member while a
    // voter is unreachable).
    w.terminate(b).await.unwrap();
    b.kill_k3s().await;
    let _running = keep_running(&w, a);
    until("b's member to be removed", || a.etcd_members().len() == 2).await;
    // The replacement joins as a learner that k3s promotes only later.
    let d = w.launch("alpha", "control-plane").await.unwrap();
    w.agent_env.insert("K3S_STUB_PROMOTE_AFTER".into(), "15".into());
    ok(&w.agent(&d, &["join"]).await.unwrap());
    w.agent_env.remove("K3S_STUB_PROMOTE_AFTER");
    assert!(a.nodes().contains(&(d.id.clone(), true)), "d's Node is Ready: {:?}", a.nodes());
    let members = a.etcd_members();
    assert!(members.iter().any(|(n, learner)| n.starts_with(&d.id) && *learner), "d is still a learner: {members:?}");
    w.agent_env.insert("K3S_ASG_QUORUM_TIMEOUT".into(), "60".into());
    c.clear_stub_calls();
    let leaving = w.spawn_agent(c, &["leave"]).unwrap();
    until("the guard to wait for the learner", || state(c).waiting_for.is_some_and(|wf| wf.contains("learner(s) not yet promoted"))).await;
    ok(&leaving.wait(Duration::from_secs(60)).await.unwrap());
    let promoted = d.etcd_log_at("promoted").expect("d was promoted");
    let deleted = c.stub_call_at(&format!("delete node/{}", c.id)).expect("c's member removed once d voted");
    assert!(deleted >= promoted, "c's member went at {deleted}, before d's promotion at {promoted}");
    let members = a.etcd_members();
    assert_eq!(members.len(), 2, "a and d: {members:?}");
    assert!(members.iter().all(|(n, learner)| !learner && !n.starts_with(&c.id)), "{members:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_guard_holds_past_the_fixed_bound_while_the_hook_allows() {
    let (mut w, s) = three_voters().await;
    let (a, b, c) = (&s[0], &s[1], &s[2]);
    // b is down: c may not remove its member until a replacement votes or b's member is gone.
    b.kill_k3s().await;
    w.agent_env.insert("K3S_ASG_QUORUM_TIMEOUT".into(), "1".into());
    w.asg.add(&c.id, "alpha-control-plane", "Terminating:Wait", 30);
    let leaving = w.spawn_agent(c, &["leave"]).unwrap();
    until("the quorum wait to show in status", || state(c).waiting_for.is_some_and(|wf| wf.contains("waiting up to"))).await;
    let waiting = state(c).waiting_for.unwrap();
    assert!(waiting.contains("1 healthy of 2"), "{waiting}");
    // Well past the old fixed bound (1 s here), it still holds the member and the hook.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!c.stub_calls().iter().any(|l| l.contains("delete node/")), "member kept while the hook allows");
    assert!(!w.asg.actions().iter().any(|(a, ..)| a == "CompleteLifecycleAction"));
    let status = w.agent(c, &["status"]).await.unwrap();
    assert!(status.stdout.contains("waiting:") && status.stdout.contains("voting replacement"), "{}", status.stdout);
    // b's instance is terminated, and a's agent removes its Node and member: with two voters
    // left, both healthy, c's removal keeps quorum (a alone), and it goes.
    w.terminate(b).await.unwrap();
    let _running = keep_running(&w, a);
    ok(&leaving.wait(Duration::from_secs(60)).await.unwrap());
    assert!(c.stub_calls().iter().any(|l| l.contains(&format!("delete node/{}", c.id))));
    let actions = w.asg.actions();
    assert!(actions.iter().any(|(a, id, _, r)| a == "CompleteLifecycleAction" && id == &c.id && r == "CONTINUE"), "{actions:?}");
    assert!(state(c).waiting_for.is_none());
}
