//! Joining (`k3s-asg-agent join`): the first server initialises the cluster and a node joins
//! it through the live server, with no secret in any output; instance tags come from EC2 when
//! IMDS has none, and stale API records are pruned; a corrupt state file is reported as
//! corrupt, and the next join sets it aside and goes on as the member its k3s is.

use super::common::{ADMIN, DRAIN, TOKEN};
use k3s_asg_testbed::check::{ok, state};
use k3s_asg_testbed::world::{secrets_of, World};
use std::os::unix::fs::PermissionsExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_server_initialises_then_node_joins() {
    let w = World::with_cluster("alpha").await.unwrap();
    let tg = w.target_group("alpha");

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
    // k3s's datastore: one etcd member, named after the node, a voter.
    let members = cp.etcd_members();
    assert_eq!(members.len(), 1, "{members:?}");
    assert!(members[0].0.starts_with(&format!("{}-", cp.id)) && !members[0].1, "{members:?}");

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
    // Both Nodes are in the cluster's etcd, Ready; the node holds no etcd member.
    let mut nodes = cp.nodes();
    nodes.sort();
    let mut want = vec![(cp.id.clone(), true), (node.id.clone(), true)];
    want.sort();
    assert_eq!(nodes, want);
    assert_eq!(cp.etcd_members().len(), 1);

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
async fn tags_fall_back_to_describe_tags_and_stale_records_are_pruned() {
    let mut w = World::with_cluster("alpha").await.unwrap();
    let first = w.joined("alpha", "control-plane").await.unwrap();

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

    // A third voter, so that the cluster keeps its etcd quorum (2 of 3) when one dies: with
    // two voters, one lost would leave no quorum, and no server could join (real etcd).
    let spare = w.launch("alpha", "control-plane").await.unwrap();
    ok(&w.agent(&spare, &["join"]).await.unwrap());
    // The second server's instance dies without leaving: its record stays behind. The first
    // server's agent runs on (as under systemd) and collects the dead server's Node and etcd
    // member, without which etcd would not let the third join.
    w.terminate(&second).await.unwrap();
    second.kill_k3s().await;
    w.agent_env.insert("K3S_ASG_TOKEN_CHECK".into(), "1".into());
    let _running = super::recovery::keep_running(&w, &first);

    let third = w.joined("alpha", "control-plane").await.unwrap();
    let records: Vec<String> = w.api_records("alpha").await.unwrap().into_iter().map(|(id, _)| id).collect();
    let mut want = vec![first.id.clone(), spare.id.clone(), third.id.clone(), "manual-entry".to_string()];
    want.sort();
    assert_eq!(records, want, "the dead server's record is pruned, the foreign one kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_is_reported_as_corrupt() {
    let w = World::with_cluster("alpha").await.unwrap();
    let cp = w.joined("alpha", "control-plane").await.unwrap();
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
