//! The IAM policies in packaging/iam/ are sufficient: join, leave and a
//! coordinator apply pass against moto with IAM enforcement on, each program
//! signing as an IAM user that holds only its policy's actions.
//!
//! What moto checks: the action of each call and the request's SigV4
//! signature. What it does not: the Resource and Condition elements (a
//! statement scoped to an ARN never matches in moto, and conditions see no
//! context), so each user gets the policy's actions with `Resource: "*"`; the
//! scoping itself is linted by parliament (packaging.rs). Auto Scaling lifecycle
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
    let agent = actions_of("agent-policy.json");
    let coordinator = actions_of("coordinator-policy.json");
    let agent_key = iam_user(&moto, "k3s-asg-agent", &actions_only(&agent));
    let coordinator_key = iam_user(&moto, "k3s-asg-coordinator", &actions_only(&coordinator));
    // Controls: one action short each, to show enforcement is really on.
    let mut short = agent.clone();
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

    w.agent_env.extend(credentials(&agent_key));
    ok(&w.agent(&cp, &["join"]).await.unwrap());
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
    assert!(callers.contains(&agent_key.0) && callers.contains(&coordinator_key.0), "{callers:?}");
    // Route53, outside moto's enforcement: every call was one the caller's policy allows.
    let mut route53 = 0;
    for c in calls.iter().filter(|c| c.service == "route53") {
        let action = format!("route53:{}", c.operation);
        let allowed = if c.caller == agent_key.0 {
            &agent
        } else if c.caller == coordinator_key.0 {
            &coordinator
        } else {
            continue;
        };
        assert!(allowed.contains(&action), "{} called {action}, which its policy lacks", c.caller);
        route53 += 1;
    }
    assert!(route53 > 0, "Route53 calls were made and checked");
    k3s_asg_testbed::reliability::held(
        "Least privilege",
        "join (server, node), leave (node) and coordinator apply under moto's IAM enforcement, as users holding only their policy's actions",
        1,
        "all exit 0; a user one action short is refused (AccessDenied) for the agent and the coordinator; every Route53 call was an allowed action",
    );
}
