//! What `run` takes for the end of its instance: SIGTERM while the instance is stopping (a
//! restart is not one), the lifecycle state Terminated, a spot interruption, a rebalance
//! recommendation only when configured; and under adversity (issue 12): IMDS refusing the
//! agent's token, a notice that arrives while the agent is still joining, a spot notice's
//! deadline that every wait must fit in.

use super::common::cluster;
use k3s_asg_agent::state::{Phase, Trigger};
use k3s_asg_testbed::check::{ok, state, until};
use k3s_asg_testbed::world::World;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_is_not_a_termination_but_sigterm_of_a_stopping_instance_is() {
    let (w, cp, tg) = cluster().await;
    let node = w.launch("alpha", "node").await.unwrap();
    let agent = w.run_until_ready(&node).await.unwrap();
    assert!(w.members(&tg).await.unwrap().contains(&node.id));
    // `systemctl restart k3s-asg-agent` (an upgrade), a reboot: AWS says nothing.
    w.recorder.clear();
    let run = agent.stop(Duration::from_secs(30)).await.unwrap();
    ok(&run);
    assert!(run.stderr.contains("leaving k3s running"), "{}", run.stderr);
    assert!(w.members(&tg).await.unwrap().contains(&node.id), "still serving");
    assert!(node.path("/run/k3s-stub/active-k3s-agent").exists(), "k3s left running");
    assert!(!node.stub_calls().iter().any(|l| l.contains(" drain ") || l.contains("delete node/")));
    let writes: Vec<String> = w.recorder.calls_by(&node.access_key()).into_iter().filter(|c| c.is_mutating()).map(|c| c.operation).collect();
    assert!(writes.is_empty(), "a restart wrote {writes:?}");
    assert_eq!(state(&node).phase, Phase::Ready);
    // The agent comes back and finds everything in place (its join registers again: its
    // SIGTERM handler is in place from then on).
    let spawned = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let agent = w.spawn_agent(&node, &["run"]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !node.file(k3s_asg_agent::state::STATE_PATH).and_then(|t| serde_json::from_str::<k3s_asg_agent::state::State>(&t).ok()).is_some_and(|s| {
        s.phase == Phase::Ready && s.steps.iter().any(|st| st.name == k3s_asg_agent::state::StepName::Registered && st.at_ms > spawned)
    }) {
        assert!(std::time::Instant::now() < deadline, "the restarted agent did not join");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Now the instance is being stopped: SIGTERM means leave.
    w.ec2.stop_instances().instance_ids(&node.id).send().await.unwrap();
    let run = agent.stop(Duration::from_secs(30)).await.unwrap();
    ok(&run);
    assert_eq!(state(&node).trigger, Some(Trigger::Sigterm));
    assert_eq!(w.members(&tg).await.unwrap(), vec![cp.id.clone()]);
    assert!(node.stub_calls().iter().any(|l| l.contains("systemctl\tstop k3s-agent")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_leaves_on_lifecycle_and_spot_notices() {
    let (w, cp, tg) = cluster().await;
    let spot = r#"{"action": "terminate", "time": "2026-11-24T18:00:00Z"}"#;
    for (path, value, trigger) in [
        ("autoscaling/target-lifecycle-state", "Terminated", Trigger::LifecycleTerminated),
        ("spot/instance-action", spot, Trigger::SpotInterruption(spot.into())),
    ] {
        let node = w.launch("alpha", "node").await.unwrap();
        node.imds.set("autoscaling/target-lifecycle-state", Some("InService"));
        let agent = w.run_until_ready(&node).await.unwrap();
        node.imds.set(path, Some(value));
        let run = agent.wait(Duration::from_secs(30)).await.unwrap();
        ok(&run);
        assert_eq!(state(&node).trigger, Some(trigger.clone()));
        assert_eq!(w.members(&tg).await.unwrap(), vec![cp.id.clone()], "{trigger:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_recommendation_is_ignored_unless_configured() {
    let (mut w, _cp, tg) = cluster().await;
    let rebalance = r#"{"noticeTime": "2026-11-24T18:00:00Z"}"#;
    // Default: ignore. The agent keeps serving through several poll rounds.
    let node = w.launch("alpha", "node").await.unwrap();
    let agent = w.run_until_ready(&node).await.unwrap();
    node.imds.set("events/recommendations/rebalance", Some(rebalance));
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(w.members(&tg).await.unwrap().contains(&node.id), "left on a rebalance recommendation by default");
    }
    ok(&agent.stop(Duration::from_secs(30)).await.unwrap());

    // --on-rebalance leave: it leaves.
    w.agent_env.insert("K3S_ASG_ON_REBALANCE".into(), "leave".into());
    let node = w.launch("alpha", "node").await.unwrap();
    let agent = w.run_until_ready(&node).await.unwrap();
    node.imds.set("events/recommendations/rebalance", Some(rebalance));
    let run = agent.wait(Duration::from_secs(30)).await.unwrap();
    ok(&run);
    assert_eq!(state(&node).trigger, Some(Trigger::Rebalance));
    assert!(!w.members(&tg).await.unwrap().contains(&node.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_imds_token_is_dropped_and_the_notice_still_seen() {
    let w = World::with_cluster("alpha").await.unwrap();
    let tg = w.target_group("alpha");
    let _cp = w.joined("alpha", "control-plane").await.unwrap();
    let node = w.launch("alpha", "node").await.unwrap();
    let agent = w.run_until_ready(&node).await.unwrap();
    // IMDS restarts: every token it gave is refused from now on.
    node.imds.revoke_tokens();
    node.imds.set("autoscaling/target-lifecycle-state", Some("Terminated"));
    let run = agent.wait(Duration::from_secs(30)).await.unwrap();
    ok(&run);
    assert!(run.stderr.contains("fetching a new one"), "{}", run.stderr);
    assert_eq!(state(&node).trigger, Some(Trigger::LifecycleTerminated));
    assert!(!w.members(&tg).await.unwrap().contains(&node.id));
    k3s_asg_testbed::reliability::held(
        "Adversity",
        "IMDS refuses the agent's session token (401) before its TTL",
        1,
        "a new token is fetched; the Terminated notice is seen and the node leaves",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_while_joining_ends_the_join_and_completes_the_hook() {
    let w = World::with_cluster("alpha").await.unwrap();
    let tg = w.target_group("alpha");
    // No server yet: a node's join waits for the token.
    let node = w.launch("alpha", "node").await.unwrap();
    w.asg.add(&node.id, "alpha-node", "InService", 30);
    let agent = w.spawn_agent(&node, &["run"]).unwrap();
    until("the join to begin", Duration::from_secs(30), || w.recorder.calls_by(&node.access_key()).iter().any(|c| c.operation == "GetParameters"))
        .await;
    w.asg.set_state(&node.id, "Terminating:Wait");
    node.imds.set("autoscaling/target-lifecycle-state", Some("Terminated"));
    // Well within the join's own 60 s timeout here.
    let run = agent.wait(Duration::from_secs(30)).await.unwrap();
    ok(&run);
    assert!(run.stderr.contains("a notice arrived while joining"), "{}", run.stderr);
    assert!(w.members(&tg).await.unwrap().is_empty());
    assert!(w.asg.actions().iter().any(|(a, id, _, r)| a == "CompleteLifecycleAction" && id == &node.id && r == "CONTINUE"));
    k3s_asg_testbed::reliability::held(
        "Adversity",
        "a lifecycle Terminated notice while the node is still joining",
        1,
        "the join stops; the hook is completed at once, nothing registered",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_notice_budgets_every_wait_to_finish_before_the_reclaim() {
    let mut w = World::with_cluster("alpha").await.unwrap();
    let tg = w.target_group("alpha");
    let _cp = w.joined("alpha", "control-plane").await.unwrap();
    // A drain that would run far past a two-minute notice (the spec allows 60 s here, the
    // workload wants 120 s); the reclaim comes 30 s after the notice.
    w.agent_env.insert("K3S_STUB_DRAIN_SECONDS".into(), "120".into());
    let node = w.launch("alpha", "node").await.unwrap();
    let agent = w.run_until_ready(&node).await.unwrap();
    let reclaim = std::time::SystemTime::now() + Duration::from_secs(30);
    let at = aws_sdk_ec2::primitives::DateTime::from(reclaim).fmt(aws_sdk_ec2::primitives::DateTimeFormat::DateTime).unwrap();
    node.imds.set("spot/instance-action", Some(&format!(r#"{{"action": "terminate", "time": "{at}"}}"#)));
    let run = agent.wait(Duration::from_secs(60)).await.unwrap();
    ok(&run);
    let drain = node.stub_calls().into_iter().find(|l| l.contains(" drain ")).expect("drained");
    let timeout: u64 = drain.split("--timeout=").nth(1).and_then(|t| t.trim_end_matches('s').parse().ok()).expect("a drain timeout");
    assert!(timeout < 30, "the drain was budgeted from the reclaim time, not the spec's 60 s: {drain}");
    let reclaim_ms = reclaim.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let at_of = |needle: &str| node.stub_call_at(needle).unwrap_or(u128::MAX);
    assert!(at_of(&format!("delete node/{}", node.id)) < reclaim_ms, "the Node was deleted before the reclaim");
    assert!(at_of("systemctl\tstop k3s-agent") < reclaim_ms, "k3s stopped before the reclaim");
    assert!(!w.members(&tg).await.unwrap().contains(&node.id));
    k3s_asg_testbed::reliability::held(
        "Adversity",
        "a spot notice 30 s before the reclaim while the workload wants a 120 s drain",
        1,
        "the drain is cut to the budget; the Node is deleted and k3s stopped before the reclaim time",
    );
}
