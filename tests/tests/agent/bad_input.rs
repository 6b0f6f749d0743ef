//! Bad input stops the agent with exit 2 and a message naming the tag,
//! parameter or field, before anything is changed in AWS or on disk.

use k3s_asg_testbed::world::World;

const HELD_AGENT: &str = "exit 2, 0 mutating AWS calls, nothing under /etc, no systemctl/k3s";

struct Case {
    name: &'static str,
    tags: &'static [(&'static str, &'static str)],
    spec: Option<&'static str>,
    expect: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case { name: "missing Cluster tag", tags: &[("Role", "node")], spec: None, expect: &["tag \"Cluster\"", "missing"] },
    Case { name: "missing Role tag", tags: &[("Cluster", "alpha")], spec: None, expect: &["tag \"Role\"", "missing"] },
    Case {
        name: "unknown role",
        tags: &[("Cluster", "alpha"), ("Role", "worker")],
        spec: None,
        expect: &["tag \"Role\"", "\"worker\" is not a role"],
    },
    Case {
        name: "bad cluster name",
        tags: &[("Cluster", "Alpha_1"), ("Role", "node")],
        spec: None,
        expect: &["tag \"Cluster\"", "not a valid cluster name"],
    },
    Case {
        name: "cluster without spec",
        tags: &[("Cluster", "ghost"), ("Role", "node")],
        spec: None,
        expect: &["/k3s-asg/clusters/ghost/config", "does not exist"],
    },
    Case {
        name: "spec with wrong type",
        tags: &[("Cluster", "alpha"), ("Role", "control-plane")],
        spec: Some(r#"{"api":{"hostname":"api.alpha.example.com","hosted_zone_id":"Z1","ttl":"thirty"}}"#),
        expect: &["/k3s-asg/clusters/alpha/config", "field `api.ttl`"],
    },
    Case {
        name: "spec with unknown field",
        tags: &[("Cluster", "alpha"), ("Role", "node")],
        spec: Some(r#"{"api":{"hostname":"api.alpha.example.com","hosted_zone_id":"Z1"},"target_group":[]}"#),
        expect: &["/k3s-asg/clusters/alpha/config", "unknown field `target_group`"],
    },
    Case {
        name: "spec setting an agent-owned k3s key",
        tags: &[("Cluster", "alpha"), ("Role", "control-plane")],
        spec: Some(r#"{"api":{"hostname":"api.alpha.example.com","hosted_zone_id":"Z1"},"k3s":{"server":{"cluster-init":true}}}"#),
        expect: &["field `k3s.server.cluster-init`"],
    },
    Case {
        name: "spec with a non-k3s flag",
        tags: &[("Cluster", "alpha"), ("Role", "node")],
        spec: Some(r#"{"api":{"hostname":"api.alpha.example.com","hosted_zone_id":"Z1"},"k3s":{"agent":{"no-such-flag":1}}}"#),
        expect: &["field `k3s.agent.no-such-flag`", "not a flag of `k3s agent`"],
    },
    Case {
        name: "spec with an invalid hostname",
        tags: &[("Cluster", "alpha"), ("Role", "node")],
        spec: Some(r#"{"api":{"hostname":"api_alpha","hosted_zone_id":"Z1"}}"#),
        expect: &["field `api.hostname`"],
    },
    Case {
        name: "spec that is not JSON",
        tags: &[("Cluster", "alpha"), ("Role", "node")],
        spec: Some("api: yaml-is-not-json"),
        expect: &["/k3s-asg/clusters/alpha/config", "(document)"],
    },
    Case { name: "empty Cluster tag", tags: &[("Cluster", ""), ("Role", "node")], spec: None, expect: &["tag \"Cluster\"", "empty"] },
    Case {
        name: "Cluster tag too long",
        tags: &[("Cluster", "a234567890123456789012345678901234567890123456789012345678901234"), ("Role", "node")],
        spec: None,
        expect: &["tag \"Cluster\"", "63"],
    },
    Case { name: "Cluster tag with a space", tags: &[("Cluster", "al pha"), ("Role", "node")], spec: None, expect: &["tag \"Cluster\""] },
    Case {
        name: "Cluster tag starting with '-'",
        tags: &[("Cluster", "-alpha"), ("Role", "node")],
        spec: None,
        expect: &["tag \"Cluster\"", "start or end"],
    },
    Case { name: "empty Role tag", tags: &[("Cluster", "alpha"), ("Role", "")], spec: None, expect: &["tag \"Role\"", "not a role"] },
    Case {
        name: "Role tag in the wrong case",
        tags: &[("Cluster", "alpha"), ("Role", "Control-Plane")],
        spec: None,
        expect: &["tag \"Role\"", "\"Control-Plane\""],
    },
    Case { name: "spec is a JSON array", tags: &[("Cluster", "alpha"), ("Role", "node")], spec: Some("[1,2]"), expect: &["(document)"] },
    Case {
        name: "spec without api",
        tags: &[("Cluster", "alpha"), ("Role", "node")],
        spec: Some(r#"{"target_groups":[]}"#),
        expect: &["missing field `api`"],
    },
    Case {
        name: "ttl above Route53's limit",
        tags: &[("Cluster", "alpha"), ("Role", "node")],
        spec: Some(r#"{"api":{"hostname":"api.alpha.example.com","hosted_zone_id":"Z1","ttl":200000}}"#),
        expect: &["field `api.ttl`"],
    },
    Case {
        name: "lower-case zone id",
        tags: &[("Cluster", "alpha"), ("Role", "node")],
        spec: Some(r#"{"api":{"hostname":"api.alpha.example.com","hosted_zone_id":"z1"}}"#),
        expect: &["field `api.hosted_zone_id`"],
    },
    Case {
        name: "unknown address kind",
        tags: &[("Cluster", "alpha"), ("Role", "node")],
        spec: Some(r#"{"api":{"hostname":"api.alpha.example.com","hosted_zone_id":"Z1","address":"elastic"}}"#),
        expect: &["field `api.address`"],
    },
    Case {
        name: "wildcard API hostname",
        tags: &[("Cluster", "alpha"), ("Role", "node")],
        spec: Some(r#"{"api":{"hostname":"*.alpha.example.com","hosted_zone_id":"Z1"}}"#),
        expect: &["field `api.hostname`"],
    },
    Case {
        name: "target group port 0",
        tags: &[("Cluster", "alpha"), ("Role", "node")],
        spec: Some(
            r#"{"api":{"hostname":"api.alpha.example.com","hosted_zone_id":"Z1"},"target_groups":[{"arn":"arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/a/1","port":0}]}"#,
        ),
        expect: &["field `target_groups[0].port`"],
    },
    Case {
        name: "target group port out of range",
        tags: &[("Cluster", "alpha"), ("Role", "node")],
        spec: Some(
            r#"{"api":{"hostname":"api.alpha.example.com","hosted_zone_id":"Z1"},"target_groups":[{"arn":"arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/a/1","port":70000}]}"#,
        ),
        expect: &["field `target_groups[0].port`"],
    },
    Case {
        name: "target group with no roles",
        tags: &[("Cluster", "alpha"), ("Role", "node")],
        spec: Some(
            r#"{"api":{"hostname":"api.alpha.example.com","hosted_zone_id":"Z1"},"target_groups":[{"arn":"arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/a/1","port":80,"roles":[]}]}"#,
        ),
        expect: &["field `target_groups[0].roles`"],
    },
    Case {
        name: "target group with an unknown role",
        tags: &[("Cluster", "alpha"), ("Role", "node")],
        spec: Some(
            r#"{"api":{"hostname":"api.alpha.example.com","hosted_zone_id":"Z1"},"target_groups":[{"arn":"arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/a/1","port":80,"roles":["worker"]}]}"#,
        ),
        expect: &["field `target_groups[0].roles[0]`"],
    },
    Case {
        name: "a load balancer ARN where a target group belongs",
        tags: &[("Cluster", "alpha"), ("Role", "node")],
        spec: Some(
            r#"{"api":{"hostname":"api.alpha.example.com","hosted_zone_id":"Z1"},"target_groups":[{"arn":"arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/x/1","port":80}]}"#,
        ),
        expect: &["field `target_groups[0].arn`"],
    },
    Case {
        name: "two ingress groups",
        tags: &[("Cluster", "alpha"), ("Role", "node")],
        spec: Some(
            r#"{"api":{"hostname":"api.alpha.example.com","hosted_zone_id":"Z1"},"target_groups":[{"arn":"arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/a/1","port":80,"ingress":true},{"arn":"arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/b/2","port":81,"ingress":true}]}"#,
        ),
        expect: &["field `target_groups`", "ingress"],
    },
    Case {
        name: "readiness status that is not HTTP",
        tags: &[("Cluster", "alpha"), ("Role", "node")],
        spec: Some(
            r#"{"api":{"hostname":"api.alpha.example.com","hosted_zone_id":"Z1"},"readiness":[{"http":"http://127.0.0.1/ping","expect_status":42}]}"#,
        ),
        expect: &["field `readiness[0].expect_status`"],
    },
    Case {
        name: "k3s list flag given a number",
        tags: &[("Cluster", "alpha"), ("Role", "control-plane")],
        spec: Some(r#"{"api":{"hostname":"api.alpha.example.com","hosted_zone_id":"Z1"},"k3s":{"server":{"disable":5}}}"#),
        expect: &["field `k3s.server.disable`"],
    },
    Case {
        name: "k3s flag given an object",
        tags: &[("Cluster", "alpha"), ("Role", "control-plane")],
        spec: Some(r#"{"api":{"hostname":"api.alpha.example.com","hosted_zone_id":"Z1"},"k3s":{"server":{"cluster-cidr":{"v4":"10.0.0.0/16"}}}}"#),
        expect: &["field `k3s.server.cluster-cidr`"],
    },
    Case {
        name: "k3s server setting the node name",
        tags: &[("Cluster", "alpha"), ("Role", "control-plane")],
        spec: Some(r#"{"api":{"hostname":"api.alpha.example.com","hosted_zone_id":"Z1"},"k3s":{"server":{"node-name":"x"}}}"#),
        expect: &["field `k3s.server.node-name`", "set by the agent"],
    },
    Case {
        name: "drain timeout 0",
        tags: &[("Cluster", "alpha"), ("Role", "node")],
        spec: Some(r#"{"api":{"hostname":"api.alpha.example.com","hosted_zone_id":"Z1"},"drain":{"timeout_s":0}}"#),
        expect: &["field `drain.timeout_s`"],
    },
    Case {
        name: "drain timeout beyond an hour",
        tags: &[("Cluster", "alpha"), ("Role", "node")],
        spec: Some(r#"{"api":{"hostname":"api.alpha.example.com","hosted_zone_id":"Z1"},"drain":{"timeout_s":5000}}"#),
        expect: &["field `drain.timeout_s`"],
    },
    Case {
        name: "negative drain grace period",
        tags: &[("Cluster", "alpha"), ("Role", "node")],
        spec: Some(r#"{"api":{"hostname":"api.alpha.example.com","hosted_zone_id":"Z1"},"drain":{"grace_period_s":-1}}"#),
        expect: &["field `drain.grace_period_s`"],
    },
    Case {
        name: "a node label the kubelet refuses",
        tags: &[("Cluster", "alpha"), ("Role", "node")],
        spec: Some(
            r#"{"api":{"hostname":"api.alpha.example.com","hosted_zone_id":"Z1"},"k3s":{"agent":{"node-label":["pool=web","node-role.kubernetes.io/worker=true"]}}}"#,
        ),
        expect: &["field `k3s.agent.node-label[1]`", "node-role.kubernetes.io/worker", "kubelet refuses"],
    },
];

/// Runs `join` on `inst` and checks it is refused as bad input: exit 2, the last line names what
/// `expect` lists, no mutating AWS call, nothing under /etc, no systemctl/k3s.
async fn join_is_refused(w: &World, inst: &k3s_asg_testbed::world::Instance, name: &str, expect: &[&str], area: &str) {
    w.recorder.clear();
    let run = w.agent(inst, &["join"]).await.unwrap();
    assert_eq!(run.code, 2, "{name}: exit {} stderr:\n{}", run.code, run.stderr);
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("k3s-asg-agent: error: "), "{name}: {last}");
    for e in expect {
        assert!(last.contains(e), "{name}: expected {e:?} in {last:?}");
    }
    let mutating: Vec<_> = w.recorder.calls().into_iter().filter(|c| c.is_mutating()).collect();
    assert!(mutating.is_empty(), "{name}: mutating calls {mutating:?}");
    assert!(!inst.path("/etc").exists(), "{name}: wrote under /etc");
    assert!(inst.stub_calls().is_empty(), "{name}: ran systemctl/k3s");
    k3s_asg_testbed::reliability::held(area, name, 1, &format!("{HELD_AGENT}: `{last}`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_exits_2_names_the_culprit_and_changes_nothing() {
    let w = World::with_cluster("alpha").await.unwrap();
    let good_spec = w.default_spec(&w.clusters["alpha"]).to_string();
    for case in CASES {
        w.put_spec("alpha", case.spec.unwrap_or(&good_spec)).await.unwrap();
        let inst = w.launch_tagged(case.tags, Some("alpha")).await.unwrap();
        join_is_refused(&w, &inst, case.name, case.expect, "Bad input: agent tags and cluster spec").await;
    }
    assert!(w.param("/k3s-asg/clusters/alpha/token").await.unwrap().is_none());
    assert!(CASES.len() >= 30, "the corpus has {} cases", CASES.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_teaches_and_bad_flags_exit_2() {
    let out = std::process::Command::new(k3s_asg_testbed::world::agent_bin()).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for word in ["join", "leave", "status", "run", "--root", "Exit codes"] {
        assert!(text.contains(word), "--help lacks {word}:\n{text}");
    }
    let out = std::process::Command::new(k3s_asg_testbed::world::agent_bin()).args(["--prefix", "nope", "status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--prefix"));
}

/// What a bad-environment case breaks before the agent runs.
enum Break {
    /// IMDS answers this value (None: 404) for a path under /latest/meta-data/.
    Imds(&'static str, Option<&'static str>),
    /// IMDS accepts connections and never answers.
    ImdsSilent,
    /// Nothing listens where IMDS should be.
    ImdsRefused,
    /// ssm:GetParameters answers this error code and message.
    Ssm(&'static str, &'static str),
    /// The join token exists as a plain String parameter.
    TokenNotSecure,
}

struct EnvCase {
    name: &'static str,
    breaks: Break,
    expect: &'static [&'static str],
}

const KMS_DENIED: &str =
    "The ciphertext refers to a customer master key that does not exist, does not exist in this region, or you are not allowed to access.";

const ENV_CASES: &[EnvCase] = &[
    EnvCase { name: "IMDS: instance-id 404", breaks: Break::Imds("instance-id", None), expect: &["/latest/meta-data/instance-id", "404"] },
    EnvCase {
        name: "IMDS: instance-id garbage",
        breaks: Break::Imds("instance-id", Some("hello")),
        expect: &["/latest/meta-data/instance-id", "not an instance id"],
    },
    EnvCase {
        name: "IMDS: HTML where a value should be",
        breaks: Break::Imds("instance-id", Some("<html><body>proxy login</body></html>")),
        expect: &["/latest/meta-data/instance-id", "not a metadata value"],
    },
    EnvCase { name: "IMDS: region garbage", breaks: Break::Imds("placement/region", Some("Mars")), expect: &["/latest/meta-data/placement/region"] },
    EnvCase {
        name: "IMDS: zone of another region",
        breaks: Break::Imds("placement/availability-zone", Some("eu-west-1a")),
        expect: &["/latest/meta-data/placement/availability-zone", "not an availability zone of us-east-1"],
    },
    EnvCase { name: "IMDS: local-ipv4 404", breaks: Break::Imds("local-ipv4", None), expect: &["/latest/meta-data/local-ipv4", "404"] },
    EnvCase {
        name: "IMDS: local-ipv4 garbage",
        breaks: Break::Imds("local-ipv4", Some("10.0.0.300")),
        expect: &["/latest/meta-data/local-ipv4", "not an IPv4 address"],
    },
    EnvCase { name: "IMDS: never answers", breaks: Break::ImdsSilent, expect: &["/latest/meta-data/placement/region", "IMDS did not answer"] },
    EnvCase { name: "IMDS: connection refused", breaks: Break::ImdsRefused, expect: &["/latest/meta-data/placement/region", "IMDS did not answer"] },
    EnvCase {
        name: "SSM: not decryptable (KMS access denied)",
        breaks: Break::Ssm("AccessDeniedException", KMS_DENIED),
        expect: &["/k3s-asg/clusters/alpha/agent-token", "AccessDeniedException", "kms:Decrypt"],
    },
    EnvCase {
        name: "SSM: KMS key gone",
        breaks: Break::Ssm("InvalidKeyId", "Key is disabled or does not exist"),
        expect: &["/k3s-asg/clusters/alpha/config", "InvalidKeyId"],
    },
    EnvCase { name: "SSM: token of the wrong type", breaks: Break::TokenNotSecure, expect: &["/k3s-asg/clusters/alpha/token", "not a SecureString"] },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_metadata_and_parameters_exit_2_and_change_nothing() {
    let mut w = World::with_cluster("alpha").await.unwrap();
    // A listener that accepts and never answers, and a port nobody listens on.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            open.push(sock);
        }
    });
    let refused_url = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for case in ENV_CASES {
        let inst = w.launch("alpha", "node").await.unwrap();
        w.agent_env.remove("AWS_EC2_METADATA_SERVICE_ENDPOINT");
        w.recorder.clear_scripted();
        match &case.breaks {
            Break::Imds(path, value) => inst.imds.set(path, *value),
            Break::ImdsSilent => {
                w.agent_env.insert("AWS_EC2_METADATA_SERVICE_ENDPOINT".into(), silent_url.clone());
            }
            Break::ImdsRefused => {
                w.agent_env.insert("AWS_EC2_METADATA_SERVICE_ENDPOINT".into(), refused_url.clone());
            }
            Break::Ssm(code, message) => w.recorder.answer_with_error("GetParameters", 400, code, message),
            Break::TokenNotSecure => w.put_param("/k3s-asg/clusters/alpha/token", "K10abc::server:plaintext").await.unwrap(),
        }
        join_is_refused(&w, &inst, case.name, case.expect, "Bad input: IMDS and SSM").await;
        if matches!(case.breaks, Break::TokenNotSecure) {
            w.ssm.delete_parameter().name("/k3s-asg/clusters/alpha/token").send().await.unwrap();
        }
    }
    held.abort();
    assert!(CASES.len() + ENV_CASES.len() >= 45);
}
