//! A stack an operator can run (issue 14): the user's readiness probes gate only
//! registration, never the cluster's bootstrap; probes apply to the roles they name;
//! a server in `run` collects the Nodes of instances that died without leaving.

use k3s_asg_agent::state::StepName;
use k3s_asg_testbed::check::{ok, state, until};
use k3s_asg_testbed::world::World;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const TOKEN: &str = "/k3s-asg/clusters/alpha/token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_nothing_serves_does_not_stop_the_cluster_from_forming() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    let tg = w.clusters["alpha"].target_group_arn.clone();
    // The README's probe, served by nothing yet (no ingress on a fresh cluster).
    w.readiness_status.store(503, Ordering::SeqCst);
    w.agent_env.insert("K3S_ASG_READY_TIMEOUT".into(), "3".into());
    let a = w.launch("alpha", "control-plane").await.unwrap();
    let run = w.agent(&a, &["join"]).await.unwrap();
    assert_eq!(run.code, 1, "its own probe fails: {}", run.stderr);
    assert!(run.stderr.contains("readiness[0]"), "{}", run.stderr);
    // …but the cluster formed: the token is secure, kubeconfigs and the API record are out.
    assert!(w.param(TOKEN).await.unwrap().is_some_and(|t| t.starts_with("K10")), "token secured on k3s's readiness");
    assert!(w.param("/k3s-asg/clusters/alpha/kubeconfig/admin").await.unwrap().is_some());
    assert_eq!(w.api_records("alpha").await.unwrap().len(), 1);
    assert!(w.members(&tg).await.unwrap().is_empty(), "no traffic before its probes pass");
    let steps: Vec<StepName> = state(&a).steps.iter().map(|s| s.name).collect();
    assert!(steps.contains(&StepName::ApiRecord) && !steps.contains(&StepName::Probes), "{steps:?}");

    // Another server joins it meanwhile, and a node too (each waits only on its own probes).
    let b = w.launch("alpha", "control-plane").await.unwrap();
    assert_eq!(w.agent(&b, &["join"]).await.unwrap().code, 1);
    assert!(b.file("/etc/rancher/k3s/config.yaml").is_some_and(|c| c.contains(&format!("server: \"https://{}:6443\"", a.ip))));

    // Once the probe is served, a join registers.
    w.readiness_status.store(200, Ordering::SeqCst);
    ok(&w.agent(&a, &["join"]).await.unwrap());
    ok(&w.agent(&b, &["join"]).await.unwrap());
    assert_eq!(w.members(&tg).await.unwrap().len(), 2);
    k3s_asg_testbed::reliability::held(
        "Bootstrap",
        "the spec's readiness probe is served by nothing when the first server starts",
        1,
        "the token is secured and the API record published on k3s's readiness; registration waits for the probe",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_apply_to_the_roles_they_name() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    let tg = w.clusters["alpha"].target_group_arn.clone();
    let mut spec = w.default_spec(&w.clusters["alpha"]);
    spec["readiness"] = serde_json::json!([{ "http": w.readiness_url(), "expect_status": 200, "roles": ["node"] }]);
    w.put_spec("alpha", &spec.to_string()).await.unwrap();
    w.readiness_status.store(503, Ordering::SeqCst);
    w.agent_env.insert("K3S_ASG_READY_TIMEOUT".into(), "3".into());
    let cp = w.launch("alpha", "control-plane").await.unwrap();
    ok(&w.agent(&cp, &["join"]).await.unwrap());
    assert_eq!(w.members(&tg).await.unwrap(), vec![cp.id.clone()], "a node-only probe does not hold the control plane");
    let node = w.launch("alpha", "node").await.unwrap();
    let run = w.agent(&node, &["join"]).await.unwrap();
    assert_eq!(run.code, 1, "the node waits for its probe");
    assert!(!w.members(&tg).await.unwrap().contains(&node.id));

    let mut bad = spec.clone();
    bad["readiness"][0]["roles"] = serde_json::json!([]);
    w.put_spec("alpha", &bad.to_string()).await.unwrap();
    let run = w.agent(&node, &["join"]).await.unwrap();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("readiness[0].roles"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_in_run_collects_the_nodes_of_dead_instances() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    w.agent_env.insert("K3S_ASG_TOKEN_CHECK".into(), "1".into());
    let cp = w.launch("alpha", "control-plane").await.unwrap();
    ok(&w.agent(&cp, &["join"]).await.unwrap());
    let alive = w.launch("alpha", "node").await.unwrap();
    ok(&w.agent(&alive, &["join"]).await.unwrap());
    let ghost = w.launch("alpha", "node").await.unwrap();
    ok(&w.agent(&ghost, &["join"]).await.unwrap());
    // The ghost dies without leaving; a foreign Node (not an instance) is never touched.
    w.terminate(&ghost).await.unwrap();
    let nodes = w.dir.path().join("nodes");
    std::fs::write(&nodes, format!("{}\n{}\n{}\nworkstation-7\ni-00000000000000000\n", cp.id, alive.id, ghost.id)).unwrap();
    w.agent_env.insert("K3S_STUB_NODES".into(), nodes.display().to_string());
    let agent = w.spawn_agent(&cp, &["run"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let deleted = |id: &str| cp.stub_calls().iter().any(|l| l.contains(&format!("delete node/{id}")));
    while !(deleted(&ghost.id) && deleted("i-00000000000000000")) {
        assert!(Instant::now() < deadline, "the ghosts were not collected: {:?}", cp.stub_calls());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!deleted(&alive.id) && !deleted(&cp.id) && !deleted("workstation-7"), "only dead instances' Nodes go");
    agent.sigterm();
    let _ = agent.wait(Duration::from_secs(60)).await.unwrap();
    k3s_asg_testbed::reliability::held(
        "Bootstrap",
        "a node dies without leaving (terminated, no hook); an unknown instance id's Node",
        1,
        "a server in run deletes both Nodes; live and foreign Nodes are kept",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_is_reported_as_corrupt() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    let cp = w.launch("alpha", "control-plane").await.unwrap();
    ok(&w.agent(&cp, &["join"]).await.unwrap());
    let token = w.param(TOKEN).await.unwrap();
    std::fs::write(cp.path(k3s_asg_agent::state::STATE_PATH), "{\"instance_id\": \"i-trunc").unwrap();
    let status = w.agent(&cp, &["status"]).await.unwrap();
    assert_eq!(status.code, 1, "{}", status.stderr);
    assert!(status.stderr.contains("corrupt") && !status.stdout.contains("has not run"), "{}\n{}", status.stdout, status.stderr);
    // The agent itself keeps it aside and goes on (every step looks before it acts).
    ok(&w.agent(&cp, &["join"]).await.unwrap());
    assert!(cp.file("/var/lib/k3s-asg/state.json.corrupt").is_some());
    // It went on as the member its k3s is (its config), never as a newcomer that recovers.
    assert_eq!(w.param(TOKEN).await.unwrap(), token, "the cluster's token is untouched");
    assert!(w.param("/k3s-asg/clusters/alpha/election/2").await.unwrap().is_none(), "no recovery election");
    assert_eq!(state(&cp).phase, k3s_asg_agent::state::Phase::Ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_takes_the_default_region_and_stops_on_sigterm() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    w.create_alb(443, 100).await.unwrap();
    // No AWS_REGION: AWS_DEFAULT_REGION is the SDK's next choice.
    w.coordinator_env.insert("AWS_REGION".into(), String::new());
    w.coordinator_env.insert("AWS_DEFAULT_REGION".into(), k3s_asg_testbed::world::REGION.into());
    ok(&w.coordinator(&["plan"]).await.unwrap());
    w.recorder.clear();
    let run = w.spawn_coordinator(&["run", "--interval", "3600"]).unwrap();
    until("the coordinator to reconcile", Duration::from_secs(30), || {
        w.recorder.calls_by("AKIACOORDINATOR").iter().any(|c| c.operation == "DescribeRules")
    })
    .await;
    run.sigterm();
    let out = run.wait(Duration::from_secs(30)).await.unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_admin_kubeconfig_is_replaced_by_a_servers_own() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    let a = w.launch("alpha", "control-plane").await.unwrap();
    ok(&w.agent(&a, &["join"]).await.unwrap());
    let b = w.launch("alpha", "control-plane").await.unwrap();
    ok(&w.agent(&b, &["join"]).await.unwrap());
    let admin = "/k3s-asg/clusters/alpha/kubeconfig/admin";
    let published = w.param(admin).await.unwrap().unwrap();
    // Young: b leaves a's kubeconfig alone.
    w.agent_env.insert("K3S_ASG_TOKEN_CHECK".into(), "1".into());
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let run = w.spawn_agent(&b, &["run"]).unwrap();
    // Two guard rounds after its join: the admin kubeconfig was looked at (and kept).
    let admin_reads = || {
        let calls = w.recorder.calls_by(&b.access_key());
        let registered = calls.iter().find(|c| c.operation == "DescribeTargetHealth" && c.at_ms > since).map(|c| c.at_ms).unwrap_or(u128::MAX);
        calls.iter().filter(|c| c.operation == "GetParameters" && c.at_ms > registered).count()
    };
    until("two guard rounds", Duration::from_secs(30), || admin_reads() >= 4).await;
    run.sigterm();
    ok(&run.wait(Duration::from_secs(30)).await.unwrap());
    assert_eq!(w.param(admin).await.unwrap().unwrap(), published, "a young kubeconfig is kept");
    // Old (max age 0 days here): b's own replaces it, once.
    w.agent_env.insert("K3S_ASG_KUBECONFIG_MAX_AGE_DAYS".into(), "0".into());
    let run = w.spawn_agent(&b, &["run"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.param(admin).await.unwrap().unwrap() == published {
        assert!(Instant::now() < deadline, "the old kubeconfig was not replaced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run.sigterm();
    ok(&run.wait(Duration::from_secs(30)).await.unwrap());
    let replaced = w.param(admin).await.unwrap().unwrap();
    assert!(replaced.contains("server: https://api.alpha.us-east-1.example.com:6443"), "still the API name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_in_a_warm_pool_extends_the_start_timeout() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    let node = w.launch("alpha", "node").await.unwrap();
    node.imds.set("autoscaling/target-lifecycle-state", Some("Warmed:Running"));
    // systemd's notify socket, as a Type=notify unit gets it.
    let path = w.dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&path).unwrap();
    w.agent_env.insert("NOTIFY_SOCKET".into(), path.display().to_string());
    let agent = w.spawn_agent(&node, &["run"]).unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(20), socket.recv(&mut buf)).await.expect("no notification").unwrap();
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "EXTEND_TIMEOUT_USEC=60000000");
    assert!(node.file("/etc/rancher/k3s/config.yaml").is_none(), "nothing configured while warmed");
    agent.sigterm();
    let _ = agent.wait(Duration::from_secs(30)).await.unwrap();
}
