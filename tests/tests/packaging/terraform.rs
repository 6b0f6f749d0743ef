//! The Terraform example: static checks, `terraform fmt`, `validate` and `test` where
//! terraform is installed, and checkov.

use std::process::Command;

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
