//! The cloud-init user data passes cloud-init's own schema check.

use std::process::Command;

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
