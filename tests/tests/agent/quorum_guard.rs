//! The quorum guard: a leaving server whose etcd member's removal would cost the control
//! plane its quorum waits for a replacement to become a Ready member (for its own bound, or
//! behind a lifecycle hook for as long as the hook allows), and without one leaves with its
//! member kept.

use super::common::cluster;
use super::recovery::{join_each, until, world};
use k3s_asg_testbed::check::{ok, state};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_guard_keeps_the_member_until_a_replacement_is_healthy() {
    let (mut w, cp, _tg) = cluster().await;
    let b = w.joined("alpha", "control-plane").await.unwrap();
    let c = w.joined("alpha", "control-plane").await.unwrap();
    // b is already down (two of three terminating at once): c must not remove its member.
    let members = w.dir.path().join("cp-nodes");
    std::fs::write(&members, format!("{} True\n{} False\n{} True\n", cp.id, b.id, c.id)).unwrap();
    w.agent_env.insert("K3S_STUB_CP_NODES".into(), members.display().to_string());
    w.agent_env.insert("K3S_ASG_QUORUM_TIMEOUT".into(), "1".into());
    c.clear_stub_calls();
    let run = w.agent(&c, &["leave"]).await.unwrap();
    ok(&run);
    assert!(run.stderr.contains("would leave 1 healthy of 2"), "{}", run.stderr);
    assert!(!c.stub_calls().iter().any(|l| l.contains("delete node/")), "member kept");
    assert!(c.stub_calls().iter().any(|l| l.contains("systemctl\tstop k3s")));

    // Same situation, but a replacement becomes healthy while it waits: then it goes.
    let d = w.joined("alpha", "control-plane").await.unwrap();
    std::fs::write(&members, format!("{} True\n{} False\n{} True\n", cp.id, b.id, d.id)).unwrap();
    w.agent_env.insert("K3S_ASG_QUORUM_TIMEOUT".into(), "30".into());
    d.clear_stub_calls();
    let agent = w.spawn_agent(&d, &["leave"]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !d.stub_calls().iter().any(|l| l.contains("get nodes -l")) {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(&members, format!("{} True\n{} False\n{} True\ni-0replacement0000 True\n", cp.id, b.id, d.id)).unwrap();
    ok(&agent.wait(Duration::from_secs(30)).await.unwrap());
    assert!(d.stub_calls().iter().any(|l| l.contains(&format!("delete node/{}", d.id))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_guard_holds_past_the_fixed_bound_while_the_hook_allows() {
    let mut w = world(false).await;
    let s = w.servers("alpha", 3).await.unwrap();
    join_each(&w, &s).await;
    let (a, b, c) = (&s[0], &s[1], &s[2]);
    // b is down: c may not remove its member until a replacement is Ready.
    let members = w.dir.path().join("cp-nodes");
    std::fs::write(&members, format!("{} True\n{} False\n{} True\n", a.id, b.id, c.id)).unwrap();
    w.agent_env.insert("K3S_STUB_CP_NODES".into(), members.display().to_string());
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
    assert!(status.stdout.contains("waiting:") && status.stdout.contains("Ready replacement"), "{}", status.stdout);
    // A replacement becomes a Ready member: it goes.
    std::fs::write(&members, format!("{} True\n{} False\n{} True\ni-0replacement0000 True\n", a.id, b.id, c.id)).unwrap();
    ok(&leaving.wait(Duration::from_secs(60)).await.unwrap());
    assert!(c.stub_calls().iter().any(|l| l.contains(&format!("delete node/{}", c.id))));
    let actions = w.asg.actions();
    assert!(actions.iter().any(|(a, id, _, r)| a == "CompleteLifecycleAction" && id == &c.id && r == "CONTINUE"), "{actions:?}");
    assert!(state(c).waiting_for.is_none());
}
