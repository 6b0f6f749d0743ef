//! Leave under adversity (issue 12, in part): IMDS refusing the agent's token, a notice
//! that arrives while the agent is still joining, and `join` in a warm pool.

use k3s_asg_agent::state::{Phase, Trigger};
use k3s_asg_testbed::check::{ok, state, until, wait_for_phase};
use k3s_asg_testbed::world::World;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_imds_token_is_dropped_and_the_notice_still_seen() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    let tg = w.clusters["alpha"].target_group_arn.clone();
    let cp = w.launch("alpha", "control-plane").await.unwrap();
    ok(&w.agent(&cp, &["join"]).await.unwrap());
    let node = w.launch("alpha", "node").await.unwrap();
    let agent = w.spawn_agent(&node, &["run"]).unwrap();
    wait_for_phase(&node, Phase::Ready).await;
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
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    let tg = w.clusters["alpha"].target_group_arn.clone();
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
async fn join_refuses_in_a_warm_pool() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    let cp = w.launch("alpha", "control-plane").await.unwrap();
    cp.imds.set("autoscaling/target-lifecycle-state", Some("Warmed:Stopped"));
    let run = w.agent(&cp, &["join"]).await.unwrap();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("warm pool"), "{}", run.stderr);
    assert!(cp.file("/etc/rancher/k3s/config.yaml").is_none() && cp.stub_calls().is_empty(), "nothing configured or started");
    assert!(w.param("/k3s-asg/clusters/alpha/token").await.unwrap().is_none(), "no election held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_spec_does_not_stop_a_leave_from_what_was_recorded() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    let tg = w.clusters["alpha"].target_group_arn.clone();
    let a = w.launch("alpha", "control-plane").await.unwrap();
    ok(&w.agent(&a, &["join"]).await.unwrap());
    let b = w.launch("alpha", "control-plane").await.unwrap();
    ok(&w.agent(&b, &["join"]).await.unwrap());
    let node = w.launch("alpha", "node").await.unwrap();
    ok(&w.agent(&node, &["join"]).await.unwrap());
    // A typo in the spec, then the ASG terminates the node and a server.
    w.put_spec("alpha", r#"{"api": {"hostnme": "oops"}}"#).await.unwrap();
    for inst in [&node, &b] {
        let run = w.agent(inst, &["leave"]).await.unwrap();
        ok(&run);
        assert!(run.stderr.contains("leaving from what the state file recorded"), "{}", run.stderr);
        assert!(!w.members(&tg).await.unwrap().contains(&inst.id), "{}: out of its target group", inst.id);
        assert!(inst.stub_calls().iter().any(|l| l.contains(&format!("delete node/{}", inst.id))));
        let st = state(inst);
        assert_eq!(st.phase, Phase::Left);
        assert!(st.last_error.is_some_and(|e| e.contains("left from what the state file recorded")));
    }
    let records: Vec<String> = w.api_records("alpha").await.unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(records, vec![a.id.clone()], "the leaving server's API record is gone");
    k3s_asg_testbed::reliability::held(
        "Adversity",
        "the cluster spec has a typo when a node and a server leave",
        1,
        "each deregisters and the server removes its API record from what its state file recorded",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_notice_budgets_every_wait_to_finish_before_the_reclaim() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    let tg = w.clusters["alpha"].target_group_arn.clone();
    let cp = w.launch("alpha", "control-plane").await.unwrap();
    ok(&w.agent(&cp, &["join"]).await.unwrap());
    // A drain that would run far past a two-minute notice (the spec allows 60 s here, the
    // workload wants 120 s); the reclaim comes 30 s after the notice.
    w.agent_env.insert("K3S_STUB_DRAIN_SECONDS".into(), "120".into());
    let node = w.launch("alpha", "node").await.unwrap();
    let agent = w.spawn_agent(&node, &["run"]).unwrap();
    wait_for_phase(&node, Phase::Ready).await;
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
