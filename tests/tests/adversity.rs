//! Leave under adversity (issue 12): IMDS refusing the agent's token, a notice
//! that arrives while the agent is still joining, `join` in a warm pool, a broken spec
//! at leave, a spot notice's deadline, Route53 records deleted by another writer, and
//! a coordinator plan over quota.

use k3s_asg_agent::state::{Phase, Trigger};
use k3s_asg_testbed::check::{in_phase, ok, state, until, wait_for_phase};
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

/// The names of the mutating calls, in order, with their HTTP status.
fn writes_of(w: &World, caller: &str) -> Vec<(String, u16)> {
    w.recorder.calls_by(caller).into_iter().filter(|c| c.is_mutating()).map(|c| (c.operation, c.status)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_deleted_by_another_writer_fails_neither_the_own_record_nor_the_collector() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    w.create_alb(443, 100).await.unwrap();
    let hostname = w.clusters["alpha"].hostname.clone();
    let a = w.launch("alpha", "control-plane").await.unwrap();
    ok(&w.agent(&a, &["join"]).await.unwrap());
    // A stopped server's record that another writer deletes between b's read and b's write.
    const DEAD: &str = "i-0deadbeefdeadbeef";
    w.recorder.phantom_api_record(&hostname, DEAD, "10.9.9.9");
    let b = w.launch("alpha", "control-plane").await.unwrap();
    w.recorder.clear();
    ok(&w.agent(&b, &["join"]).await.unwrap());
    let ids: Vec<String> = w.api_records("alpha").await.unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, {
        let mut v = vec![a.id.clone(), b.id.clone()];
        v.sort();
        v
    });
    // The own record alone (accepted), then the stale delete alone (Route53: not found), which
    // a re-read shows was done by someone else.
    let changes: Vec<u16> =
        writes_of(&w, &b.access_key()).into_iter().filter(|(op, _)| op == "ChangeResourceRecordSets").map(|(_, status)| status).collect();
    assert_eq!(changes, vec![200, 400], "{:?}", w.recorder.calls_by(&b.access_key()));
    assert!(w.recorder.calls_by(&b.access_key()).iter().any(|c| c.operation == "ChangeResourceRecordSets" && c.status == 400));

    // The coordinator's collection of the same kind of record does not fail either.
    w.recorder.phantom_api_record(&hostname, DEAD, "10.9.9.9");
    let run = w.coordinator(&["apply"]).await.unwrap();
    ok(&run);
    assert!(run.stderr.contains("already deleted by another writer"), "{}", run.stderr);
    k3s_asg_testbed::reliability::held(
        "Adversity",
        "a stale API record deleted by another writer between a server's read and its write (Route53 refuses the DELETE)",
        1,
        "the server's own record is published in a request of its own; the refused delete is re-read and counted as done; the coordinator's collection does the same",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_over_quota_is_refused_but_dead_servers_records_are_collected() {
    let mut w = World::new().await.unwrap();
    for c in ["alpha", "bravo", "charlie"] {
        w.create_cluster(c).await.unwrap();
    }
    w.create_alb(443, 2).await.unwrap();
    let a = w.launch("alpha", "control-plane").await.unwrap();
    let b = w.launch("alpha", "control-plane").await.unwrap();
    for s in [&a, &b] {
        ok(&w.agent(s, &["join"]).await.unwrap());
    }
    w.terminate(&b).await.unwrap();
    w.recorder.clear();
    let run = w.coordinator(&["apply"]).await.unwrap();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("quota is 2"), "{}", run.stderr);
    assert!(run.stdout.contains(&format!("- record {hostname}. A ({})", b.id, hostname = w.clusters["alpha"].hostname)), "{}", run.stdout);
    assert_eq!(run.stdout.matches("+ rule").count(), 3, "the refused rules are shown: {}", run.stdout);
    let ids: Vec<String> = w.api_records("alpha").await.unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![a.id.clone()], "the stopped server's record is collected");
    let writes: Vec<String> = w.recorder.calls().into_iter().filter(|c| c.is_mutating()).map(|c| c.operation).collect();
    assert_eq!(writes, vec!["ChangeResourceRecordSets"], "no rule written");
    k3s_asg_testbed::reliability::held(
        "Adversity",
        "the coordinator's plan exceeds the listener rules quota while a server's record is stale",
        1,
        "exit 2 with the refused plan printed; no rule written; the stopped server's API record collected",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taken_back_to_the_warm_pool_a_server_and_a_node_leave_and_join_again() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    let tg = w.clusters["alpha"].target_group_arn.clone();
    let a = w.launch("alpha", "control-plane").await.unwrap();
    ok(&w.agent(&a, &["join"]).await.unwrap());
    let s = w.launch("alpha", "control-plane").await.unwrap();
    let n = w.launch("alpha", "node").await.unwrap();
    w.asg.add(&s.id, "alpha-control-plane", "InService", 30);
    w.asg.add(&n.id, "alpha-node", "InService", 30);
    // Two Ready control-plane members: s is not the last.
    let members = w.dir.path().join("cp-nodes");
    std::fs::write(&members, format!("{} True\n{} True\n", a.id, s.id)).unwrap();
    w.agent_env.insert("K3S_STUB_CP_NODES".into(), members.display().to_string());
    let server = w.spawn_agent(&s, &["run"]).unwrap();
    let node = w.spawn_agent(&n, &["run"]).unwrap();
    wait_for_phase(&s, Phase::Ready).await;
    wait_for_phase(&n, Phase::Ready).await;
    assert!(s.file("/var/lib/rancher/k3s/server/db/state").is_some());

    // Scale-in with an instance reuse policy: both go back to the warm pool, paused by the
    // terminating hook in Warmed:Pending:Wait.
    for i in [&s, &n] {
        w.asg.set_state(&i.id, "Warmed:Pending:Wait");
        i.imds.set("autoscaling/target-lifecycle-state", Some("Warmed:Stopped"));
    }
    until("both to leave for the warm pool", Duration::from_secs(60), || in_phase(&s, Phase::Left) && in_phase(&n, Phase::Left)).await;
    assert!(w.members(&tg).await.unwrap().iter().all(|m| m == &a.id), "only a serves traffic");
    let ids: Vec<String> = w.api_records("alpha").await.unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![a.id.clone()], "the server's API record is gone");
    for i in [&s, &n] {
        assert!(i.stub_calls().iter().any(|l| l.contains("delete node/")), "{}: Node deleted", i.id);
        assert!(w.asg.actions().iter().any(|(op, id, _, r)| op == "CompleteLifecycleAction" && id == &i.id && r == "CONTINUE"));
        assert!(matches!(state(i).trigger, Some(Trigger::OutOfService(ref t)) if t == "Warmed:Stopped"));
    }
    // The server left etcd; its datastore is wiped so it can join again as a new member, and it
    // will join, never initialise.
    assert!(!s.path("/var/lib/rancher/k3s/server/db").exists(), "datastore wiped");
    assert_eq!(state(&s).mode, Some(k3s_asg_agent::vocab::Mode::Join));

    // Back in service: both join again.
    s.clear_stub_calls();
    for i in [&s, &n] {
        w.asg.set_state(&i.id, "InService");
        i.imds.set("autoscaling/target-lifecycle-state", Some("InService"));
    }
    wait_for_phase(&s, Phase::Ready).await;
    wait_for_phase(&n, Phase::Ready).await;
    let mut want = vec![a.id.clone(), s.id.clone(), n.id.clone()];
    want.sort();
    assert_eq!(w.members(&tg).await.unwrap(), want);
    assert_eq!(w.api_records("alpha").await.unwrap().len(), 2);
    let config = s.file("/etc/rancher/k3s/config.yaml").unwrap();
    assert!(!config.contains("cluster-init"), "joined the live cluster:\n{config}");
    assert_eq!(
        s.file("/var/lib/rancher/k3s/server/db/state"),
        a.file("/var/lib/rancher/k3s/server/db/state"),
        "the datastore came from the live cluster"
    );

    for (i, agent) in [(&s, server), (&n, node)] {
        i.imds.set("autoscaling/target-lifecycle-state", Some("Terminated"));
        ok(&agent.wait(Duration::from_secs(60)).await.unwrap());
    }
    k3s_asg_testbed::reliability::held(
        "Adversity",
        "a joined server and node go back to the warm pool on scale-in, then are put in service again",
        1,
        "each leaves traffic, its API record and the cluster (the server's datastore wiped), completes the hook, and joins again (the server as a joiner) when InService",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_server_sent_to_standby_keeps_the_cluster() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    let tg = w.clusters["alpha"].target_group_arn.clone();
    let s = w.launch("alpha", "control-plane").await.unwrap();
    w.asg.add(&s.id, "alpha-control-plane", "InService", 30);
    let agent = w.spawn_agent(&s, &["run"]).unwrap();
    wait_for_phase(&s, Phase::Ready).await;
    let datastore = s.file("/var/lib/rancher/k3s/server/db/state").expect("datastore");
    s.imds.set("autoscaling/target-lifecycle-state", Some("Standby"));
    until("the server to leave service", Duration::from_secs(60), || in_phase(&s, Phase::Left)).await;
    assert!(w.members(&tg).await.unwrap().is_empty(), "out of traffic");
    assert!(!s.stub_calls().iter().any(|l| l.contains("delete node/")), "its member kept");
    assert_eq!(s.file("/var/lib/rancher/k3s/server/db/state"), Some(datastore), "its datastore kept");
    assert_eq!(w.api_records("alpha").await.unwrap().len(), 1, "its API record kept: nobody recovers a new cluster behind it");
    assert_eq!(state(&s).mode, Some(k3s_asg_agent::vocab::Mode::ClusterInit), "it comes back as the cluster it is");
    s.imds.set("autoscaling/target-lifecycle-state", Some("InService"));
    wait_for_phase(&s, Phase::Ready).await;
    assert_eq!(w.members(&tg).await.unwrap(), vec![s.id.clone()]);
    s.imds.set("autoscaling/target-lifecycle-state", Some("Terminated"));
    ok(&agent.wait(Duration::from_secs(60)).await.unwrap());
    k3s_asg_testbed::reliability::held(
        "Adversity",
        "the only server of a cluster is put into Standby, then back in service",
        1,
        "it leaves traffic but keeps its etcd member, datastore and API record, and serves again as the same cluster when InService",
    );
}
