//! A lost majority, against real etcd members (issue 24): two of three servers die hard. The
//! survivor's etcd has no quorum, so no server can join and nothing else recovers it (it still
//! answers on the supervisor port). Once EC2 says the lost servers are gone and the grace has
//! passed, the survivor's `run` resets its member to a one-member cluster with its own data,
//! token and CA (`k3s server --cluster-reset`), forgets the lost servers' Nodes, and fresh
//! servers join as usual. Never while a lost server might come back. Two survivors: the one
//! with the newest data resets, the other backs up, resets and joins it; with S3 snapshots on,
//! the heal still keeps the survivor's own data (no restore of an older snapshot).

use super::common::{clusters_begun, patient};
use super::recovery::{join_each, keep_running, lose, record, snapshot_with, until, world};
use k3s_asg_testbed::check::{ok, state};
use k3s_asg_testbed::world::{Instance, World};
use std::time::Duration;

const MARKER: &str = "/k3s-asg-test/marker";

fn voters(s: &Instance) -> usize {
    s.etcd_members().iter().filter(|(_, learner)| !learner).count()
}

fn resets(servers: &[&Instance]) -> usize {
    servers.iter().map(|s| s.stub_calls().iter().filter(|l| l.contains("k3s\tserver --cluster-reset")).count()).sum()
}

/// Three joined servers, the data written through the first before the loss; the other two
/// die hard (k3s killed, instances terminated). The first is the survivor.
async fn three_servers_two_die_hard(w: &World) -> Vec<Instance> {
    let old = w.servers("alpha", 3).await.unwrap();
    join_each(w, &old).await;
    old[0].etcd_put(MARKER, "written before the loss");
    for lost in &old[1..] {
        lost.kill_k3s().await;
        w.terminate(lost).await.unwrap();
    }
    old
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_servers_lost_the_survivor_heals_and_fresh_servers_join() {
    let mut w = world(false).await;
    let old: Vec<Instance> = vec![
        w.launch("alpha", "control-plane").await.unwrap(),
        w.launch("alpha", "control-plane").await.unwrap(),
        w.launch("alpha", "control-plane").await.unwrap(),
    ];
    join_each(&w, &old).await;
    let node = w.launch("alpha", "node").await.unwrap();
    ok(&w.agent(&node, &["join"]).await.unwrap());
    let (a, b, c) = (&old[0], &old[1], &old[2]);
    a.etcd_put(MARKER, "written before the loss");
    // a's agent runs, as under systemd, and is watching (its rounds list the Nodes) before the loss.
    a.clear_stub_calls();
    let _running = keep_running(&w, a);
    until("a's run to be watching", || a.stub_calls().iter().any(|l| l.contains("kubectl\tget nodes -o") || l.contains("get nodes -o"))).await;

    // b dies hard and so does c, but c's instance is only stopped: it might come back, so a
    // must not reset.
    b.kill_k3s().await;
    w.terminate(b).await.unwrap();
    c.kill_k3s().await;
    w.ec2.stop_instances().instance_ids(&c.id).send().await.unwrap();
    until("a to say what it waits for", || state(a).waiting_for.is_some_and(|wf| wf.contains(&format!("{} (stopped)", c.id)))).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(resets(&[a, b, c]), 0, "no reset while a lost server might come back");
    assert_eq!(voters(a), 3, "the membership is untouched");

    // c's instance is terminated: both are gone for good. After the grace, a heals.
    w.terminate(c).await.unwrap();
    until("a to reset to a one-member cluster and say so", || state(a).recovery.is_some()).await;
    assert_eq!(voters(a), 1);
    assert_eq!(resets(&[a, b, c]), 1, "exactly one reset");
    assert!(a.stub_calls().iter().any(|l| l.contains("k3s\tserver --cluster-reset") && !l.contains("restore-path")), "its own data, no restore");
    let outcome = state(a).recovery.expect("status says what it did").outcome;
    assert!(outcome.contains("healed a lost etcd majority") && outcome.contains(&b.id) && outcome.contains(&c.id), "{outcome}");
    let nodes = a.nodes();
    assert!(!nodes.iter().any(|(n, _)| n == &b.id || n == &c.id), "the lost servers' Nodes are forgotten: {nodes:?}");
    assert!(nodes.contains(&(node.id.clone(), true)), "the node still works: {nodes:?}");

    // Fresh servers join as usual: three voters again, with the data written before the loss.
    patient(&mut w);
    let fresh = vec![w.launch("alpha", "control-plane").await.unwrap(), w.launch("alpha", "control-plane").await.unwrap()];
    join_each(&w, &fresh).await;
    until("three voters", || voters(a) == 3).await;
    assert_eq!(fresh[1].etcd_get(MARKER), "written before the loss", "the survivor's data, not an older snapshot");
    let all: Vec<Instance> = old.into_iter().chain(fresh).collect();
    assert_eq!(clusters_begun(&all), 1, "one cluster ever initialised");
    assert_eq!(resets(&all.iter().collect::<Vec<_>>()), 1);
    assert!(all[0].nodes().contains(&(node.id.clone(), true)));
    k3s_asg_testbed::reliability::held(
        "Recovery",
        "3 servers and a node; 2 servers die hard (one first only stopped); 2 fresh servers launch",
        1,
        "no reset while a lost server is stopped; then exactly one --cluster-reset on the survivor; 3 voters again; the data written before the loss is there; one cluster-init ever; the node still Ready",
    );
}

/// The survivor's agent restarts during the loss (a reboot, an upgrade): its join cannot finish
/// (k3s is never Ready without a quorum), and it heals from there instead of failing for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_whose_agent_restarts_during_the_loss_heals_too() {
    let w = world(false).await;
    let old = three_servers_two_die_hard(&w).await;
    let (a, b, c) = (&old[0], &old[1], &old[2]);
    // `run` starts on a after the loss: its join waits for a Node that cannot be Ready.
    let _running = keep_running(&w, a);
    until("a to heal from its stuck join", || state(a).recovery.is_some()).await;
    assert_eq!(voters(a), 1);
    assert_eq!(resets(&[a, b, c]), 1);
    until("a to be joined again", || state(a).phase == k3s_asg_agent::state::Phase::Ready).await;
    assert_eq!(a.etcd_get(MARKER), "written before the loss");
}

/// Five servers with S3 snapshots on; three die hard, so the two survivors have no quorum. One
/// resets with its own data (newer than every snapshot: no restore, no recovery election); the
/// other backs its datastore up, resets it and joins the healed cluster in place, in its `run`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_survivors_of_five_one_heals_the_other_follows_and_snapshots_stay_unused() {
    let mut w = world(true).await;
    patient(&mut w);
    w.agent_env.insert("K3S_STUB_SNAPSHOT_EVERY".into(), "3".into());
    let old = w.servers("alpha", 5).await.unwrap();
    join_each(&w, &old).await;
    w.agent_env.remove("K3S_STUB_SNAPSHOT_EVERY");
    old[0].etcd_put(MARKER, "in a snapshot");
    snapshot_with(&w, "in a snapshot").await;
    old[0].etcd_put(MARKER, "written after the last snapshot");
    let (survivors, lost) = old.split_at(2);
    for s in survivors {
        s.clear_stub_calls();
    }
    let _running: Vec<_> = survivors.iter().map(|s| keep_running(&w, s)).collect();
    for s in survivors {
        until("the survivor's run to be watching", || s.stub_calls().iter().any(|l| l.contains("get nodes -o"))).await;
    }
    for s in lost {
        s.kill_k3s().await;
    }
    lose(&w, lost).await;

    let healed = || survivors.iter().find(|s| state(s).recovery.is_some_and(|r| r.outcome.contains("healed a lost etcd majority")));
    until("one survivor to heal", || healed().is_some()).await;
    let winner = healed().unwrap();
    let follower = survivors.iter().find(|s| s.id != winner.id).unwrap();
    let backups = follower.path("/var/lib/rancher/k3s/server/db-backups");
    until("the other survivor to back up, reset and join the healed cluster", || {
        backups.exists() && state(follower).phase == k3s_asg_agent::state::Phase::Ready && voters(winner) == 2
    })
    .await;
    let all: Vec<&Instance> = old.iter().collect();
    assert_eq!(resets(&all), 1, "exactly one reset");
    assert!(!all.iter().any(|s| s.stub_calls().iter().any(|l| l.contains("restore-path"))), "no snapshot restored");
    assert!(record(&w, 2).await.is_none(), "no cold-start recovery election");
    assert_eq!(std::fs::read_dir(&backups).unwrap().count(), 1, "one backup of the follower's datastore");
    let config = follower.file("/etc/rancher/k3s/config.yaml").unwrap();
    assert!(config.contains(&format!("server: \"https://{}:6443\"", winner.ip)), "the follower joins the winner:\n{config}");
    for s in survivors {
        assert_eq!(s.etcd_get(MARKER), "written after the last snapshot", "{}: the survivor's data", s.id);
    }
    assert_eq!(clusters_begun(&old), 1, "one cluster ever initialised");
    k3s_asg_testbed::reliability::held(
        "Recovery",
        "5 servers with S3 snapshots; 3 die hard; both survivors run",
        1,
        "one survivor resets with its own data (no snapshot restored, no recovery election); the other backs up, resets and joins it in place; the data written after the last snapshot is there",
    );
}

/// The bed is as strict as k3s about a lost majority, by hand: restarting k3s on the survivor
/// does not bring a quorum back and a fresh server cannot join; k3s's documented recovery does
/// ("Cluster Reset", docs.k3s.io/cli/server#cluster-options and k3s-io/k3s
/// `pkg/cluster/managed.go`: stop k3s, `k3s server --cluster-reset`, start k3s again; then
/// delete the lost servers' Nodes), keeping the data, and a fresh server then joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_hand_a_restart_does_not_heal_a_lost_majority_and_a_cluster_reset_does() {
    let mut w = world(false).await;
    let old = three_servers_two_die_hard(&w).await;
    let (a, b, c) = (&old[0], &old[1], &old[2]);
    // No agent runs on a: only the operator acts.
    // A shortcut: restart k3s. Its etcd comes back with the same three voters and no leader.
    ok(&w.on_host(a, &["systemctl", "stop", "k3s"]).await.unwrap());
    ok(&w.on_host(a, &["systemctl", "start", "--no-block", "k3s"]).await.unwrap());
    until("a's etcd to run again", || a.etcd_log_at("starting member").is_some() && a.file("/run/k3s-stub/etcd.pid").is_some()).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // what must not happen: a leader, a Ready unit
    assert!(!a.path("/run/k3s-stub/active-k3s").exists(), "a notify unit without etcd quorum never becomes active");
    assert_eq!(a.etcd_get(MARKER), "", "no quorum, no reads");
    // Another shortcut: a fresh server joins it. etcd adds no member without a leader.
    w.agent_env.insert("K3S_ASG_JOIN_TIMEOUT".into(), "8".into());
    let d = w.launch("alpha", "control-plane").await.unwrap();
    let run = w.agent(&d, &["join"]).await.unwrap();
    assert_ne!(run.code, 0, "a fresh server cannot join a cluster without quorum:\n{}", run.stderr);
    assert!(d.etcd_log_at("joined through").is_none(), "no member added");
    w.agent_env.remove("K3S_ASG_JOIN_TIMEOUT");
    // d's k3s would go on trying (and join once the cluster has a leader again); stopped here so
    // that the reset below is the survivor's alone.
    ok(&w.on_host(&d, &["systemctl", "stop", "k3s"]).await.unwrap());

    // The recovery k3s documents, by hand.
    ok(&w.on_host(a, &["systemctl", "stop", "k3s"]).await.unwrap());
    let reset = w.on_host(a, &["k3s", "server", "--cluster-reset"]).await.unwrap();
    ok(&reset);
    assert!(reset.stderr.contains("Managed etcd cluster membership has been reset"), "{}", reset.stderr);
    ok(&w.on_host(a, &["systemctl", "start", "k3s"]).await.unwrap());
    assert_eq!(voters(a), 1);
    assert_eq!(a.etcd_get(MARKER), "written before the loss", "its own data kept");
    for lost in [b, c] {
        ok(&w.on_host(a, &["k3s", "kubectl", "delete", &format!("node/{}", lost.id)]).await.unwrap());
    }
    let nodes = a.nodes();
    assert!(!nodes.iter().any(|(n, _)| n == &b.id || n == &c.id), "{nodes:?}");
    // A fresh server joins as usual now.
    ok(&w.agent(&d, &["join"]).await.unwrap());
    until("two voters", || voters(a) == 2).await;
    assert_eq!(d.etcd_get(MARKER), "written before the loss");
    assert_eq!(clusters_begun([a, b, c, &d]), 1, "one cluster ever initialised");
}
