//! The IAM policies in packaging/iam/ are sufficient: join, leave and a
//! coordinator apply pass against moto with IAM enforcement on, each program
//! signing as an IAM user that holds only its role's policy's actions (control
//! plane, node, coordinator), and every call they made, with its resources and
//! condition values, is allowed by the role's policy rendered for the cluster
//! (evaluated offline by tests/tools/iam_eval; the denials are proven there too).
//!
//! What moto checks: the action of each call and the request's SigV4
//! signature. What it does not: the Resource and Condition elements (a
//! statement scoped to an ARN never matches in moto, and conditions see no
//! context), so each user gets the policy's actions with `Resource: "*"`; the
//! scoping itself is linted by parliament (packaging/iam_policies.rs). Auto Scaling lifecycle
//! calls go to the test bed's double, which checks nothing. moto's signature
//! check rejects every Route53 call (boto3's too), so Route53 lives in a second,
//! unenforced moto here, and its calls are checked against the policies'
//! actions from the recording proxy's log instead.

use k3s_asg_testbed::check::ok;
use k3s_asg_testbed::world::World;
use std::collections::BTreeSet;

/// Every action an Allow statement of a policy file grants.
fn actions_of(policy_file: &str) -> BTreeSet<String> {
    let path = k3s_asg_testbed::repo_root().join("packaging/iam").join(policy_file);
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut actions = BTreeSet::new();
    for st in doc["Statement"].as_array().unwrap() {
        if st["Effect"] != "Allow" {
            continue;
        }
        match &st["Action"] {
            serde_json::Value::String(a) => {
                actions.insert(a.clone());
            }
            serde_json::Value::Array(list) => actions.extend(list.iter().map(|a| a.as_str().unwrap().to_string())),
            other => panic!("{policy_file}: Action {other}"),
        }
    }
    actions
}

/// The policy as moto can evaluate it: the same actions, on every resource, no conditions.
fn actions_only(actions: &BTreeSet<String>) -> String {
    serde_json::json!({ "Version": "2012-10-17", "Statement": [{ "Effect": "Allow", "Action": actions, "Resource": "*" }] }).to_string()
}

/// Creates an IAM user in moto holding `policy`; returns its access key (id, secret).
fn iam_user(moto_url: &str, name: &str, policy: &str) -> (String, String) {
    let script = r#"
import boto3, json, sys
iam = boto3.client("iam", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="testbed", aws_secret_access_key="testbed")
iam.create_user(UserName=sys.argv[2])
iam.put_user_policy(UserName=sys.argv[2], PolicyName="k3s-asg", PolicyDocument=sys.argv[3])
k = iam.create_access_key(UserName=sys.argv[2])["AccessKey"]
print(json.dumps([k["AccessKeyId"], k["SecretAccessKey"]]))
"#;
    let python = k3s_asg_testbed::repo_root().join(".venv/bin/python");
    let out = std::process::Command::new(python).args(["-c", script, moto_url, name, policy]).output().expect("run the venv's python");
    assert!(out.status.success(), "create IAM user {name}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Turns moto's IAM enforcement on (`0` unauthenticated calls left) or off (`inf`).
async fn enforce(moto_url: &str, count: &str) {
    reqwest::Client::new().post(format!("{moto_url}/moto-api/reset-auth")).body(count.to_string()).send().await.unwrap().error_for_status().unwrap();
}

fn credentials(key: &(String, String)) -> [(String, String); 2] {
    [("AWS_ACCESS_KEY_ID".into(), key.0.clone()), ("AWS_SECRET_ACCESS_KEY".into(), key.1.clone())]
}

/// Renders a policy template of packaging/iam with the test bed's own values into `dir`.
fn render(dir: &std::path::Path, template: &str, vars: &serde_json::Value) -> std::path::PathBuf {
    let root = k3s_asg_testbed::repo_root();
    let vars_file = dir.join("vars.json");
    std::fs::write(&vars_file, vars.to_string()).unwrap();
    let out = dir.join(template.replace(".json.tftpl", ".json"));
    let run = std::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/tools/iam_eval/render.py"))
        .arg(root.join("packaging/iam").join(template))
        .arg("--vars")
        .arg(&vars_file)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "render {template}: {}", String::from_utf8_lossy(&run.stderr));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_and_apply_pass_with_only_the_policies_actions() {
    let mut w = World::with_separate_route53().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    let tg = w.clusters["alpha"].target_group_arn.clone();
    let (_alb, listener) = w.create_alb(443, 100).await.unwrap();
    w.put_endpoint("blog", serde_json::json!({ "hostname": "blog.example.com", "clusters": { "alpha": 1 } })).await.unwrap();
    let cp = w.launch("alpha", "control-plane").await.unwrap();
    let node = w.launch("alpha", "node").await.unwrap();

    let moto = w.moto.url();
    let control_plane = actions_of("examples/control-plane-policy.json");
    let node_policy = actions_of("examples/node-policy.json");
    let coordinator = actions_of("examples/coordinator-policy.json");
    let cp_key = iam_user(&moto, "k3s-asg-control-plane", &actions_only(&control_plane));
    let node_key = iam_user(&moto, "k3s-asg-node", &actions_only(&node_policy));
    let coordinator_key = iam_user(&moto, "k3s-asg-coordinator", &actions_only(&coordinator));
    // Controls: one action short each, to show enforcement is really on.
    let mut short = control_plane.clone();
    assert!(short.remove("ssm:GetParameters"));
    let agent_short = iam_user(&moto, "agent-short", &actions_only(&short));
    let mut short = coordinator.clone();
    assert!(short.remove("elasticloadbalancing:CreateRule"));
    let coordinator_short = iam_user(&moto, "coordinator-short", &actions_only(&short));

    enforce(&moto, "0").await;
    w.agent_env.extend(credentials(&agent_short));
    let denied = w.agent(&cp, &["join"]).await.unwrap();
    assert_ne!(denied.code, 0, "a join without ssm:GetParameters must fail:\n{}", denied.stderr);
    assert!(denied.stderr.contains("ssm:GetParameters") && denied.stderr.contains("AccessDenied"), "{}", denied.stderr);
    w.coordinator_env.extend(credentials(&coordinator_short));
    let denied = w.coordinator(&["apply"]).await.unwrap();
    assert_ne!(denied.code, 0, "an apply without CreateRule must fail:\n{}", denied.stderr);
    assert!(denied.stderr.contains("CreateRule") && denied.stderr.contains("AccessDenied"), "{}", denied.stderr);

    w.recorder.clear();
    w.agent_env.extend(credentials(&cp_key));
    ok(&w.agent(&cp, &["join"]).await.unwrap());
    w.agent_env.extend(credentials(&node_key));
    ok(&w.agent(&node, &["join"]).await.unwrap());
    w.coordinator_env.extend(credentials(&coordinator_key));
    ok(&w.coordinator(&["apply"]).await.unwrap());
    ok(&w.agent(&node, &["leave"]).await.unwrap());
    enforce(&moto, "inf").await;

    // The work was done, as the policies' users.
    assert_eq!(w.members(&tg).await.unwrap(), vec![cp.id.clone()]);
    assert_eq!(w.api_records("alpha").await.unwrap().len(), 1);
    let hosts = w.rule_hosts(&listener).await.unwrap();
    assert!(hosts.contains(&"blog.example.com".to_string()), "{hosts:?}");
    let calls = w.recorder.calls();
    let callers: BTreeSet<String> = calls.iter().map(|c| c.caller.clone()).collect();
    assert!(callers.contains(&cp_key.0) && callers.contains(&node_key.0) && callers.contains(&coordinator_key.0), "{callers:?}");
    // The node joined with the agent token and never asked for the server token.
    let config = node.file("/etc/rancher/k3s/config.yaml").unwrap();
    assert!(config.contains("::node:") && !config.contains("::server:"), "{config}");
    assert!(
        !calls.iter().any(|c| c.caller == node_key.0 && (c.body.contains("/clusters/alpha/token\"") || c.body.contains("kubeconfig/admin"))),
        "a node asked for the server token or the admin kubeconfig"
    );

    // Proof by evaluation: every call each program made (with its real resource ARNs and
    // condition values: parameter names, target group ARNs, the record names, types and actions
    // of each change batch) is allowed by its role's policy rendered for this cluster.
    let dir = tempfile::tempdir().unwrap();
    let c = &w.clusters["alpha"];
    let rule_arns = vec![listener.replace(":listener/", ":listener-rule/") + "/*"];
    let vars = serde_json::json!({
        "partition": "aws", "region": "us-east-1", "account_id": "123456789012", "dns_suffix": "amazonaws.com",
        "prefix": "/k3s-asg", "cluster": "alpha", "cluster_tag": "Cluster", "role_tag": "Role",
        "hosted_zone_id": c.zone_id, "api_hostname": c.hostname, "target_group_arns": [tg],
        "owner": "k3s-asg", "listener_arns": [listener], "listener_rule_arns": rule_arns,
        "hosted_zone_arns": [format!("arn:aws:route53:::hostedzone/{}", c.zone_id)],
        "bucket": "k3s-asg-snapshots", "folder": "clusters/alpha",
    });
    let cp_policy = render(dir.path(), "control-plane-policy.json.tftpl", &vars);
    let node_file = render(dir.path(), "node-policy.json.tftpl", &vars);
    let coordinator_file = render(dir.path(), "coordinator-policy.json.tftpl", &vars);
    let capture = dir.path().join("capture.jsonl");
    let n = w.recorder.write_capture(&capture, &[&cp_key.0, &node_key.0, &coordinator_key.0]).unwrap();
    assert!(n > 20, "{n} calls captured");
    let root = k3s_asg_testbed::repo_root();
    assert!(std::process::Command::new(root.join("scripts/setup-iam-eval")).status().unwrap().success());
    let check = std::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/tools/iam_eval/capture_check.py"))
        .arg(&capture)
        .arg("--caller")
        .arg(format!("{}={}", cp_key.0, cp_policy.display()))
        .arg("--caller")
        .arg(format!("{}={}", node_key.0, node_file.display()))
        .arg("--caller")
        .arg(format!("{}={}", coordinator_key.0, coordinator_file.display()))
        .output()
        .unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(check.status.success(), "a call was not allowed by its role's policy:\n{report}");
    println!("{report}");
    k3s_asg_testbed::reliability::held(
        "Least privilege",
        "join (server, node), leave (node) and coordinator apply under moto's IAM enforcement, one user per role holding only its policy's actions",
        1,
        "all exit 0; a user one action short is refused (AccessDenied); the node joins with the agent token and never asks for the server token; every captured call (real ARNs and condition values) is allowed by its role's policy rendered for the cluster, by evaluation (tests/tools/iam_eval)",
    );
}
