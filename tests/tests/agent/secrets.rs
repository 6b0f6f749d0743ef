//! Secrets stay secret: every agent and coordinator run of every test is searched for the
//! world's secrets and every secret file the agent writes must be 0600 (`SecretScan`, in the
//! test bed); here the scan is shown to catch a leak.

use super::common::TOKEN;
use k3s_asg_testbed::world::World;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_scan_catches_a_leak() {
    // Every program run in the test bed is scanned (World::agent, World::coordinator, Running::wait);
    // here the scan is fed a leak on purpose, to show it fails the test.
    let w = World::with_cluster("alpha").await.unwrap();
    let cp = w.joined("alpha", "control-plane").await.unwrap();
    let token = w.param(TOKEN).await.unwrap().unwrap();
    let password = token.rsplit_once("::server:").unwrap().1.to_string();
    let scan = w.secret_scan(Some(&cp));
    scan.check("clean", &["nothing to see"]).await;
    for leak in [token, password] {
        let scan = scan.clone();
        let caught = tokio::spawn(async move { scan.check("leaky", &[&format!("level=info token={leak}")]).await }).await;
        assert!(caught.is_err_and(|e| e.is_panic()), "the scan must fail on a leaked secret");
    }
    // A secret file with a loose mode fails it too.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(cp.path("/etc/rancher/k3s/config.yaml"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let caught = tokio::spawn(async move { scan.check("loose", &[]).await }).await;
    assert!(caught.is_err_and(|e| e.is_panic()), "the scan must fail on a 0644 config.yaml");
    k3s_asg_testbed::reliability::held(
        "Secrets",
        "every agent and coordinator run of every test is scanned (World::agent, World::coordinator, background runs, Lambda); \
         here it is fed a leaked token, a leaked token password and a 0644 config.yaml",
        3,
        "the scan failed the run each time",
    );
}
