//! Packaging artefacts checked by the tools their own field uses.

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
/// tests (tests/iam.rs) prove the same at run time, under moto's IAM enforcement.
#[test]
fn policies_cover_every_operation_the_code_calls() {
    let root = k3s_asg_testbed::repo_root();
    let policy = |name: &str| std::fs::read_to_string(root.join("packaging/iam").join(name)).unwrap();
    let (control_plane, node, coordinator) =
        (policy("examples/control-plane-policy.json"), policy("examples/node-policy.json"), policy("examples/coordinator-policy.json"));
    // S3 (a recovery's snapshot listing) is the control plane's alone: its own policy.
    let snapshots = policy("control-plane-snapshots-policy.json");
    let shared = ["aws/src/ec2.rs", "aws/src/elbv2.rs", "aws/src/route53.rs"];
    let cases: [(&str, Vec<&str>, Vec<&str>); 3] = [
        ("the control-plane or node policy (+ the control plane's snapshots policy)", vec!["agent/src"], vec![&control_plane, &node, &snapshots]),
        ("coordinator-policy", vec!["coordinator/src"], vec![&coordinator]),
        ("any of them (shared crate)", shared.to_vec(), vec![&control_plane, &node, &coordinator]),
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
    let dir = copy_packaging_allowing_imdsv1();
    let out = check_terraform(&dir.path().join("packaging/terraform"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("http_tokens must be \"required\""));
}

/// A copy of packaging/ (the Terraform modules read ../../iam and ../../cloud-init) whose launch
/// templates allow IMDSv1.
fn copy_packaging_allowing_imdsv1() -> tempfile::TempDir {
    let root = k3s_asg_testbed::repo_root();
    let dir = tempfile::tempdir().unwrap();
    assert!(Command::new("cp").arg("-r").arg(root.join("packaging")).arg(dir.path()).status().unwrap().success());
    let lt = dir.path().join("packaging/terraform/cluster/main.tf");
    let text = std::fs::read_to_string(&lt).unwrap();
    assert!(text.contains("http_tokens                 = \"required\""));
    std::fs::write(&lt, text.replace("http_tokens                 = \"required\"", "http_tokens = \"optional\"")).unwrap();
    dir
}

/// `terraform` on PATH, if any. Neither Terraform nor its AWS provider is in a package registry
/// this project can reach, so its scripts cannot install them: where they are missing, the
/// checks that need them are skipped and say so.
fn terraform() -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join("terraform")).find(|p| p.is_file())
}

/// `terraform fmt -check`, `terraform validate`, and `terraform test` (packaging/terraform/tests:
/// a plan of the example against a mocked AWS provider, no credentials, no network) on a copy of
/// packaging/. The AWS provider comes from `K3S_ASG_TF_PLUGIN_DIR` or `/opt/tf-plugins` when
/// present (`init -plugin-dir`), else as the Terraform CLI configuration says.
#[test]
fn terraform_example_validates() {
    let Some(terraform) = terraform() else {
        eprintln!("SKIPPED terraform_example_validates: terraform is not on PATH (terraform fmt, validate and test of packaging/terraform not run)");
        return;
    };
    let root = k3s_asg_testbed::repo_root();
    let dir = tempfile::tempdir().unwrap();
    assert!(Command::new("cp").arg("-r").arg(root.join("packaging")).arg(dir.path()).status().unwrap().success());
    let run = |args: &[&str]| {
        Command::new(&terraform)
            .args(args)
            .arg("-no-color")
            .current_dir(dir.path().join("packaging/terraform"))
            .env("TF_IN_AUTOMATION", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let plugin_dir = std::env::var_os("K3S_ASG_TF_PLUGIN_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| Some(std::path::PathBuf::from("/opt/tf-plugins")).filter(|d| d.is_dir()));
    let plugin_arg = plugin_dir.map(|d| format!("-plugin-dir={}", d.display()));
    let mut init = vec!["init", "-backend=false", "-input=false"];
    init.extend(plugin_arg.as_deref());
    let out = run(&init[..]);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("Failed to query available provider packages") || err.contains("Failed to install provider") {
            eprintln!(
                "SKIPPED terraform_example_validates: the AWS provider cannot be installed here (terraform fmt, validate and test not run): {err}"
            );
            return;
        }
        panic!("terraform init: {}{err}", String::from_utf8_lossy(&out.stdout));
    }
    let steps: [&[&str]; 3] = [&["fmt", "-check", "-recursive"], &["validate"], &["test"]];
    for args in steps {
        let out = run(args);
        assert!(
            out.status.success(),
            "terraform {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// checkov, pinned, from its own virtualenv `.venv-checkov/` (installed by scripts/setup-checkov
/// when missing). `--skip-download`: no call to the vendor's platform for guidelines.
fn checkov(dir: &std::path::Path) -> std::process::Output {
    let root = k3s_asg_testbed::repo_root();
    let bin = root.join(".venv-checkov/bin/checkov");
    if !bin.exists() {
        let status = Command::new(root.join("scripts/setup-checkov")).status().expect("run scripts/setup-checkov");
        assert!(status.success(), "scripts/setup-checkov failed");
    }
    Command::new(bin)
        .args(["--framework", "terraform", "--compact", "--quiet", "--skip-download", "-d"])
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("checkov is installed by scripts/setup-checkov")
}

/// checkov finds nothing in the Terraform example; a check that does not fit an example is
/// skipped where it applies, with `#checkov:skip=CKV_…:reason`.
#[test]
fn terraform_example_passes_checkov() {
    let root = k3s_asg_testbed::repo_root();
    let out = checkov(&root.join("packaging/terraform"));
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // The check can fail: IMDSv1 allowed is caught.
    let dir = copy_packaging_allowing_imdsv1();
    let out = checkov(&dir.path().join("packaging/terraform"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("CKV_AWS_79"), "{}", String::from_utf8_lossy(&out.stdout));
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
    for needle in [
        "amazon-ebs",
        "http_tokens",
        "required",
        "/usr/local/bin/k3s-asg-agent",
        "k3s-asg-agent.service",
        "k3s-airgap-images",
        "k3s_version",
        "sha256sum-$ARCH.txt",
        "sha256sum -c",
        "source.amazon-ebs.al2023",
        "source.amazon-ebs.ubuntu",
    ] {
        assert!(parsed.contains(needle), "packer template lacks {needle}");
    }
    // An AMI name may not hold a `+`, and k3s versions do (v1.31.4+k3s1).
    let template = std::fs::read_to_string(root.join("packaging/ami/k3s-asg.pkr.hcl")).unwrap();
    let names: Vec<&str> = template.lines().filter(|l| l.trim_start().starts_with("ami_name")).collect();
    assert_eq!(names.len(), 2, "one AMI name per source");
    for line in names {
        assert!(!line.contains("var.k3s_version"), "AMI name with the raw k3s version: {line}");
    }
    assert!(root.join("systemd/k3s-asg-agent.service").exists(), "the unit the template uploads exists");
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
