//! End-to-end: `k3s-asg-agent join` against moto, the IMDS and supervisor
//! doubles, and the stub systemctl/k3s.

use k3s_asg_testbed::world::{secrets_of, World};
use std::os::unix::fs::PermissionsExt;

const TOKEN: &str = "/k3s-asg/clusters/alpha/token";
const ADMIN: &str = "/k3s-asg/clusters/alpha/kubeconfig/admin";
const DRAIN: &str = "/k3s-asg/clusters/alpha/kubeconfig/drain";

fn ok(run: &k3s_asg_testbed::world::AgentRun) {
    assert_eq!(run.code, 0, "agent failed:\nstdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_server_initialises_then_node_joins() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    let tg = w.clusters["alpha"].target_group_arn.clone();

    let cp = w.launch("alpha", "control-plane").await.unwrap();
    let run = w.agent(&cp, &["join"]).await.unwrap();
    ok(&run);

    // Token: created by this server, then replaced with k3s's secure form.
    let token = w.param(TOKEN).await.unwrap().expect("token parameter");
    assert!(token.starts_with("K10"), "token is in secure form");
    let config = cp.file("/etc/rancher/k3s/config.yaml").unwrap();
    assert!(config.contains("cluster-init: true\n"), "{config}");
    assert!(config.contains(&format!("node-name: \"{}\"", cp.id)));
    assert!(config.contains(&format!("node-ip: \"{}\"", cp.ip)));
    assert!(config.contains("topology.kubernetes.io/zone=us-east-1a"));
    assert!(config.contains("  - \"api.alpha.us-east-1.example.com\""), "tls-san: {config}");
    let mode = std::fs::metadata(cp.path("/etc/rancher/k3s/config.yaml")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(cp.file("/etc/systemd/system/k3s.service").unwrap().contains("ExecStart=/usr/local/bin/k3s server"));
    assert!(cp.file("/var/lib/rancher/k3s/server/manifests/k3s-asg-drain.yaml").is_some());

    // Kubeconfigs published, API record, registration.
    let admin = w.param(ADMIN).await.unwrap().expect("admin kubeconfig");
    assert!(admin.contains("server: https://api.alpha.us-east-1.example.com:6443"));
    let drain = w.param(DRAIN).await.unwrap().expect("drain kubeconfig");
    assert!(drain.contains("token: stub-sa-"));
    assert_eq!(w.api_records("alpha").await.unwrap(), vec![(cp.id.clone(), vec![cp.ip.clone()])]);
    assert_eq!(w.members(&tg).await.unwrap(), vec![cp.id.clone()]);

    // Registration came after readiness: systemctl start is before the first RegisterTargets.
    let calls = w.recorder.calls_by(&cp.access_key());
    let ops: Vec<&str> = calls.iter().map(|c| c.operation.as_str()).collect();
    let reg = ops.iter().position(|o| *o == "RegisterTargets").expect("registered");
    let rec = ops.iter().position(|o| *o == "ChangeResourceRecordSets").expect("record");
    assert!(rec < reg, "API record before registration: {ops:?}");
    let start_ms: u128 = cp
        .stub_calls()
        .iter()
        .find(|l| l.contains("systemctl\tenable --now k3s"))
        .and_then(|l| l.split('\t').next().unwrap().parse().ok())
        .expect("k3s started through systemctl");
    assert!(calls[reg].at_ms >= start_ms);

    // A worker node joins through the live server, verified by CA hash.
    let node = w.launch("alpha", "node").await.unwrap();
    w.recorder.clear();
    let run = w.agent(&node, &["join"]).await.unwrap();
    ok(&run);
    let nconf = node.file("/etc/rancher/k3s/config.yaml").unwrap();
    assert!(nconf.contains(&format!("server: \"https://{}:6443\"", cp.ip)), "{nconf}");
    assert!(nconf.contains(&format!("token: \"{token}\"")));
    assert!(!nconf.contains("tls-san"));
    assert!(node.file("/etc/systemd/system/k3s-agent.service").is_some());
    assert_eq!(w.members(&tg).await.unwrap(), { let mut v = vec![cp.id.clone(), node.id.clone()]; v.sort(); v });
    // The node's join stays within the call budget (issue: ≤ 8).
    let node_calls = w.recorder.calls_by(&node.access_key());
    assert!(node_calls.len() <= 8, "node join made {} AWS calls: {:?}", node_calls.len(), node_calls);
    assert_eq!(w.api_records("alpha").await.unwrap().len(), 1, "a node publishes no API record");

    // Second joins change nothing in AWS.
    w.recorder.clear();
    ok(&w.agent(&cp, &["join"]).await.unwrap());
    ok(&w.agent(&node, &["join"]).await.unwrap());
    let mutating: Vec<_> = w.recorder.calls().into_iter().filter(|c| c.is_mutating()).collect();
    assert!(mutating.is_empty(), "second join mutated: {mutating:?}");
    assert_eq!(w.param(TOKEN).await.unwrap().unwrap(), token);

    // No secret in any output or status.
    let status = w.agent(&cp, &["status"]).await.unwrap();
    ok(&status);
    assert!(status.stdout.contains("initialised the cluster"), "{}", status.stdout);
    let status_json = w.agent(&node, &["status", "--json"]).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&status_json.stdout).unwrap();
    assert_eq!(v["phase"], "ready");
    assert_eq!(v["role"], "node");
    let secrets = secrets_of(
        &[Some(token.clone()), Some(admin), Some(drain)],
        &[cp.root.as_path(), node.root.as_path()],
    );
    assert!(!secrets.is_empty());
    for out in [&run.stdout, &run.stderr, &status.stdout, &status_json.stdout] {
        for s in &secrets {
            assert!(!out.contains(s.as_str()), "a secret leaked into output");
        }
    }
    // IMDSv1 was never attempted.
    assert_eq!(cp.imds.state.lock().unwrap().refused, 0);
}
