//! End-to-end: `leave` and `run` — ordered exit on every kind of termination,
//! asserted from one timeline of AWS calls and stub systemctl/k3s calls.

use k3s_asg_agent::state::{Phase, Trigger};
use k3s_asg_testbed::check::{ok, state, wait_for_phase};
use k3s_asg_testbed::world::{Instance, World};
use std::time::Duration;

/// One timeline: `(ms, what)` for the instance's AWS calls and stub calls.
fn timeline(w: &World, inst: &Instance) -> Vec<(u128, String)> {
    let mut t: Vec<(u128, String)> = w.recorder.calls_by(&inst.access_key()).into_iter().map(|c| (c.at_ms, format!("aws {}", c.operation))).collect();
    for line in inst.stub_calls() {
        let mut parts = line.splitn(3, '\t');
        let ms: u128 = parts.next().unwrap().parse().unwrap();
        t.push((ms, format!("{} {}", parts.next().unwrap(), parts.next().unwrap_or(""))));
    }
    t.sort_by_key(|(ms, _)| *ms);
    t
}

fn at(t: &[(u128, String)], needle: &str) -> u128 {
    t.iter().find(|(_, w)| w.contains(needle)).map(|(ms, _)| *ms).unwrap_or_else(|| panic!("{needle:?} not in timeline {t:#?}"))
}

fn assert_order(t: &[(u128, String)], steps: &[&str]) {
    for pair in steps.windows(2) {
        assert!(at(t, pair[0]) <= at(t, pair[1]), "{} must come before {}: {t:#?}", pair[0], pair[1]);
    }
}

async fn set_delay(w: &World, tg: &str, seconds: u32) {
    w.elb
        .modify_target_group_attributes()
        .target_group_arn(tg)
        .attributes(
            aws_sdk_elasticloadbalancingv2::types::TargetGroupAttribute::builder()
                .key("deregistration_delay.timeout_seconds")
                .value(seconds.to_string())
                .build(),
        )
        .send()
        .await
        .unwrap();
}

async fn cluster() -> (World, Instance, String) {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    let tg = w.clusters["alpha"].target_group_arn.clone();
    set_delay(&w, &tg, 2).await;
    let cp = w.launch("alpha", "control-plane").await.unwrap();
    ok(&w.agent(&cp, &["join"]).await.unwrap());
    (w, cp, tg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_leaves_in_order_and_completes_the_lifecycle_action() {
    let (mut w, cp, tg) = cluster().await;
    let node = w.launch("alpha", "node").await.unwrap();
    ok(&w.agent(&node, &["join"]).await.unwrap());
    w.asg.add(&node.id, "alpha-nodes", "Terminating:Wait", 3);
    w.agent_env.insert("K3S_STUB_DRAIN_SECONDS".into(), "2.5".into());
    w.recorder.clear();
    node.clear_stub_calls();
    let run = w.agent(&node, &["leave"]).await.unwrap();
    ok(&run);

    let t = timeline(&w, &node);
    assert_order(
        &t,
        &["aws DeregisterTargets", "k3s kubectl --kubeconfig", "drain", "delete node/", "systemctl stop k3s-agent", "aws CompleteLifecycleAction"],
    );
    assert!(t.iter().any(|(_, w)| w.contains(&format!("drain {} --ignore-daemonsets", node.id))
        && w.contains("--timeout=60s")
        && w.contains("--grace-period=30")));
    let actions = w.asg.actions();
    assert!(actions.iter().any(|a| a.0 == "RecordLifecycleActionHeartbeat" && a.1 == node.id), "heartbeats while draining: {actions:?}");
    assert_eq!(actions.last().unwrap(), &("CompleteLifecycleAction".into(), node.id.clone(), "drain".into(), "CONTINUE".into()));
    assert_eq!(w.members(&tg).await.unwrap(), vec![cp.id.clone()], "node deregistered, server untouched");
    assert!(!node.path("/run/k3s-stub/active-k3s-agent").exists(), "k3s stopped");
    let status = w.agent(&node, &["status", "--json"]).await.unwrap();
    let st: k3s_asg_agent::state::State = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!((st.phase, st.trigger), (Phase::Left, Some(Trigger::Command)));

    // Leave is idempotent: again, it changes nothing.
    w.recorder.clear();
    ok(&w.agent(&node, &["leave"]).await.unwrap());
    let mutating: Vec<_> = w.recorder.calls().into_iter().filter(|c| c.is_mutating()).collect();
    assert!(mutating.is_empty(), "second leave mutated: {mutating:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_removes_its_api_record_before_draining() {
    let (w, cp, tg) = cluster().await;
    let cp2 = w.launch("alpha", "control-plane").await.unwrap();
    ok(&w.agent(&cp2, &["join"]).await.unwrap());
    w.recorder.clear();
    cp2.clear_stub_calls();
    ok(&w.agent(&cp2, &["leave"]).await.unwrap());
    let t = timeline(&w, &cp2);
    assert_order(&t, &["aws DeregisterTargets", "aws ChangeResourceRecordSets", "kubectl drain", "delete node/", "systemctl stop k3s"]);
    assert!(!t.iter().any(|(_, w)| w.contains("--kubeconfig")), "a server drains with its own admin access");
    let ids: Vec<String> = w.api_records("alpha").await.unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![cp.id.clone()]);
    assert_eq!(w.members(&tg).await.unwrap(), vec![cp.id.clone()]);
    assert!(!t.iter().any(|(_, w)| w.contains("CompleteLifecycleAction")), "no hook waiting: nothing to complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_on_a_node_that_never_joined_does_nothing_harmful() {
    let (w, cp, tg) = cluster().await;
    let node = w.launch("alpha", "node").await.unwrap();
    w.recorder.clear();
    ok(&w.agent(&node, &["leave"]).await.unwrap());
    let mutating: Vec<_> = w.recorder.calls().into_iter().filter(|c| c.is_mutating()).collect();
    assert!(mutating.is_empty(), "{mutating:?}");
    assert!(node.stub_calls().iter().all(|l| l.contains("is-active")), "{:?}", node.stub_calls());
    assert_eq!(w.members(&tg).await.unwrap(), vec![cp.id.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_is_not_a_termination_but_sigterm_of_a_stopping_instance_is() {
    let (w, cp, tg) = cluster().await;
    let node = w.launch("alpha", "node").await.unwrap();
    let agent = w.spawn_agent(&node, &["run"]).unwrap();
    wait_for_phase(&node, Phase::Ready).await;
    assert!(w.members(&tg).await.unwrap().contains(&node.id));
    // `systemctl restart k3s-asg-agent` (an upgrade), a reboot: AWS says nothing.
    w.recorder.clear();
    agent.sigterm();
    let run = agent.wait(Duration::from_secs(30)).await.unwrap();
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
    agent.sigterm();
    let run = agent.wait(Duration::from_secs(30)).await.unwrap();
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
        let agent = w.spawn_agent(&node, &["run"]).unwrap();
        wait_for_phase(&node, Phase::Ready).await;
        node.imds.set(path, Some(value));
        let run = agent.wait(Duration::from_secs(30)).await.unwrap();
        ok(&run);
        assert_eq!(state(&node).trigger, Some(trigger.clone()));
        assert_eq!(w.members(&tg).await.unwrap(), vec![cp.id.clone()], "{trigger:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_pool_instance_joins_only_when_in_service() {
    let (w, _cp, tg) = cluster().await;
    let node = w.launch("alpha", "node").await.unwrap();
    node.imds.set("autoscaling/target-lifecycle-state", Some("Warmed:Running"));
    let agent = w.spawn_agent(&node, &["run"]).unwrap();
    // Poll the condition that must stay false while warmed: nothing configured, nothing registered.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(node.file("/etc/rancher/k3s/config.yaml").is_none(), "joined while warmed");
    }
    assert!(!w.members(&tg).await.unwrap().contains(&node.id));
    node.imds.set("autoscaling/target-lifecycle-state", Some("InService"));
    wait_for_phase(&node, Phase::Ready).await;
    assert!(w.members(&tg).await.unwrap().contains(&node.id));
    agent.sigterm();
    ok(&agent.wait(Duration::from_secs(30)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_leave_the_next_run_finishes_the_job() {
    let (mut w, cp, tg) = cluster().await;
    let node = w.launch("alpha", "node").await.unwrap();
    ok(&w.agent(&node, &["join"]).await.unwrap());
    w.agent_env.insert("K3S_STUB_DRAIN_SECONDS".into(), "30".into());
    let agent = w.spawn_agent(&node, &["leave"]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !node.stub_calls().iter().any(|l| l.contains(" drain ")) {
        assert!(std::time::Instant::now() < deadline, "never reached drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(agent); // kill_on_drop: SIGKILL mid-drain
    w.agent_env.insert("K3S_STUB_DRAIN_SECONDS".into(), "0".into());
    let run = w.agent(&node, &["run"]).await.unwrap();
    ok(&run);
    assert!(run.stderr.contains("previous leave did not finish"), "{}", run.stderr);
    assert_eq!(w.members(&tg).await.unwrap(), vec![cp.id.clone()]);
    assert!(!node.path("/run/k3s-stub/active-k3s-agent").exists());
    assert!(node.stub_calls().iter().any(|l| l.contains("delete node/")));
    k3s_asg_testbed::reliability::held(
        "Crashes",
        "kill -9 in the middle of a 30 s drain, then `run`",
        1,
        "run finishes the leave: deregistered, Node deleted, k3s stopped",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_guard_keeps_the_member_until_a_replacement_is_healthy() {
    let (mut w, cp, _tg) = cluster().await;
    let b = w.launch("alpha", "control-plane").await.unwrap();
    ok(&w.agent(&b, &["join"]).await.unwrap());
    let c = w.launch("alpha", "control-plane").await.unwrap();
    ok(&w.agent(&c, &["join"]).await.unwrap());
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
    let d = w.launch("alpha", "control-plane").await.unwrap();
    ok(&w.agent(&d, &["join"]).await.unwrap());
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
async fn second_sigterm_skips_waits_but_still_cleans_up() {
    let (mut w, cp, tg) = cluster().await;
    // A drain that would take far longer than anyone wants to wait.
    w.agent_env.insert("K3S_STUB_DRAIN_SECONDS".into(), "120".into());
    let node = w.launch("alpha", "node").await.unwrap();
    let agent = w.spawn_agent(&node, &["run"]).unwrap();
    wait_for_phase(&node, Phase::Ready).await;
    w.ec2.stop_instances().instance_ids(&node.id).send().await.unwrap();
    agent.sigterm();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !node.stub_calls().iter().any(|l| l.contains(" drain ")) {
        assert!(std::time::Instant::now() < deadline, "never started draining");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.sigterm();
    let run = agent.wait(Duration::from_secs(60)).await.unwrap();
    ok(&run);
    assert!(run.stderr.contains("second SIGTERM"), "{}", run.stderr);
    let t = timeline(&w, &node);
    assert_order(&t, &["aws DeregisterTargets", " drain ", "delete node/", "systemctl stop k3s-agent"]);
    assert_eq!(w.members(&tg).await.unwrap(), vec![cp.id.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_recommendation_is_ignored_unless_configured() {
    let (mut w, _cp, tg) = cluster().await;
    let rebalance = r#"{"noticeTime": "2026-11-24T18:00:00Z"}"#;
    // Default: ignore. The agent keeps serving through several poll rounds.
    let node = w.launch("alpha", "node").await.unwrap();
    let agent = w.spawn_agent(&node, &["run"]).unwrap();
    wait_for_phase(&node, Phase::Ready).await;
    node.imds.set("events/recommendations/rebalance", Some(rebalance));
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(w.members(&tg).await.unwrap().contains(&node.id), "left on a rebalance recommendation by default");
    }
    agent.sigterm();
    ok(&agent.wait(Duration::from_secs(30)).await.unwrap());

    // --on-rebalance leave: it leaves.
    w.agent_env.insert("K3S_ASG_ON_REBALANCE".into(), "leave".into());
    let node = w.launch("alpha", "node").await.unwrap();
    let agent = w.spawn_agent(&node, &["run"]).unwrap();
    wait_for_phase(&node, Phase::Ready).await;
    node.imds.set("events/recommendations/rebalance", Some(rebalance));
    let run = agent.wait(Duration::from_secs(30)).await.unwrap();
    ok(&run);
    assert_eq!(state(&node).trigger, Some(Trigger::Rebalance));
    assert!(!w.members(&tg).await.unwrap().contains(&node.id));
}
