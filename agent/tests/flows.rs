//! The agent's join, leave and converge driven through in-memory fakes of every effect
//! (`fake`): no moto, no programs on PATH, no sockets. Each test seeds a world, runs the agent's
//! public entry point, and states the calls that must have come, in order, and what AWS, k3s,
//! the files and the state file hold afterwards.

mod fake;

use fake::{Fake, Instance, Node, TargetGroup};
use k3s_asg_agent::config::AgentConfig;
use k3s_asg_agent::effects::lifecycle::WaitingHook;
use k3s_asg_agent::state::{Phase, State, StepName, Trigger};
use k3s_asg_aws::records::RecordSet;
use k3s_asg_aws::tags::Role;
use k3s_asg_aws::targets::TargetState;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

const NODE: &str = "i-0123456789abcdef0";
const NODE_IP: &str = "10.0.1.7";
const SERVER: &str = "i-0aaaaaaaaaaaaaaa1";
const SERVER_IP: &str = "10.0.0.10";
const SERVER2: &str = "i-0bbbbbbbbbbbbbbb2";
const SERVER2_IP: &str = "10.0.0.11";
const GROUP: &str = "alpha-nodes";
const SERVERS: &str = "alpha-servers";
const ZONE: &str = "Z0ALPHA";
const API: &str = "api.alpha.example.com";
const TG_WEB: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/alpha-web/1111111111111111";
const TG_GRPC: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/alpha-grpc/2222222222222222";
const TG_CP: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/alpha-cp/3333333333333333";
const TG_METRICS: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/alpha-metrics/4444444444444444";
const CONFIG: &str = "/k3s-asg/clusters/alpha/config";
const AGENT_TOKEN: &str = "/k3s-asg/clusters/alpha/agent-token";
const DRAIN: &str = "/k3s-asg/clusters/alpha/kubeconfig/drain";
const PROBE: &str = "http://10.0.1.7:80/ping";

/// The sha256 of the cluster's CA bundle, as the secure token carries it.
fn ca_hash() -> String {
    "c0".repeat(32)
}

/// A spec whose node target groups are `groups` (plus a control-plane-only one).
fn spec(groups: &[(&str, u16)]) -> String {
    let mut tgs: Vec<serde_json::Value> = groups.iter().map(|(arn, port)| serde_json::json!({ "arn": arn, "port": port })).collect();
    tgs.push(serde_json::json!({ "arn": TG_CP, "port": 6443, "roles": ["control-plane"] }));
    serde_json::json!({
        "api": { "hostname": API, "hosted_zone_id": ZONE },
        "target_groups": tgs,
        "readiness": [{ "http": "http://{node_ip}:80/ping", "expect_status": 200, "roles": ["node"] }],
        "drain": { "timeout_s": 60, "grace_period_s": 30 }
    })
    .to_string()
}

/// Cluster `alpha`: two live servers behind the API name (group `alpha-servers`), and this
/// instance, a node of group `alpha-nodes` that has not joined yet; the agent token and the drain
/// kubeconfig published, the readiness probe answering 200.
fn alpha() -> Fake {
    let fake = Fake::default();
    fake.with(|w| {
        for (path, value) in [
            ("instance-id", NODE),
            ("placement/region", "us-east-1"),
            ("placement/availability-zone", "us-east-1a"),
            ("local-ipv4", NODE_IP),
            ("instance-type", "m6i.large"),
        ] {
            w.imds.insert(path.into(), value.into());
        }
        w.imds_tags = true;
        let tags = |role: &str, group: &str| {
            [("Cluster", "alpha"), ("Role", role), ("aws:autoscaling:groupName", group)].map(|(k, v)| (k.to_string(), v.to_string())).into()
        };
        let running = |ip: &str, tags| Instance { state: "running".into(), private_ip: Some(ip.into()), tags };
        w.instances.insert(NODE.into(), running(NODE_IP, tags("node", GROUP)));
        w.instances.insert(SERVER.into(), running(SERVER_IP, tags("control-plane", SERVERS)));
        w.instances.insert(SERVER2.into(), running(SERVER2_IP, tags("control-plane", SERVERS)));
        w.param(CONFIG, &spec(&[(TG_WEB, 80), (TG_GRPC, 8080)]), false);
        w.param(AGENT_TOKEN, &format!("K10{}::node:{}", ca_hash(), "ab".repeat(16)), true);
        w.param(DRAIN, "apiVersion: v1\nkind: Config\n# drain kubeconfig\n", true);
        let records = vec![RecordSet::api(ZONE, API, SERVER, SERVER_IP, 30), RecordSet::api(ZONE, API, SERVER2, SERVER2_IP, 30)];
        w.zones.insert(ZONE.into(), ("example.com".into(), records));
        for arn in [TG_WEB, TG_GRPC, TG_CP, TG_METRICS] {
            w.target_groups.insert(arn.into(), TargetGroup::default());
        }
        for server in [SERVER, SERVER2] {
            w.nodes.insert(server.into(), Node { ready: true, unschedulable: false, control_plane: true });
        }
        w.supervisors.insert(SERVER_IP.into(), ca_hash());
        w.supervisors.insert(SERVER2_IP.into(), ca_hash());
        w.probes.insert(PROBE.into(), 200);
        w.asg.insert(NODE.into(), (GROUP.into(), "InService".into()));
        for group in [GROUP, SERVERS] {
            let hook = WaitingHook { group: group.into(), hook: "drain".into(), heartbeat_timeout_s: 300, global_timeout_s: 30_000 };
            w.hooks.insert(group.into(), hook);
        }
    });
    fake
}

/// Short waits: a test that fails a wait fails it in a fraction of a second.
fn cfg(fake: &Fake) -> AgentConfig {
    AgentConfig {
        root: fake.root().to_path_buf(),
        join_timeout: Duration::from_millis(300),
        ready_timeout: Duration::from_millis(300),
        ..AgentConfig::default()
    }
}

fn state(fake: &Fake) -> State {
    State::read(&fake.fs()).expect("state file reads").expect("a state file")
}

fn steps(st: &State) -> Vec<StepName> {
    st.steps.iter().map(|s| s.name).collect()
}

/// (id, port) of the group's members, with their states.
fn members(fake: &Fake, arn: &str) -> Vec<(String, u16, TargetState)> {
    fake.with(|w| w.members(arn))
}

/// `alpha` after the node joined, with the call log emptied.
async fn joined() -> Fake {
    let fake = alpha();
    k3s_asg_agent::join::join(&cfg(&fake), &fake.effects()).await.expect("the node joins");
    fake.take_log();
    fake
}

#[tokio::test]
async fn a_node_joins_through_a_verified_server_and_takes_traffic_only_once_ready() {
    let fake = alpha();
    let st = k3s_asg_agent::join::join(&cfg(&fake), &fake.effects()).await.expect("the node joins");

    fake.expect_in_order(&[
        "imds:GET instance-id => i-0123456789abcdef0",
        "imds:GET tags/instance/Role => node",
        "ssm:GetParameters /k3s-asg/clusters/alpha/config,/k3s-asg/clusters/alpha/agent-token,/k3s-asg/clusters/alpha/kubeconfig/drain",
        "route53:ListResourceRecordSets Z0ALPHA api.alpha.example.com. A => [i-0aaaaaaaaaaaaaaa1,i-0bbbbbbbbbbbbbbb2]",
        "supervisor:verified_live 10.0.0.10 => true",
        "systemd:daemon-reload",
        "systemd:start k3s-agent",
        "k3s:kubectl get node/i-0123456789abcdef0 => Ready",
        "probe:GET http://10.0.1.7:80/ping => 200",
        &format!("elbv2:RegisterTargets {TG_WEB} {NODE}:80"),
        &format!("elbv2:RegisterTargets {TG_GRPC} {NODE}:8080"),
    ]);
    // Nothing reached a target group before k3s and the probes said the node can serve.
    let log = fake.log();
    let first_register = log.iter().position(|l| l.starts_with("elbv2:RegisterTargets")).unwrap();
    let last_probe = log.iter().rposition(|l| l.starts_with("probe:GET")).unwrap();
    assert!(last_probe < first_register, "registered before the probes passed:\n{}", log.join("\n"));
    assert_eq!(fake.calls("elbv2:RegisterTargets").len(), 2, "the control-plane group is not the node's");

    // What AWS and k3s hold.
    assert_eq!(members(&fake, TG_WEB), vec![(NODE.into(), 80, TargetState::Initial)]);
    assert_eq!(members(&fake, TG_GRPC), vec![(NODE.into(), 8080, TargetState::Initial)]);
    assert!(members(&fake, TG_CP).is_empty());
    assert!(fake.with(|w| w.active.contains("k3s-agent") && w.nodes[NODE].ready));

    // k3s's config: joins the verified server with the agent token, readable by root only.
    let path = fake.root().join("etc/rancher/k3s/config.yaml");
    let config = std::fs::read_to_string(&path).unwrap();
    assert!(config.contains("server: \"https://10.0.0.10:6443\"\n"), "{config}");
    assert!(config.contains(&format!("node-name: \"{NODE}\"\n")), "{config}");
    assert!(config.contains(&format!("token: \"K10{}::node:", ca_hash())), "{config}");
    assert!(!config.contains("cluster-init"), "{config}");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

    // The state file.
    assert_eq!(st, state(&fake));
    assert_eq!(st.phase, Phase::Ready);
    assert_eq!(st.target_groups, vec![format!("{TG_WEB}:80"), format!("{TG_GRPC}:8080")]);
    assert_eq!(steps(&st), StepName::join_steps(Role::Node));
}

#[tokio::test]
async fn a_second_join_changes_nothing() {
    let fake = joined().await;
    let config = fake.root().join("etc/rancher/k3s/config.yaml");
    let inode = std::fs::metadata(&config).unwrap().ino();

    let st = k3s_asg_agent::join::join(&cfg(&fake), &fake.effects()).await.expect("joins again");

    for change in ["systemd:start", "systemd:restart", "systemd:daemon-reload", "systemd:stop", "elbv2:RegisterTargets", "elbv2:DeregisterTargets"] {
        assert!(fake.calls(change).is_empty(), "a second join made {change}:\n{}", fake.log().join("\n"));
    }
    // It still looked: k3s Ready, the probes, the target groups.
    fake.expect_in_order(&["k3s:kubectl get node/i-0123456789abcdef0 => Ready", "probe:GET", &format!("elbv2:DescribeTargetHealth {TG_WEB}")]);
    assert_eq!(std::fs::metadata(&config).unwrap().ino(), inode, "config.yaml was rewritten");
    assert_eq!(members(&fake, TG_WEB), vec![(NODE.into(), 80, TargetState::Initial)]);
    assert_eq!(st.phase, Phase::Ready);
    assert_eq!(st.target_groups.len(), 2);
}

#[tokio::test]
async fn a_node_leaves_in_order_and_lets_its_group_terminate_it() {
    let fake = joined().await;
    fake.with(|w| w.asg.get_mut(NODE).unwrap().1 = "Terminating:Wait".into());

    let hurry = Default::default();
    k3s_asg_agent::leave::leave(&cfg(&fake), &fake.effects(), &hurry, Trigger::LifecycleTerminated).await.expect("leaves");

    fake.expect_in_order(&[
        "autoscaling:DescribeAutoScalingInstances i-0123456789abcdef0 => Terminating:Wait",
        &format!("elbv2:DeregisterTargets {TG_WEB} {NODE}:80"),
        &format!("elbv2:DeregisterTargets {TG_GRPC} {NODE}:8080"),
        // Connection draining waited out: reported draining, then gone.
        &format!("elbv2:DescribeTargetHealth {TG_WEB} => [{NODE}:80 draining]"),
        &format!("elbv2:DescribeTargetHealth {TG_WEB} => []"),
        &format!("elbv2:DescribeTargetHealth {TG_GRPC} => []"),
        "k3s:kubectl drain i-0123456789abcdef0 --grace-period=30 --timeout=60s (kubeconfig)",
        "k3s:kubectl delete node/i-0123456789abcdef0",
        "systemd:stop k3s-agent",
        "autoscaling:CompleteLifecycleAction alpha-nodes/drain i-0123456789abcdef0 CONTINUE",
    ]);
    // Nodes have no API record to remove.
    assert!(fake.calls("route53:ChangeResourceRecordSets").is_empty());

    assert!(members(&fake, TG_WEB).is_empty() && members(&fake, TG_GRPC).is_empty());
    fake.with(|w| {
        assert!(!w.nodes.contains_key(NODE), "the Node object is deleted");
        assert!(w.nodes.contains_key(SERVER), "only its own");
        assert!(!w.active.contains("k3s-agent"));
        assert_eq!(w.asg[NODE].1, "Terminating:Proceed");
    });
    let st = state(&fake);
    assert_eq!(st.phase, Phase::Left);
    assert!(st.target_groups.is_empty());
    let done = [StepName::Deregistered, StepName::Drained, StepName::NodeDeleted, StepName::K3sStopped, StepName::LifecycleCompleted];
    assert_eq!(steps(&st), done);

    // Run again (a restarted agent resuming): it looks, and changes nothing.
    fake.take_log();
    k3s_asg_agent::leave::leave(&cfg(&fake), &fake.effects(), &hurry, Trigger::Resume).await.expect("leaves again");
    for change in ["elbv2:DeregisterTargets", "k3s:kubectl drain", "k3s:kubectl delete", "systemd:stop", "autoscaling:CompleteLifecycleAction"] {
        assert!(fake.calls(change).is_empty(), "a second leave made {change}:\n{}", fake.log().join("\n"));
    }
    assert_eq!(state(&fake).trigger, Some(Trigger::LifecycleTerminated), "a resumed leave keeps the first trigger");
}

#[tokio::test]
async fn a_leave_before_any_join_touches_only_what_exists() {
    let fake = alpha();
    fake.with(|w| w.asg.get_mut(NODE).unwrap().1 = "Terminating:Wait".into());

    k3s_asg_agent::leave::leave(&cfg(&fake), &fake.effects(), &Default::default(), Trigger::LifecycleTerminated).await.expect("leaves");

    fake.expect_in_order(&[
        &format!("elbv2:DescribeTargetHealth {TG_WEB} => []"),
        &format!("elbv2:DescribeTargetHealth {TG_GRPC} => []"),
        "systemd:is-active k3s-agent => false",
        "autoscaling:CompleteLifecycleAction alpha-nodes/drain i-0123456789abcdef0 CONTINUE",
    ]);
    for absent in ["elbv2:DeregisterTargets", "k3s:", "systemd:stop", "route53:ChangeResourceRecordSets", "ssm:PutParameter"] {
        assert!(fake.calls(absent).is_empty(), "a leave that never joined made {absent}:\n{}", fake.log().join("\n"));
    }
    assert!(!fake.root().join("etc/rancher/k3s/config.yaml").exists());
    assert_eq!(fake.with(|w| w.asg[NODE].1.clone()), "Terminating:Proceed");
    let st = state(&fake);
    assert_eq!(st.phase, Phase::Left);
    assert_eq!(steps(&st), [StepName::Deregistered, StepName::K3sStopped, StepName::LifecycleCompleted]);
}

/// Cluster `alpha` seen from its server SERVER, which joined earlier: k3s runs, its API record
/// and registrations are in place, and SERVER2 stays.
fn alpha_from_a_server() -> Fake {
    let fake = alpha();
    fake.fs().write_if_changed("/etc/rancher/k3s/config.yaml", &format!("node-name: \"{SERVER}\"\nnode-ip: \"{SERVER_IP}\"\n"), 0o600).unwrap();
    fake.with(|w| {
        w.imds.insert("instance-id".into(), SERVER.into());
        w.imds.insert("local-ipv4".into(), SERVER_IP.into());
        w.active.insert("k3s".into());
        w.asg.insert(SERVER.into(), (SERVERS.into(), "Terminating:Wait".into()));
        for (arn, port) in [(TG_WEB, 80), (TG_CP, 6443)] {
            let member = k3s_asg_aws::targets::Member { id: SERVER.into(), port, state: TargetState::Healthy };
            w.target_groups.get_mut(arn).unwrap().members.push(member);
        }
    });
    fake
}

#[tokio::test]
async fn a_server_leaves_removing_only_its_own_api_record_before_its_etcd_member() {
    let fake = alpha_from_a_server();

    k3s_asg_agent::leave::leave(&cfg(&fake), &fake.effects(), &Default::default(), Trigger::LifecycleTerminated).await.expect("leaves");

    fake.expect_in_order(&[
        &format!("elbv2:DeregisterTargets {TG_WEB} {SERVER}:80"),
        &format!("elbv2:DeregisterTargets {TG_CP} {SERVER}:6443"),
        &format!("elbv2:DescribeTargetHealth {TG_CP} => []"),
        "route53:ChangeResourceRecordSets Z0ALPHA DELETE api.alpha.example.com. A (set i-0aaaaaaaaaaaaaaa1)",
        "k3s:kubectl drain i-0aaaaaaaaaaaaaaa1 --grace-period=30 --timeout=60s (local)",
        // The quorum guard asks etcd: the other server is a healthy voter.
        &format!("etcd:POST /v3/cluster/member/list via {SERVER_IP}"),
        "k3s:kubectl delete node/i-0aaaaaaaaaaaaaaa1",
        "systemd:stop k3s",
        "autoscaling:CompleteLifecycleAction alpha-servers/drain i-0aaaaaaaaaaaaaaa1 CONTINUE",
    ]);
    fake.with(|w| {
        let left: Vec<_> = w.zones[ZONE].1.iter().map(|r| r.set_identifier.clone().unwrap()).collect();
        assert_eq!(left, vec![SERVER2.to_string()], "only its own record goes");
        assert_eq!(w.nodes.keys().cloned().collect::<Vec<_>>(), vec![SERVER2.to_string()], "its Node (and etcd member) goes");
        assert!(!w.active.contains("k3s"));
    });
    assert!(members(&fake, TG_WEB).is_empty() && members(&fake, TG_CP).is_empty());
    let st = state(&fake);
    let done = [
        StepName::Deregistered,
        StepName::ApiRecordRemoved,
        StepName::Drained,
        StepName::NodeDeleted,
        StepName::K3sStopped,
        StepName::LifecycleCompleted,
    ];
    assert_eq!((st.phase, steps(&st)), (Phase::Left, done.to_vec()));
}

#[tokio::test]
async fn converge_follows_a_spec_that_adds_one_target_group_and_removes_another() {
    let fake = joined().await;
    fake.with(|w| w.param(CONFIG, &spec(&[(TG_WEB, 80), (TG_METRICS, 9100)]), false));

    k3s_asg_agent::converge::converge(&cfg(&fake), &fake.effects()).await.expect("converges");

    fake.expect_in_order(&[
        "ssm:GetParameters /k3s-asg/clusters/alpha/config,/k3s-asg/clusters/alpha/kubeconfig/drain",
        // The new group takes traffic before the removed one stops.
        &format!("elbv2:RegisterTargets {TG_METRICS} {NODE}:9100"),
        &format!("elbv2:DeregisterTargets {TG_GRPC} {NODE}:8080"),
        &format!("elbv2:DescribeTargetHealth {TG_GRPC} => [{NODE}:8080 draining]"),
        &format!("elbv2:DescribeTargetHealth {TG_GRPC} => []"),
    ]);
    assert!(fake.log().iter().all(|l| !l.contains(TG_WEB)), "the kept group is left alone:\n{}", fake.log().join("\n"));
    assert_eq!(members(&fake, TG_METRICS), vec![(NODE.into(), 9100, TargetState::Initial)]);
    assert!(members(&fake, TG_GRPC).is_empty());
    assert_eq!(members(&fake, TG_WEB), vec![(NODE.into(), 80, TargetState::Initial)]);
    assert_eq!(state(&fake).target_groups, vec![format!("{TG_WEB}:80"), format!("{TG_METRICS}:9100")]);

    // Converged: another look changes nothing.
    fake.take_log();
    k3s_asg_agent::converge::converge(&cfg(&fake), &fake.effects()).await.expect("converges again");
    assert!(fake.calls("elbv2:").is_empty(), "{:?}", fake.log());
}

#[tokio::test]
async fn a_node_whose_readiness_probe_fails_never_takes_traffic() {
    let fake = alpha();
    fake.with(|w| w.probes.insert(PROBE.into(), 503));

    let started = std::time::Instant::now();
    let err = k3s_asg_agent::join::join(&cfg(&fake), &fake.effects()).await.expect_err("the probe never passes");

    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    let text = err.to_string();
    assert!(text.starts_with("wait for readiness (i-0123456789abcdef0)"), "{text}");
    assert!(text.contains("readiness[0] http://10.0.1.7:80/ping answered 503 (expected 200)"), "{text}");
    assert_eq!(err.exit_code(), 1);
    // k3s runs (the probes gate traffic, not k3s); nothing is registered.
    fake.expect_in_order(&[
        "systemd:start k3s-agent",
        "k3s:kubectl get node/i-0123456789abcdef0 => Ready",
        "probe:GET http://10.0.1.7:80/ping => 503",
    ]);
    assert!(fake.calls("elbv2:RegisterTargets").is_empty());
    assert!(members(&fake, TG_WEB).is_empty() && members(&fake, TG_GRPC).is_empty());
    let st = state(&fake);
    assert_eq!(st.phase, Phase::Joining);
    assert_eq!(steps(&st).last(), Some(&StepName::Ready), "{:?}", steps(&st));
    assert!(st.target_groups.is_empty());
}

#[tokio::test]
async fn a_node_never_joins_a_server_that_cannot_prove_the_cluster_ca() {
    let fake = alpha();
    fake.with(|w| {
        w.supervisors.insert(SERVER_IP.into(), "ee".repeat(32));
        w.supervisors.remove(SERVER2_IP);
    });

    let err = k3s_asg_agent::join::join(&cfg(&fake), &fake.effects()).await.expect_err("no trusted server");

    let text = err.to_string();
    assert!(text.contains("no live server with the cluster's CA among 2 API record(s) of api.alpha.example.com"), "{text}");
    fake.expect_in_order(&["supervisor:verified_live 10.0.0.10 => false", "supervisor:verified_live 10.0.0.11 => false"]);
    assert!(fake.calls("systemd:").is_empty(), "k3s must not start: {:?}", fake.log());
    assert!(!fake.root().join("etc/rancher/k3s/config.yaml").exists(), "no config naming an untrusted server");
    assert!(fake.calls("elbv2:RegisterTargets").is_empty());
}
