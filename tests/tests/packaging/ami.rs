//! The AMI's Packer template parses and installs what the agent needs.

use std::process::Command;

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
    // An AMI name may not hold a `+`, and k3s versions do (v1.37.1+k3s1).
    let template = std::fs::read_to_string(root.join("packaging/ami/k3s-asg.pkr.hcl")).unwrap();
    let names: Vec<&str> = template.lines().filter(|l| l.trim_start().starts_with("ami_name")).collect();
    assert_eq!(names.len(), 2, "one AMI name per source");
    for line in names {
        assert!(!line.contains("var.k3s_version"), "AMI name with the raw k3s version: {line}");
    }
    assert!(root.join("systemd/k3s-asg-agent.service").exists(), "the unit the template uploads exists");
}
