//! Packaging artefacts checked by the tools their own field uses.

use std::process::Command;

/// parliament's findings for a policy, less one known false positive: it asks
/// ELBv2 rule actions to match NLB (`/net/`) ARN formats too, but listener rules
/// exist only on ALBs, so granting NLB ARNs would only widen the policy.
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
            !nlb_only
        })
        .collect()
}

#[test]
fn iam_policies_pass_parliament() {
    for policy in ["agent-policy.json", "coordinator-policy.json", "control-plane-snapshots-policy.json"] {
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
/// tests (tests/iam.rs) prove the same at run time, under moto's IAM enforcement.
#[test]
fn policies_cover_every_operation_the_code_calls() {
    let root = k3s_asg_testbed::repo_root();
    let policy = |name: &str| std::fs::read_to_string(root.join("packaging/iam").join(name)).unwrap();
    let (agent, coordinator) = (policy("agent-policy.json"), policy("coordinator-policy.json"));
    // S3 (a recovery's snapshot listing) is the control plane's alone: its own policy.
    let snapshots = policy("control-plane-snapshots-policy.json");
    let shared = ["aws/src/ec2.rs", "aws/src/elbv2.rs", "aws/src/route53.rs"];
    let cases: [(&str, Vec<&str>, Vec<&str>); 3] = [
        ("agent-policy.json (+ the control plane's snapshots policy)", vec!["agent/src"], vec![&agent, &snapshots]),
        ("coordinator-policy.json", vec!["coordinator/src"], vec![&coordinator]),
        ("either policy (shared crate)", shared.to_vec(), vec![&agent, &coordinator]),
    ];
    for (label, dirs, policies) in cases {
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
        assert!(checked >= 7, "{label}: only {checked} calls found in the sources");
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

#[test]
fn cloud_init_user_data_is_valid() {
    let root = k3s_asg_testbed::repo_root();
    for f in ["user-data-al2023.yaml", "user-data-ubuntu.yaml"] {
        let path = root.join("packaging/cloud-init").join(f);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("k3s-asg-agent.service"), "{f} starts the agent");
        let out = Command::new("cloud-init").args(["schema", "-c"]).arg(&path).output().expect("cloud-init is installed by scripts/test");
        assert!(out.status.success(), "{f}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    // The check can fail.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "#cloud-config\nruncmd: 5\n").unwrap();
    assert!(!Command::new("cloud-init").args(["schema", "-c"]).arg(&bad).output().unwrap().status.success());
}

fn check_terraform(dir: &std::path::Path) -> std::process::Output {
    let root = k3s_asg_testbed::repo_root();
    Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/tools/check_terraform.py"))
        .arg(dir)
        .output()
        .expect("python-hcl2 is installed by scripts/setup-moto")
}

#[test]
fn terraform_example_passes_static_checks() {
    let root = k3s_asg_testbed::repo_root();
    let out = check_terraform(&root.join("packaging/terraform"));
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // The checks can fail: IMDSv1 allowed is caught.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("terraform");
    std::fs::create_dir_all(&bad).unwrap();
    for f in ["main.tf", "variables.tf", "outputs.tf"] {
        let text = std::fs::read_to_string(root.join("packaging/terraform").join(f)).unwrap();
        std::fs::write(bad.join(f), text.replace("http_tokens                 = \"required\"", "http_tokens = \"optional\"")).unwrap();
    }
    let out = check_terraform(&bad);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("http_tokens must be \"required\""));
}

#[test]
fn packer_template_parses_and_installs_what_the_agent_needs() {
    let root = k3s_asg_testbed::repo_root();
    let script = r#"
import sys, hcl2, json
with open(sys.argv[1]) as fh:
    d = hcl2.load(fh)
print(json.dumps(d))
"#;
    let out = Command::new(root.join(".venv/bin/python")).args(["-c", script]).arg(root.join("packaging/ami/k3s-asg.pkr.hcl")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let parsed = String::from_utf8_lossy(&out.stdout);
    for needle in
        ["amazon-ebs", "http_tokens", "required", "/usr/local/bin/k3s-asg-agent", "k3s-asg-agent.service", "k3s-airgap-images", "k3s_version"]
    {
        assert!(parsed.contains(needle), "packer template lacks {needle}");
    }
    assert!(root.join("systemd/k3s-asg-agent.service").exists(), "the unit the template uploads exists");
}
