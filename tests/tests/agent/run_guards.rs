//! A server's guards in `run` (issue 14): it collects the Nodes of instances that died
//! without leaving (never a live or a foreign Node), and replaces the published admin
//! kubeconfig with its own once it is old. (Its guard of the token: first_server_election.rs.)

use k3s_asg_testbed::check::{ok, until};
use k3s_asg_testbed::world::World;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_in_run_collects_the_nodes_of_dead_instances() {
    let mut w = World::with_cluster("alpha").await.unwrap();
    w.agent_env.insert("K3S_ASG_TOKEN_CHECK".into(), "1".into());
    let cp = w.joined("alpha", "control-plane").await.unwrap();
    let alive = w.joined("alpha", "node").await.unwrap();
    let ghost = w.joined("alpha", "node").await.unwrap();
    // The ghost dies without leaving; a foreign Node (not an instance) is never touched.
    w.terminate(&ghost).await.unwrap();
    // Nodes no instance holds: a workstation's kubelet, and an instance id EC2 does not know.
    for foreign in ["workstation-7", "i-00000000000000000"] {
        cp.etcd_put(&format!("/registry/minions/{foreign}"), r#"{"host": "", "role": "worker", "member": ""}"#);
    }
    let names = |i: &k3s_asg_testbed::world::Instance| i.nodes().into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert!(names(&cp).contains(&ghost.id) && names(&cp).contains(&"workstation-7".to_string()), "{:?}", cp.nodes());
    let agent = w.spawn_agent(&cp, &["run"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let deleted = |id: &str| cp.stub_calls().iter().any(|l| l.contains(&format!("delete node/{id}")));
    while !(deleted(&ghost.id) && deleted("i-00000000000000000")) {
        assert!(Instant::now() < deadline, "the ghosts were not collected: {:?}", cp.stub_calls());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!deleted(&alive.id) && !deleted(&cp.id) && !deleted("workstation-7"), "only dead instances' Nodes go");
    // (A call is logged as it starts: its deletion lands a moment later.)
    let mut want = vec![cp.id.clone(), alive.id.clone(), "workstation-7".to_string()];
    want.sort();
    let left = || {
        let mut n = names(&cp);
        n.sort();
        n
    };
    until("the dead instances' Nodes to be gone and no other", Duration::from_secs(30), || left() == want).await;
    let _ = agent.stop(Duration::from_secs(60)).await.unwrap();
    k3s_asg_testbed::reliability::held(
        "Bootstrap",
        "a node dies without leaving (terminated, no hook); an unknown instance id's Node",
        1,
        "a server in run deletes both Nodes; live and foreign Nodes are kept",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_admin_kubeconfig_is_replaced_by_a_servers_own() {
    let mut w = World::with_cluster("alpha").await.unwrap();
    let _a = w.joined("alpha", "control-plane").await.unwrap();
    let b = w.joined("alpha", "control-plane").await.unwrap();
    let admin = "/k3s-asg/clusters/alpha/kubeconfig/admin";
    let published = w.param(admin).await.unwrap().unwrap();
    // Young: b leaves a's kubeconfig alone.
    w.agent_env.insert("K3S_ASG_TOKEN_CHECK".into(), "1".into());
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let run = w.spawn_agent(&b, &["run"]).unwrap();
    // Two guard rounds after its join: the admin kubeconfig was looked at (and kept).
    let admin_reads = || {
        let calls = w.recorder.calls_by(&b.access_key());
        let registered = calls.iter().find(|c| c.operation == "DescribeTargetHealth" && c.at_ms > since).map(|c| c.at_ms).unwrap_or(u128::MAX);
        calls.iter().filter(|c| c.operation == "GetParameters" && c.at_ms > registered).count()
    };
    until("two guard rounds", Duration::from_secs(30), || admin_reads() >= 4).await;
    ok(&run.stop(Duration::from_secs(30)).await.unwrap());
    assert_eq!(w.param(admin).await.unwrap().unwrap(), published, "a young kubeconfig is kept");
    // Old (max age 0 days here): b's own replaces it, once.
    w.agent_env.insert("K3S_ASG_KUBECONFIG_MAX_AGE_DAYS".into(), "0".into());
    let run = w.spawn_agent(&b, &["run"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.param(admin).await.unwrap().unwrap() == published {
        assert!(Instant::now() < deadline, "the old kubeconfig was not replaced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ok(&run.stop(Duration::from_secs(30)).await.unwrap());
    let replaced = w.param(admin).await.unwrap().unwrap();
    assert!(replaced.contains("server: https://api.alpha.us-east-1.example.com:6443"), "still the API name");
}
