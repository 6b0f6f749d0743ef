//! The README's first command keeps working: the demo runs to the end and tells its story.

#[test]
fn demo_runs_to_the_end() {
    let bin = k3s_asg_testbed::repo_root().join("target/debug/k3s-asg-demo");
    assert!(bin.exists(), "{} is not built (scripts/test builds it)", bin.display());
    let out = std::process::Command::new(bin).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for needle in [
        "AWS is emulated",
        "mutating AWS calls on the second pass: 0",
        "AWS DeregisterTargets",
        "AWS CompleteLifecycleAction",
        "coordinator apply afterwards: 0 mutating AWS calls",
        "Before and after the replacement",
        "Done: 1 server ran cluster-init",
    ] {
        assert!(stdout.contains(needle), "demo output lacks {needle:?}:\n{stdout}");
    }
    // No secure token (K10 + 64 hex digits of the CA hash) appears in the output.
    let leaked = stdout.match_indices("K10").any(|(i, _)| {
        let rest = &stdout[i + 3..];
        rest.len() >= 64 && rest[..64].bytes().all(|b| b.is_ascii_hexdigit())
    });
    assert!(!leaked, "the demo printed a join token");
}

#[test]
fn the_rolling_upgrade_demo_keeps_quorum_and_traffic_off_leaving_instances() {
    let bin = k3s_asg_testbed::repo_root().join("target/debug/k3s-asg-demo");
    let out = std::process::Command::new(bin).arg("--roll").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "roll demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for needle in [
        "etcd kept a quorum at every sample: yes",
        "5 of 5 leaving instances were out of their target group before they drained or stopped k3s",
        "all on ami-0new000000000000: yes",
        "Done: etcd kept a quorum of healthy voters at every sample",
    ] {
        assert!(stdout.contains(needle), "roll demo output lacks {needle:?}:\n{stdout}");
    }
}
