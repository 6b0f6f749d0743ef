//! End-to-end: `k3s-asg-agent join` against moto, the IMDS and supervisor
//! doubles, and the stub systemctl/k3s.

use k3s_asg_testbed::check::ok;
use k3s_asg_testbed::world::{secrets_of, World};
use std::os::unix::fs::PermissionsExt;

const TOKEN: &str = "/k3s-asg/clusters/alpha/token";
const ADMIN: &str = "/k3s-asg/clusters/alpha/kubeconfig/admin";
const DRAIN: &str = "/k3s-asg/clusters/alpha/kubeconfig/drain";

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
    let start_ms = cp.stub_call_at("systemctl\tstart k3s").expect("k3s started through systemctl");
    assert!(calls[reg].at_ms >= start_ms);

    // A worker node joins through the live server, verified by CA hash.
    let node = w.launch("alpha", "node").await.unwrap();
    w.recorder.clear();
    let run = w.agent(&node, &["join"]).await.unwrap();
    ok(&run);
    let nconf = node.file("/etc/rancher/k3s/config.yaml").unwrap();
    assert!(nconf.contains(&format!("server: \"https://{}:6443\"", cp.ip)), "{nconf}");
    // The node joins with the agent token the server published, never the server token.
    let agent = w.param("/k3s-asg/clusters/alpha/agent-token").await.unwrap().expect("agent token published");
    let (server_ca, agent_ca) = (token.split("::").next().unwrap(), agent.split("::").next().unwrap());
    assert_eq!(server_ca, agent_ca, "the same cluster CA");
    assert!(agent.contains("::node:") && !agent.contains(token.rsplit(':').next().unwrap()), "{agent}");
    assert!(nconf.contains(&format!("token: \"{agent}\"")) && !nconf.contains("::server:"), "{nconf}");
    assert!(!nconf.contains("tls-san"));
    assert!(node.file("/etc/systemd/system/k3s-agent.service").is_some());
    assert_eq!(w.members(&tg).await.unwrap(), {
        let mut v = vec![cp.id.clone(), node.id.clone()];
        v.sort();
        v
    });
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
    let st: k3s_asg_agent::state::State = serde_json::from_str(&status_json.stdout).unwrap();
    assert_eq!((st.phase, st.role), (k3s_asg_agent::state::Phase::Ready, Some(k3s_asg_aws::tags::Role::Node)));
    let secrets = secrets_of(&[Some(token.clone()), Some(admin), Some(drain)], &[cp.root.as_path(), node.root.as_path()]);
    assert!(!secrets.is_empty());
    for out in [&run.stdout, &run.stderr, &status.stdout, &status_json.stdout] {
        for s in &secrets {
            assert!(!out.contains(s.as_str()), "a secret leaked into output");
        }
    }
    // IMDSv1 was never attempted.
    assert_eq!(cp.imds.state.lock().unwrap().refused, 0);
    k3s_asg_testbed::reliability::held(
        "Secrets",
        "token and kubeconfigs (and every line of them) searched in the output of join and status, text and JSON",
        1,
        "none found; config.yaml is 0600; IMDSv1 never attempted (0 refused calls)",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_servers_at_once_elect_exactly_one() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    let tg = w.clusters["alpha"].target_group_arn.clone();
    let mut servers = Vec::new();
    for _ in 0..5 {
        servers.push(w.launch("alpha", "control-plane").await.unwrap());
    }
    let runs = k3s_asg_testbed::join_all(servers.iter().map(|s| w.agent(s, &["join"])).collect()).await;
    for r in &runs {
        ok(r.as_ref().unwrap());
    }
    let inits = servers.iter().filter(|s| s.file("/etc/rancher/k3s/config.yaml").unwrap().contains("cluster-init: true")).count();
    assert_eq!(inits, 1, "exactly one server initialises the cluster");
    let creates = w.recorder.calls().iter().filter(|c| c.operation == "PutParameter").count();
    assert!(creates >= 5, "every server tried to create or secure the token ({creates})");
    let mut ids: Vec<String> = servers.iter().map(|s| s.id.clone()).collect();
    ids.sort();
    let records: Vec<String> = w.api_records("alpha").await.unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(records, ids, "five API records");
    assert_eq!(w.members(&tg).await.unwrap(), ids, "all registered");
    let token = w.param(TOKEN).await.unwrap().unwrap();
    assert!(token.starts_with("K10"));
    let roots: Vec<&std::path::Path> = servers.iter().map(|s| s.root.as_path()).collect();
    let secrets = secrets_of(&[Some(token), w.param(ADMIN).await.unwrap(), w.param(DRAIN).await.unwrap()], &roots);
    for r in &runs {
        let r = r.as_ref().unwrap();
        for s in &secrets {
            assert!(!r.stderr.contains(s.as_str()) && !r.stdout.contains(s.as_str()), "a secret leaked into a server's log");
        }
    }
    k3s_asg_testbed::reliability::held("Secrets", "token and kubeconfigs searched in the logs of 5 servers joining at once", 1, "none found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_fall_back_to_describe_tags_and_stale_records_are_pruned() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    let first = w.launch("alpha", "control-plane").await.unwrap();
    ok(&w.agent(&first, &["join"]).await.unwrap());

    // Instance metadata tags off: the agent reads its tags through ec2:DescribeTags.
    let second = w.launch("alpha", "control-plane").await.unwrap();
    second.imds.set_tags(None);
    ok(&w.agent(&second, &["join"]).await.unwrap());
    assert!(w.recorder.calls_by(&second.access_key()).iter().any(|c| c.operation == "DescribeTags"));
    assert!(second.file("/etc/rancher/k3s/config.yaml").unwrap().contains(&format!("server: \"https://{}:6443\"", first.ip)));

    // A foreign record beside ours (another SetIdentifier, same name) must survive.
    let c = &w.clusters["alpha"];
    let foreign = aws_sdk_route53::types::ResourceRecordSet::builder()
        .name(format!("{}.", c.hostname))
        .r#type(aws_sdk_route53::types::RrType::A)
        .set_identifier("manual-entry")
        .multi_value_answer(true)
        .ttl(60)
        .resource_records(aws_sdk_route53::types::ResourceRecord::builder().value("127.9.9.9").build().unwrap())
        .build()
        .unwrap();
    w.route53
        .change_resource_record_sets()
        .hosted_zone_id(&c.zone_id)
        .change_batch(
            aws_sdk_route53::types::ChangeBatch::builder()
                .changes(
                    aws_sdk_route53::types::Change::builder()
                        .action(aws_sdk_route53::types::ChangeAction::Create)
                        .resource_record_set(foreign)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    // The second server's instance dies without leaving: its record stays behind.
    w.terminate(&second).await.unwrap();
    std::fs::remove_file(second.path("/run/k3s-stub/active-k3s")).unwrap();

    let third = w.launch("alpha", "control-plane").await.unwrap();
    ok(&w.agent(&third, &["join"]).await.unwrap());
    let records: Vec<String> = w.api_records("alpha").await.unwrap().into_iter().map(|(id, _)| id).collect();
    let mut want = vec![first.id.clone(), third.id.clone(), "manual-entry".to_string()];
    want.sort();
    assert_eq!(records, want, "the dead server's record is pruned, the foreign one kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_timeout_names_the_probe_and_registers_nothing() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
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
async fn the_secret_scan_catches_a_leak() {
    // Every program run in the test bed is scanned (World::agent, World::coordinator, Running::wait);
    // here the scan is fed a leak on purpose, to show it fails the test.
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    let cp = w.launch("alpha", "control-plane").await.unwrap();
    ok(&w.agent(&cp, &["join"]).await.unwrap());
    let token = w.param(TOKEN).await.unwrap().unwrap();
    let password = token.rsplit_once("::server:").unwrap().1.to_string();
    let scan = w.secret_scan(Some(&cp));
    scan.check("clean", &["nothing to see"]).await;
    for leak in [token, password] {
        let scan = scan.clone();
        let caught = tokio::spawn(async move { scan.check("leaky", &[&format!("level=info token={leak}")]).await }).await;
        assert!(caught.is_err_and(|e| e.is_panic()), "the scan must fail on a leaked secret");
    }
    // A secret file with a loose mode fails it too.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(cp.path("/etc/rancher/k3s/config.yaml"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let caught = tokio::spawn(async move { scan.check("loose", &[]).await }).await;
    assert!(caught.is_err_and(|e| e.is_panic()), "the scan must fail on a 0644 config.yaml");
    k3s_asg_testbed::reliability::held(
        "Secrets",
        "every agent and coordinator run of every test is scanned (World::agent, World::coordinator, background runs, Lambda); \
         here it is fed a leaked token, a leaked token password and a 0644 config.yaml",
        3,
        "the scan failed the run each time",
    );
}
