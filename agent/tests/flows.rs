//! The agent's join driven through in-memory fakes of every effect
//! (`fake`): no moto, no programs on PATH, no sockets. Each test seeds a world, runs the agent's
//! public entry point, and states the calls that must have come, in order, and what AWS, k3s,
//! the files and the state file hold afterwards.

mod fake;

use fake::{Fake, Instance, Node, TargetGroup};
use k3s_asg_agent::config::AgentConfig;
use k3s_asg_agent::effects::lifecycle::WaitingHook;
use k3s_asg_agent::state::{Phase, State, StepName};
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
