//! The IAM policies of packaging/iam/: linted by parliament, granting every operation the
//! code calls, and denying what they must by evaluation. (At run time, under moto's IAM
//! enforcement: the `iam` test binary.)

use std::process::Command;

/// parliament's findings for a policy, less two known false positives: it asks
/// ELBv2 rule actions to match NLB (`/net/`) ARN formats too, but listener rules
/// exist only on ALBs, so granting NLB ARNs would only widen the policy; and it
/// knows only classic ELB's `AddTags`, so ELBv2's documented tag-on-create key
/// `elasticloadbalancing:CreateAction` looks unknown to it.
fn parliament_findings(policy: &str) -> Vec<serde_json::Value> {
    let root = k3s_asg_testbed::repo_root();
    let text = std::fs::read_to_string(root.join("packaging/iam").join(policy)).unwrap();
    let out = Command::new(root.join(".venv/bin/parliament"))
        .args(["--minimum_severity", "LOW", "--json", "--string", &text])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("parliament is installed by scripts/setup-moto");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|f| {
            let nlb_only = f["issue"] == "RESOURCE_MISMATCH"
                && f["detail"].as_array().is_some_and(|d| d.iter().all(|x| x["required_format"].as_str().unwrap_or("").contains("/net/")));
            let create_action = f["issue"] == "UNKNOWN_CONDITION_FOR_ACTION"
                && f["detail"] == "Unknown condition elasticloadbalancing:CreateAction for action elasticloadbalancing:AddTags";
            !nlb_only && !create_action
        })
        .collect()
}

#[test]
fn iam_policies_pass_parliament() {
    for policy in [
        "examples/control-plane-policy.json",
        "examples/node-policy.json",
        "examples/coordinator-policy.json",
        "control-plane-snapshots-policy.json",
        "cluster-autoscaler-policy.json",
    ] {
        let findings = parliament_findings(policy);
        assert!(findings.is_empty(), "{policy}: {findings:#?}");
    }
}

#[test]
fn parliament_catches_a_bad_policy() {
    // The check can fail: a misspelt action is reported.
    let root = k3s_asg_testbed::repo_root();
    let out = Command::new(root.join(".venv/bin/parliament"))
        .args(["--json", "--string", r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ssm:GetParamter","Resource":"*"}]}"#])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Unknown action"));
}

/// Every AWS operation the programs call appears in their policy: each program's own sources
/// against its policy, the shared crate's AWS modules (which serve both) against either. The IAM
/// tests (tests/tests/iam.rs) prove the same at run time, under moto's IAM enforcement.
#[test]
fn policies_cover_every_operation_the_code_calls() {
    let root = k3s_asg_testbed::repo_root();
    let policy = |name: &str| std::fs::read_to_string(root.join("packaging/iam").join(name)).unwrap();
    let (control_plane, node, coordinator) =
        (policy("examples/control-plane-policy.json"), policy("examples/node-policy.json"), policy("examples/coordinator-policy.json"));
    // S3 (a recovery's snapshot listing) is the control plane's alone: its own policy.
    let snapshots = policy("control-plane-snapshots-policy.json");
    let shared = ["aws/src/ec2.rs", "aws/src/elbv2.rs", "aws/src/route53.rs", "aws/src/ssm.rs"];
    // The fewest calls each case must find: the coordinator speaks to AWS only through the
    // shared crate now (its run-time calls are proven against its own policy in tests/tests/iam.rs).
    let cases: [(&str, Vec<&str>, Vec<&str>, usize); 3] = [
        ("the control-plane or node policy (+ the control plane's snapshots policy)", vec!["agent/src"], vec![&control_plane, &node, &snapshots], 3),
        ("coordinator-policy", vec!["coordinator/src"], vec![&coordinator], 0),
        ("any of them (shared crate)", shared.to_vec(), vec![&control_plane, &node, &coordinator], 7),
    ];
    for (label, dirs, policies, fewest) in cases {
        let mut sources = String::new();
        for d in dirs {
            let p = root.join(d);
            let files: Vec<std::path::PathBuf> = if p.is_dir() { walk(&p) } else { vec![p] };
            for f in files {
                sources.push_str(&std::fs::read_to_string(f).unwrap());
            }
        }
        // Error messages name each call as `(service:Operation)`.
        let mut missing = Vec::new();
        let mut checked = 0;
        for cap in sources.split('(').skip(1) {
            let Some(call) = cap.split(')').next() else {
                continue;
            };
            let Some((svc, op)) = call.split_once(':') else {
                continue;
            };
            if !["ssm", "ec2", "route53", "elasticloadbalancing", "autoscaling", "s3"].contains(&svc) || op.contains(' ') || op.is_empty() {
                continue;
            }
            checked += 1;
            if !policies.iter().any(|text| text.contains(&format!("\"{svc}:{op}\""))) {
                missing.push(format!("{svc}:{op}"));
            }
        }
        assert!(missing.is_empty(), "{label} lacks {missing:?}");
        assert!(checked >= fewest, "{label}: only {checked} calls found in the sources");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// The policies proven by evaluation (tests/tools/iam_eval, docs/iam.md): the denial table (a
/// node reading the server token or the admin kubeconfig, anything of another cluster, writing
/// the token, another name's record, another cluster's target group or group; with allowed
/// controls so a deny-all policy cannot pass), the wire-to-IAM mapping, the renderer's parity with
/// `templatefile`, and the rendered examples and the docs' table being current.
#[test]
fn iam_policies_deny_what_they_must_by_evaluation() {
    let root = k3s_asg_testbed::repo_root();
    assert!(Command::new(root.join("scripts/setup-iam-eval")).status().expect("run scripts/setup-iam-eval").success());
    let out = Command::new(root.join(".venv/bin/python"))
        .args(["-m", "unittest", "discover", "-s", "tests/tools/iam_eval", "-t", "tests/tools/iam_eval"])
        .current_dir(&root)
        .env("K3S_ASG_REQUIRE_IAM_EVAL", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
