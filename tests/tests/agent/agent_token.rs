//! The agent token and the node password k3s keeps (issue 25): k3s keeps `cred/passwd` in the
//! cluster's bootstrap data as the first server wrote it, and refuses to start a server whose
//! copy changed on its own disk ("… newer than datastore": k3s-io/k3s
//! `pkg/cluster/bootstrap.go` `ReconcileBootstrapData`; `genUsers` in
//! `pkg/daemons/control/deps/deps.go` rewrites it from `agent-token`). A cluster begun with the
//! agent token keeps it; one begun without it (an earlier release) keeps the server password for
//! nodes, so rolling it onto this release never stalls and every server restarts.

use k3s_asg_testbed::check::ok;
use k3s_asg_testbed::world::{Instance, World};

const TOKEN: &str = "/k3s-asg/clusters/alpha/token";
const AGENT_TOKEN: &str = "/k3s-asg/clusters/alpha/agent-token";

/// `systemctl restart k3s` by hand, as a reboot or an upgrade does: whether k3s came back.
async fn restart(w: &World, s: &Instance) -> k3s_asg_testbed::world::AgentRun {
    ok(&w.on_host(s, &["systemctl", "stop", "k3s"]).await.unwrap());
    w.on_host(s, &["systemctl", "start", "k3s"]).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_begun_without_the_agent_token_rolls_onto_this_release_and_every_server_restarts() {
    let w = World::with_cluster("alpha").await.unwrap();
    // An earlier release's first server: k3s configured without `agent-token`, so the cluster's
    // node password is the server token's. Its token published in secure form, as then.
    let old = w.launch("alpha", "control-plane").await.unwrap();
    std::fs::create_dir_all(old.path("/etc/rancher/k3s")).unwrap();
    std::fs::write(
        old.path("/etc/rancher/k3s/config.yaml"),
        format!("node-name: \"{}\"\nnode-ip: \"{}\"\ntoken: \"old-release-password\"\ncluster-init: true\n", old.id, old.ip),
    )
    .unwrap();
    ok(&w.on_host(&old, &["systemctl", "start", "k3s"]).await.unwrap());
    let secure = old.file("/var/lib/rancher/k3s/server/token").unwrap().trim().to_string();
    w.ssm.put_parameter().name(TOKEN).value(&secure).r#type(aws_sdk_ssm::types::ParameterType::SecureString).send().await.unwrap();

    // This release's servers join it: no agent token in their config, none published.
    let mut new = Vec::new();
    for _ in 0..2 {
        let s = w.joined("alpha", "control-plane").await.unwrap();
        assert!(!s.k3s_config().contains("agent-token"), "the node password the cluster began with:\n{}", s.k3s_config());
        new.push(s);
    }
    assert_eq!(w.param(AGENT_TOKEN).await.unwrap(), None, "no agent token for a cluster that began without one");
    // A node joins with the server token (the earlier release's way) and is accepted.
    let node = w.joined("alpha", "node").await.unwrap();
    assert!(node.k3s_config().contains("::server:"), "{}", node.k3s_config());
    // Every server restarts, twice (k3s reconciles cred/passwd with the datastore each time).
    tokio::time::sleep(std::time::Duration::from_secs(3)).await; // past k3s's allowed skew
    for s in new.iter().chain([&old]) {
        for n in 1..=2 {
            let run = restart(&w, s).await;
            assert_eq!(run.code, 0, "{} restart {n}: {}", s.id, run.stderr);
        }
    }

    // What the earlier roll did (an agent token configured on a server of such a cluster) is
    // what k3s refuses: the first start rewrites cred/passwd, the next is refused.
    let s = &new[0];
    let changed = s.k3s_config().replace("cluster-init: true\n", "") + "agent-token: \"a-new-node-password\"\n";
    std::fs::write(s.path("/etc/rancher/k3s/config.yaml"), changed).unwrap();
    assert_eq!(restart(&w, s).await.code, 0, "the first start takes the new node password (on this host only)");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let refused = restart(&w, s).await;
    assert_ne!(refused.code, 0, "the next start is refused");
    assert!(s.etcd_log_at("newer than datastore").is_some(), "k3s says why");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_begun_with_the_agent_token_keeps_it_through_restarts_and_nodes_use_it() {
    let w = World::with_cluster("alpha").await.unwrap();
    let a = w.joined("alpha", "control-plane").await.unwrap();
    let b = w.joined("alpha", "control-plane").await.unwrap();
    let agent_token = w.param(AGENT_TOKEN).await.unwrap().expect("published by the first server");
    for s in [&a, &b] {
        assert!(s.k3s_config().contains("agent-token: "), "{}", s.k3s_config());
    }
    let node = w.joined("alpha", "node").await.unwrap();
    assert!(node.k3s_config().contains(&format!("token: \"{agent_token}\"")), "the node joins with the agent token");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    for s in [&a, &b] {
        for n in 1..=2 {
            let run = restart(&w, s).await;
            assert_eq!(run.code, 0, "{} restart {n}: {}", s.id, run.stderr);
        }
    }
    // A node with a wrong password is refused by the server (k3s's node authentication).
    let stranger = w.launch("alpha", "node").await.unwrap();
    std::fs::create_dir_all(stranger.path("/etc/rancher/k3s")).unwrap();
    std::fs::write(
        stranger.path("/etc/rancher/k3s/config.yaml"),
        format!("node-name: \"{}\"\nserver: \"https://{}:6443\"\ntoken: \"K10{}::node:guessed\"\n", stranger.id, a.ip, "0".repeat(64)),
    )
    .unwrap();
    assert_ne!(w.on_host(&stranger, &["systemctl", "start", "k3s-agent"]).await.unwrap().code, 0, "refused");
}
