//! Warm pools and standby: an instance joins only once in service (`join` refuses in a warm
//! pool; `run` waits there and extends systemd's start timeout); taken back to the warm pool,
//! a server and a node leave and join again; the last server sent to Standby keeps the
//! cluster.

use super::common::cluster;
use k3s_asg_agent::state::{Phase, Trigger};
use k3s_asg_testbed::check::{in_phase, ok, state, until, wait_for_phase};
use k3s_asg_testbed::world::World;
use std::time::Duration;

/// The stub k3s's etcd member directory (tests/stubs/k3s_etcd.py).
const ETCD_MEMBER: &str = "/var/lib/rancher/k3s/server/db/etcd/member";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_pool_instance_joins_only_when_in_service() {
    let (w, _cp, tg) = cluster().await;
    let node = w.launch("alpha", "node").await.unwrap();
    node.imds.set("autoscaling/target-lifecycle-state", Some("Warmed:Running"));
    let agent = w.spawn_agent(&node, &["run"]).unwrap();
    // Poll the condition that must stay false while warmed: nothing configured, nothing registered.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(node.file("/etc/rancher/k3s/config.yaml").is_none(), "joined while warmed");
    }
    assert!(!w.members(&tg).await.unwrap().contains(&node.id));
    node.imds.set("autoscaling/target-lifecycle-state", Some("InService"));
    wait_for_phase(&node, Phase::Ready).await;
    assert!(w.members(&tg).await.unwrap().contains(&node.id));
    ok(&agent.stop(Duration::from_secs(30)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_refuses_in_a_warm_pool() {
    let w = World::with_cluster("alpha").await.unwrap();
    let cp = w.launch("alpha", "control-plane").await.unwrap();
    cp.imds.set("autoscaling/target-lifecycle-state", Some("Warmed:Stopped"));
    let run = w.agent(&cp, &["join"]).await.unwrap();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("warm pool"), "{}", run.stderr);
    assert!(cp.file("/etc/rancher/k3s/config.yaml").is_none() && cp.stub_calls().is_empty(), "nothing configured or started");
    assert!(w.param("/k3s-asg/clusters/alpha/token").await.unwrap().is_none(), "no election held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_in_a_warm_pool_extends_the_start_timeout() {
    let mut w = World::with_cluster("alpha").await.unwrap();
    let node = w.launch("alpha", "node").await.unwrap();
    node.imds.set("autoscaling/target-lifecycle-state", Some("Warmed:Running"));
    // systemd's notify socket, as a Type=notify unit gets it.
    let path = w.dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&path).unwrap();
    w.agent_env.insert("NOTIFY_SOCKET".into(), path.display().to_string());
    let agent = w.spawn_agent(&node, &["run"]).unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(20), socket.recv(&mut buf)).await.expect("no notification").unwrap();
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "EXTEND_TIMEOUT_USEC=60000000");
    assert!(node.file("/etc/rancher/k3s/config.yaml").is_none(), "nothing configured while warmed");
    let _ = agent.stop(Duration::from_secs(30)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taken_back_to_the_warm_pool_a_server_and_a_node_leave_and_join_again() {
    let w = World::with_cluster("alpha").await.unwrap();
    let tg = w.target_group("alpha");
    let a = w.joined("alpha", "control-plane").await.unwrap();
    let s = w.launch("alpha", "control-plane").await.unwrap();
    let n = w.launch("alpha", "node").await.unwrap();
    w.asg.add(&s.id, "alpha-control-plane", "InService", 30);
    w.asg.add(&n.id, "alpha-node", "InService", 30);
    // Two etcd voters (a and s): s is not the last.
    let server = w.spawn_agent(&s, &["run"]).unwrap();
    let node = w.spawn_agent(&n, &["run"]).unwrap();
    wait_for_phase(&s, Phase::Ready).await;
    wait_for_phase(&n, Phase::Ready).await;
    assert!(s.path(ETCD_MEMBER).exists(), "s holds an etcd member");

    // Scale-in with an instance reuse policy: both go back to the warm pool, paused by the
    // terminating hook in Warmed:Pending:Wait.
    for i in [&s, &n] {
        w.asg.set_state(&i.id, "Warmed:Pending:Wait");
        i.imds.set("autoscaling/target-lifecycle-state", Some("Warmed:Stopped"));
    }
    until("both to leave for the warm pool", Duration::from_secs(60), || in_phase(&s, Phase::Left) && in_phase(&n, Phase::Left)).await;
    assert!(w.members(&tg).await.unwrap().iter().all(|m| m == &a.id), "only a serves traffic");
    let ids: Vec<String> = w.api_records("alpha").await.unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![a.id.clone()], "the server's API record is gone");
    for i in [&s, &n] {
        assert!(i.stub_calls().iter().any(|l| l.contains("delete node/")), "{}: Node deleted", i.id);
        assert!(w.asg.actions().iter().any(|(op, id, _, r)| op == "CompleteLifecycleAction" && id == &i.id && r == "CONTINUE"));
        assert!(matches!(state(i).trigger, Some(Trigger::OutOfService(ref t)) if t == "Warmed:Stopped"));
    }
    // The server left etcd; its datastore is wiped so it can join again as a new member, and it
    // will join, never initialise.
    assert!(!s.path("/var/lib/rancher/k3s/server/db").exists(), "datastore wiped");
    // …never deleted: moved aside with its contents (k3s: "back up and delete").
    let backups: Vec<_> = std::fs::read_dir(s.path("/var/lib/rancher/k3s/server/db-backups")).expect("a backup").flatten().collect();
    assert_eq!(backups.len(), 1, "one backup of the one reset");
    assert!(backups[0].path().join("etcd/member").exists(), "the backup holds the etcd data");
    assert_eq!(state(&s).mode, Some(k3s_asg_agent::vocab::Mode::Join));

    // Back in service: both join again.
    s.clear_stub_calls();
    for i in [&s, &n] {
        w.asg.set_state(&i.id, "InService");
        i.imds.set("autoscaling/target-lifecycle-state", Some("InService"));
    }
    wait_for_phase(&s, Phase::Ready).await;
    wait_for_phase(&n, Phase::Ready).await;
    let mut want = vec![a.id.clone(), s.id.clone(), n.id.clone()];
    want.sort();
    assert_eq!(w.members(&tg).await.unwrap(), want);
    assert_eq!(w.api_records("alpha").await.unwrap().len(), 2);
    let config = s.file("/etc/rancher/k3s/config.yaml").unwrap();
    assert!(!config.contains("cluster-init"), "joined the live cluster:\n{config}");
    a.etcd_put("/k3s-asg-test/marker", "written through a");
    assert_eq!(s.etcd_get("/k3s-asg-test/marker"), "written through a", "s is a member of a's cluster");

    for (i, agent) in [(&s, server), (&n, node)] {
        i.imds.set("autoscaling/target-lifecycle-state", Some("Terminated"));
        ok(&agent.wait(Duration::from_secs(60)).await.unwrap());
    }
    k3s_asg_testbed::reliability::held(
        "Adversity",
        "a joined server and node go back to the warm pool on scale-in, then are put in service again",
        1,
        "each leaves traffic, its API record and the cluster (the server's datastore wiped), completes the hook, and joins again (the server as a joiner) when InService",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_server_sent_to_standby_keeps_the_cluster() {
    let w = World::with_cluster("alpha").await.unwrap();
    let tg = w.target_group("alpha");
    let s = w.launch("alpha", "control-plane").await.unwrap();
    w.asg.add(&s.id, "alpha-control-plane", "InService", 30);
    let agent = w.run_until_ready(&s).await.unwrap();
    s.etcd_put("/k3s-asg-test/marker", "before standby");
    let member = s.file("/var/lib/rancher/k3s/server/db/etcd/name").expect("an etcd member");
    s.imds.set("autoscaling/target-lifecycle-state", Some("Standby"));
    until("the server to leave service", Duration::from_secs(60), || in_phase(&s, Phase::Left)).await;
    assert!(w.members(&tg).await.unwrap().is_empty(), "out of traffic");
    assert!(!s.stub_calls().iter().any(|l| l.contains("delete node/")), "its member kept");
    assert_eq!(s.file("/var/lib/rancher/k3s/server/db/etcd/name"), Some(member), "its datastore kept");
    assert_eq!(w.api_records("alpha").await.unwrap().len(), 1, "its API record kept: nobody recovers a new cluster behind it");
    assert_eq!(state(&s).mode, Some(k3s_asg_agent::vocab::Mode::ClusterInit), "it comes back as the cluster it is");
    s.imds.set("autoscaling/target-lifecycle-state", Some("InService"));
    wait_for_phase(&s, Phase::Ready).await;
    assert_eq!(w.members(&tg).await.unwrap(), vec![s.id.clone()]);
    assert_eq!(s.etcd_get("/k3s-asg-test/marker"), "before standby", "the same cluster's data");
    s.imds.set("autoscaling/target-lifecycle-state", Some("Terminated"));
    ok(&agent.wait(Duration::from_secs(60)).await.unwrap());
    k3s_asg_testbed::reliability::held(
        "Adversity",
        "the only server of a cluster is put into Standby, then back in service",
        1,
        "it leaves traffic but keeps its etcd member, datastore and API record, and serves again as the same cluster when InService",
    );
}
