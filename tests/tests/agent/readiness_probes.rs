//! Readiness probes (issue 14): the spec's probes gate only registration, never the
//! cluster's bootstrap; a probe that does not pass in time is named and nothing is
//! registered; probes apply to the roles they name. k3s itself never becoming ready (a
//! Type=notify unit whose start blocks for ever) ends the join within the ready timeout.

use super::common::TOKEN;
use k3s_asg_agent::state::StepName;
use k3s_asg_testbed::check::{ok, state};
use k3s_asg_testbed::world::World;
use std::sync::atomic::Ordering;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_timeout_names_the_probe_and_registers_nothing() {
    let mut w = World::with_cluster("alpha").await.unwrap();
    w.agent_env.insert("K3S_ASG_READY_TIMEOUT".into(), "2".into());
    w.readiness_status.store(503, std::sync::atomic::Ordering::SeqCst);
    let cp = w.launch("alpha", "control-plane").await.unwrap();
    let run = w.agent(&cp, &["join"]).await.unwrap();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("readiness[0]") && run.stderr.contains("answered 503"), "{}", run.stderr);
    assert!(w.members(&w.clusters["alpha"].target_group_arn).await.unwrap().is_empty());
    // The API record follows k3s's readiness, not the probes (the cluster must form).
    assert_eq!(w.api_records("alpha").await.unwrap().len(), 1);
    let status = w.agent(&cp, &["status"]).await.unwrap();
    assert!(status.stdout.contains("phase:      failed"), "{}", status.stdout);

    // Once the probe passes, joining again completes.
    w.readiness_status.store(200, std::sync::atomic::Ordering::SeqCst);
    ok(&w.agent(&cp, &["join"]).await.unwrap());
    assert_eq!(w.members(&w.clusters["alpha"].target_group_arn).await.unwrap(), vec![cp.id.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_nothing_serves_does_not_stop_the_cluster_from_forming() {
    let mut w = World::with_cluster("alpha").await.unwrap();
    let tg = w.target_group("alpha");
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
    let mut w = World::with_cluster("alpha").await.unwrap();
    let tg = w.target_group("alpha");
    let mut spec = w.default_spec(&w.clusters["alpha"]);
    spec["readiness"] = serde_json::json!([{ "http": w.readiness_url(), "expect_status": 200, "roles": ["node"] }]);
    w.put_spec("alpha", &spec.to_string()).await.unwrap();
    w.readiness_status.store(503, Ordering::SeqCst);
    w.agent_env.insert("K3S_ASG_READY_TIMEOUT".into(), "3".into());
    let cp = w.joined("alpha", "control-plane").await.unwrap();
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

/// k3s's units are `Type=notify` with `TimeoutStartSec=0`: a server whose etcd cannot join never
/// sends READY, and a blocking `systemctl start` waits for ever. The agent queues the start
/// (`--no-block`) and waits for the unit under its ready timeout, saying what it waits for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_k3s_that_never_gets_ready_ends_the_join_within_the_ready_timeout_and_says_why() {
    let mut w = World::with_cluster("alpha").await.unwrap();
    w.agent_env.insert("K3S_ASG_READY_TIMEOUT".into(), "3".into());
    w.agent_env.insert("K3S_STUB_START_BLOCKS".into(), "1".into());
    let cp = w.launch("alpha", "control-plane").await.unwrap();
    let run = w.agent(&cp, &["join"]).await.unwrap();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("systemd unit k3s is not active yet"), "names what it waited for: {}", run.stderr);
    assert!(cp.stub_calls().iter().any(|l| l.contains("systemctl\tstart k3s --no-block")), "the start was queued, not awaited");
    assert_eq!(state(&cp).waiting_for.as_deref(), Some("systemd unit k3s is not active yet (k3s is starting)"), "status says which step waits");
    let status = w.agent(&cp, &["status"]).await.unwrap();
    assert!(status.stdout.contains("not active yet"), "{}", status.stdout);
    assert!(w.members(&w.clusters["alpha"].target_group_arn).await.unwrap().is_empty(), "nothing registered");
}
