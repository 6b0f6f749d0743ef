//! How the coordinator runs: as a Lambda function answering each event with one reconcile,
//! as `run` until SIGTERM (with the region from AWS_DEFAULT_REGION), and `kubeconfig`.

use super::common::writes;
use k3s_asg_testbed::check::{ok, until};
use k3s_asg_testbed::world::World;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_mode_answers_each_event_with_one_reconcile() {
    let (w, listener) = World::with_alb(&["alpha"]).await.unwrap();
    let api = k3s_asg_testbed::lambda_api::RuntimeApi::start().await.unwrap();
    let fixtures = k3s_asg_testbed::repo_root().join("coordinator/testdata");
    let event = |name: &str| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(fixtures.join(name)).unwrap()).unwrap() };
    api.invoke("req-1", event("eventbridge-scheduled.json"));
    let function = w.spawn_coordinator_lambda(&api.address()).unwrap();
    let answers = api.answers(1, std::time::Duration::from_secs(30)).await.unwrap();
    assert_eq!(answers[0].0, "req-1");
    assert_eq!(answers[0].1, "response", "{}", answers[0].2);
    let v: serde_json::Value = serde_json::from_str(&answers[0].2).unwrap();
    assert_eq!(v["event"], "schedule");
    assert_eq!(v["rule_changes"], 1, "created the cluster rule: {v}");
    assert!(w.rule_hosts(&listener).await.unwrap().contains(&"*--alpha.us-east-1.example.com".to_string()));

    // An ASG lifecycle event is answered with one more (now empty) reconcile.
    w.recorder.clear();
    api.invoke("req-2", event("asg-lifecycle-terminating.json"));
    let answers = api.answers(2, std::time::Duration::from_secs(30)).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&answers[1].2).unwrap();
    assert!(v["event"].as_str().unwrap().starts_with("autoscaling:"), "{v}");
    assert_eq!(v["rule_changes"], 0);
    assert!(writes(&w).is_empty());
    // Warm: the specs, the listeners and the rules' owner tags were kept from the first event;
    // only the rules and records themselves were read again.
    let ops: Vec<String> = w.recorder.calls().into_iter().map(|c| c.operation).collect();
    for kept in ["GetParameter", "GetParametersByPath", "DescribeTags", "DescribeListeners", "DescribeLoadBalancers"] {
        assert!(!ops.iter().any(|o| o == kept), "{kept} sent in a warm reconcile: {ops:?}");
    }
    assert!(ops.iter().any(|o| o == "DescribeRules"), "{ops:?}");

    // A new endpoint and its Parameter Store Change event: the specs are read again and applied.
    let zone = w.zone_id().to_string();
    w.put_param(
        "/k3s-asg/endpoints/blog",
        &serde_json::json!({ "hostname": "blog.example.com", "hosted_zone_id": zone, "clusters": { "alpha": 1 }, "listener_port": 443 }).to_string(),
    )
    .await
    .unwrap();
    w.recorder.clear();
    api.invoke("req-3", event("ssm-parameter-change.json"));
    let answers = api.answers(3, std::time::Duration::from_secs(30)).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&answers[2].2).unwrap();
    assert!(v["event"].as_str().unwrap().starts_with("ssm: Parameter Store Change"), "{v}");
    assert_eq!(v["rule_changes"], 1, "{v}");
    assert!(w.rule_hosts(&listener).await.unwrap().contains(&"blog.example.com".to_string()));
    let ops: Vec<String> = w.recorder.calls().into_iter().map(|c| c.operation).collect();
    assert!(ops.iter().any(|o| o == "GetParametersByPath"), "{ops:?}");
    drop(function);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_takes_the_default_region_and_stops_on_sigterm() {
    let (mut w, _) = World::with_alb(&["alpha"]).await.unwrap();
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
    let out = run.stop(Duration::from_secs(30)).await.unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_command_prints_the_admin_kubeconfig() {
    let w = World::with_cluster("alpha").await.unwrap();
    let missing = w.coordinator(&["kubeconfig", "alpha"]).await.unwrap();
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("/k3s-asg/clusters/alpha/kubeconfig/admin"), "{}", missing.stderr);
    let cp = w.launch("alpha", "control-plane").await.unwrap();
    let run = w.agent(&cp, &["join"]).await.unwrap();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = w.coordinator(&["kubeconfig", "alpha"]).await.unwrap();
    ok(&out);
    assert_eq!(out.stdout, w.param("/k3s-asg/clusters/alpha/kubeconfig/admin").await.unwrap().unwrap());
    assert!(out.stdout.contains("server: https://api.alpha.us-east-1.example.com:6443"));
    assert!(!out.stderr.contains("client-key-data"), "the secret stays out of the log");
}
