//! The cluster survives its control plane (issue 10): total loss with and without
//! snapshots, a live server nobody recorded blocks recovery, scale 3→0→1 and every server
//! scaled away at once keep a final snapshot, a 10-way race after a loss elects one
//! restorer, a snapshot that will not restore is set aside, and a server stopped through a
//! recovery comes back into the recovered cluster. (A crash at each recovery step:
//! crashes.rs; the quorum guard: quorum_guard.rs.)
//!
//! The stub k3s keeps the cluster in real etcd (tests/stubs/k3s_etcd.py): a test writes a
//! marker key through one server and reads it through another; snapshots are etcd's, in
//! moto's S3, restored with `--cluster-reset` only under the cluster's own token.

use super::common::initialisers;
use k3s_asg_agent::election::Record;
use k3s_asg_agent::state::{Phase, StepName};
use k3s_asg_testbed::check::{ok, state};
use k3s_asg_testbed::world::{Instance, World};
use std::time::{Duration, Instant};

pub(crate) const BUCKET: &str = "alpha-etcd-snapshots";
/// The etcd key a test writes its marker into.
pub(crate) const MARKER: &str = "/k3s-asg-test/marker";
const RESTORED_FROM: &str = "/var/lib/rancher/k3s/server/db/restored-from";

fn token_name() -> String {
    "/k3s-asg/clusters/alpha/token".into()
}

pub(crate) async fn record(w: &World, epoch: u64) -> Option<Record> {
    w.param(&format!("/k3s-asg/clusters/alpha/election/{epoch}")).await.unwrap().map(|v| serde_json::from_str(&v).unwrap())
}

/// A world with cluster alpha, recovery grace of 1 s and node token checks every second.
pub(crate) async fn world(snapshots: bool) -> World {
    let mut w = World::with_cluster("alpha").await.unwrap();
    if snapshots {
        w.enable_snapshots("alpha", BUCKET).await.unwrap();
    }
    w.agent_env.insert("K3S_ASG_RECOVERY_GRACE".into(), "1".into());
    w.agent_env.insert("K3S_ASG_TOKEN_CHECK".into(), "1".into());
    w
}

/// `k3s-asg-agent run` on a joined server, as systemd keeps it running: among its rounds (every
/// second here: `K3S_ASG_TOKEN_CHECK`) it deletes the Nodes, and so the etcd members, of
/// instances EC2 says are terminated. Without that no server can join a cluster one of whose
/// voters is dead: etcd refuses to add even a learner while a voter is unreachable ("unhealthy
/// cluster": etcd `server.go` `mayAddMember`, strict reconfiguration checks, on in k3s). The
/// agent is killed when the handle is dropped.
pub(crate) fn keep_running(w: &World, server: &Instance) -> k3s_asg_testbed::world::Running {
    assert_eq!(w.agent_env.get("K3S_ASG_TOKEN_CHECK").map(String::as_str), Some("1"), "rounds every second");
    w.spawn_agent(server, &["run"]).unwrap()
}

/// Joins each server in turn (the first initialises).
pub(crate) async fn join_each(w: &World, servers: &[Instance]) {
    for s in servers {
        ok(&w.agent(s, &["join"]).await.unwrap());
    }
}

/// Writes `marker` into the cluster's etcd through the first of `servers`, and checks that
/// every one of them reads it back (one cluster, replicated).
pub(crate) fn write_marker(servers: &[Instance], marker: &str) {
    servers[0].etcd_put(MARKER, marker);
    for s in servers {
        assert_eq!(marker_of(s), marker, "{} reads the marker", s.id);
    }
}

/// The marker as this server's API reads it from etcd (empty when absent or unreadable).
pub(crate) fn marker_of(s: &Instance) -> String {
    s.etcd_get(MARKER)
}

/// The names of snapshots, for assertion messages (their bodies are etcd databases).
pub(crate) fn names(snaps: &[(String, String)]) -> Vec<&str> {
    snaps.iter().map(|(n, _)| n.as_str()).collect()
}

/// Every server dies at once: k3s stops answering and EC2 terminates the instances. Returns
/// once their scheduled-snapshot loops have stopped (none still uploading).
pub(crate) async fn lose(w: &World, servers: &[Instance]) {
    for s in servers {
        let _ = std::fs::remove_file(s.path("/run/k3s-stub/active-k3s"));
        w.terminate(s).await.unwrap();
    }
    for s in servers {
        let Some(pid) = s.file("/run/k3s-stub/snapshotter.pid") else { continue };
        let stopped = || k3s_asg_testbed::world::process_gone(&pid);
        until("the dead server's snapshot loop to stop", stopped).await;
    }
}

fn resets(servers: &[Instance]) -> usize {
    servers.iter().map(|s| s.stub_calls().iter().filter(|l| l.contains("k3s\tserver --cluster-reset")).count()).sum()
}

/// The test bed's `until`, with this file's one-minute bound.
pub(crate) async fn until(what: &str, done: impl Fn() -> bool) {
    k3s_asg_testbed::check::until(what, Duration::from_secs(60), done).await
}

/// Launches and joins `n` servers that snapshot every second, writes `marker`, waits for a snapshot of it.
pub(crate) async fn snapshotted_servers(w: &mut World, n: usize, marker: &str) -> Vec<Instance> {
    w.agent_env.insert("K3S_STUB_SNAPSHOT_EVERY".into(), "1".into());
    let old = w.servers("alpha", n).await.unwrap();
    join_each(w, &old).await;
    write_marker(&old, marker);
    snapshot_with(w, marker).await;
    w.agent_env.remove("K3S_STUB_SNAPSHOT_EVERY");
    old
}

/// Waits until a scheduled snapshot holding `marker` is in S3.
pub(crate) async fn snapshot_with(w: &World, marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if w.snapshots("alpha", BUCKET).await.unwrap().iter().any(|(n, body)| n.starts_with("etcd-snapshot-") && body.contains(marker)) {
            return;
        }
        assert!(Instant::now() < deadline, "no scheduled snapshot with the marker reached S3");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn configured_server(inst: &Instance) -> Option<String> {
    k3s_asg_agent::render::configured(&inst.file("/etc/rancher/k3s/config.yaml")?, "server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_loss_with_snapshots_restores_the_cluster_and_its_nodes_follow() {
    let mut w = world(true).await;
    w.agent_env.insert("K3S_STUB_SNAPSHOT_EVERY".into(), "1".into());
    let old = w.servers("alpha", 3).await.unwrap();
    join_each(&w, &old).await;
    let node = w.launch("alpha", "node").await.unwrap();
    let node_run = w.run_until_ready(&node).await.unwrap();
    let token = w.param(&token_name()).await.unwrap().unwrap();
    write_marker(&old, "marker: objects written before the loss");
    snapshot_with(&w, "marker: objects written before the loss").await;
    let config = w.clusters["alpha"].hostname.clone();

    lose(&w, &old).await;
    w.agent_env.remove("K3S_STUB_SNAPSHOT_EVERY");
    // The restored datastore (the snapshot's etcd data) still holds the lost servers' Nodes.
    let fresh = w.servers("alpha", 3).await.unwrap();
    w.agents_at_once(&fresh, &["join"]).await.unwrap();
    assert_eq!(resets(&fresh), 1, "exactly one restore");
    let inits = initialisers(&fresh);
    assert_eq!(inits.len(), 1, "one server brought the cluster back; the others joined it");
    let winner = inits[0];
    assert!(winner.file(RESTORED_FROM).is_some_and(|n| n.starts_with("etcd-snapshot-")), "restored a scheduled snapshot");
    for o in &old {
        assert!(winner.stub_calls().iter().any(|l| l.contains(&format!("delete node/{}", o.id))), "the lost server {}'s Node is forgotten", o.id);
    }
    for s in &fresh {
        assert_eq!(marker_of(s), "marker: objects written before the loss", "{}: the marker is back", s.id);
    }
    assert_eq!(w.param(&token_name()).await.unwrap().unwrap(), token, "the same token: nodes keep verifying");
    let rec = record(&w, 2).await.expect("recovery election 2");
    assert!(rec.recovery && rec.secured_at.is_some() && rec.winner == winner.id, "{rec:?}");
    let st = state(winner);
    assert!(st.recovery.as_ref().is_some_and(|r| r.restored && r.outcome.contains("restored snapshot")), "{:?}", st.recovery);
    assert!(st.steps.iter().any(|s| s.name == StepName::Restored));
    let status = w.agent(winner, &["status"]).await.unwrap();
    assert!(status.stdout.contains("recovery:   recovery election 2: restored snapshot"), "{}", status.stdout);
    // The API name now holds the fresh servers (and the dead ones' records are gone).
    let records: Vec<String> = w.api_records("alpha").await.unwrap().into_iter().map(|(id, _)| id).collect();
    for s in &fresh {
        assert!(records.contains(&s.id), "{config}: {records:?}");
    }
    // The node follows by itself: its server is gone, a restored one proves the CA.
    let new_ips: Vec<String> = fresh.iter().map(|s| format!("https://{}:6443", s.ip)).collect();
    until("the node to join a restored server", || configured_server(&node).is_some_and(|u| new_ips.contains(&u))).await;
    ok(&node_run.stop(Duration::from_secs(60)).await.unwrap());
    k3s_asg_testbed::reliability::held(
        "Recovery",
        "all 3 servers lost with snapshots; 3 fresh servers join at once",
        1,
        "one restore of the newest snapshot, the marker is back on every server, same token, the node follows",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_loss_without_snapshots_starts_one_new_cluster_and_says_so() {
    let w = world(false).await;
    let old = w.servers("alpha", 2).await.unwrap();
    join_each(&w, &old).await;
    let node = w.launch("alpha", "node").await.unwrap();
    let node_run = w.run_until_ready(&node).await.unwrap();
    let old_token = w.param(&token_name()).await.unwrap().unwrap();

    lose(&w, &old).await;
    let fresh = w.servers("alpha", 2).await.unwrap();
    let runs = w.agents_at_once(&fresh, &["join"]).await.unwrap();
    assert_eq!(resets(&fresh), 0, "nothing to restore");
    let inits = initialisers(&fresh);
    assert_eq!(inits.len(), 1, "exactly one new cluster");
    let new_token = w.param(&token_name()).await.unwrap().unwrap();
    assert!(new_token.starts_with("K10") && new_token != old_token, "a new secure token");
    let st = state(inits[0]);
    assert!(st.recovery.as_ref().is_some_and(|r| r.outcome.contains("the old cluster's state is gone")), "{:?}", st.recovery);
    let logged = runs.iter().map(|r| r.stderr.clone()).collect::<String>();
    assert!(logged.contains("the old cluster's state is gone"), "said in the log");
    // The node re-joins the new cluster with the new cluster's agent token.
    let agent_token = w.param("/k3s-asg/clusters/alpha/agent-token").await.unwrap().expect("agent token");
    assert_eq!(agent_token.split("::").next(), new_token.split("::").next(), "the agent token of the new cluster (its CA)");
    let password = agent_token.rsplit_once("::node:").unwrap().1.to_string();
    until("the node to join the new cluster", || {
        node.file("/etc/rancher/k3s/config.yaml").is_some_and(|c| c.contains(&password)) && state(&node).phase == Phase::Ready
    })
    .await;
    assert!(configured_server(&node).is_some_and(|u| fresh.iter().any(|s| u.contains(&s.ip))));
    ok(&node_run.stop(Duration::from_secs(60)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_server_without_a_record_wins_over_recovery_and_a_silent_member_blocks_it() {
    let mut w = world(true).await;
    let a = w.joined("alpha", "control-plane").await.unwrap();
    write_marker(std::slice::from_ref(&a), "marker: a lives");
    // A's record is lost (deleted by hand); A itself is fine.
    let c = &w.clusters["alpha"];
    let (zone, host) = (c.zone_id.clone(), c.hostname.clone());
    let lost = aws_sdk_route53::types::ResourceRecordSet::builder()
        .name(format!("{host}."))
        .r#type(aws_sdk_route53::types::RrType::A)
        .set_identifier(&a.id)
        .multi_value_answer(true)
        .ttl(30)
        .resource_records(aws_sdk_route53::types::ResourceRecord::builder().value(&a.ip).build().unwrap())
        .build()
        .unwrap();
    let change =
        aws_sdk_route53::types::Change::builder().action(aws_sdk_route53::types::ChangeAction::Delete).resource_record_set(lost).build().unwrap();
    w.route53
        .change_resource_record_sets()
        .hosted_zone_id(&zone)
        .change_batch(aws_sdk_route53::types::ChangeBatch::builder().changes(change).build().unwrap())
        .send()
        .await
        .unwrap();
    assert!(w.api_records("alpha").await.unwrap().is_empty());
    let b = w.joined("alpha", "control-plane").await.unwrap();
    assert_eq!(configured_server(&b).as_deref(), Some(format!("https://{}:6443", a.ip).as_str()), "joined the live server");
    assert_eq!(resets(std::slice::from_ref(&b)), 0);
    assert!(record(&w, 2).await.is_none(), "no recovery election");
    assert_eq!(marker_of(&b), "marker: a lives");

    // A server that holds a record and runs but does not answer could still come up: no recovery.
    for s in [&a, &b] {
        let _ = std::fs::remove_file(s.path("/run/k3s-stub/active-k3s"));
    }
    w.agent_env.insert("K3S_ASG_JOIN_TIMEOUT".into(), "4".into());
    let d = w.launch("alpha", "control-plane").await.unwrap();
    let run = w.agent(&d, &["join"]).await.unwrap();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("could still come up"), "{}", run.stderr);
    assert!(record(&w, 2).await.is_none() && resets(std::slice::from_ref(&d)) == 0, "never recovered behind a member that may return");
    k3s_asg_testbed::reliability::held(
        "Recovery",
        "a live server without an API record; a running member that does not answer",
        1,
        "the new server joins the live one; with a silent member it waits and never recovers",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_three_to_zero_and_back_to_one_keeps_the_cluster() {
    let w = world(true).await;
    let old = w.servers("alpha", 3).await.unwrap();
    join_each(&w, &old).await;
    write_marker(&old, "marker: before the night");
    // Scale-in one by one: each leaving server's member goes, the last one's stays.
    for (i, s) in old.iter().enumerate() {
        ok(&w.agent(s, &["leave"]).await.unwrap());
        w.terminate(s).await.unwrap();
        let took = state(s).steps.iter().any(|st| st.name == StepName::FinalSnapshot);
        assert_eq!(took, i == 2, "{}: only the last server saves a final snapshot", s.id);
    }
    let snaps = w.snapshots("alpha", BUCKET).await.unwrap();
    assert_eq!(snaps.len(), 1, "{:?}", names(&snaps));
    assert!(snaps[0].0.starts_with(&format!("k3s-asg-final-{}-", old[2].id)) && snaps[0].1.contains("marker: before the night"));
    assert!(w.api_records("alpha").await.unwrap().is_empty());

    // Morning: scale to 1.
    let morning = w.servers("alpha", 1).await.unwrap();
    ok(&w.agent(&morning[0], &["join"]).await.unwrap());
    assert_eq!(marker_of(&morning[0]), "marker: before the night");
    assert_eq!(morning[0].file(RESTORED_FROM).as_deref(), Some(snaps[0].0.as_str()));
    let s3: Vec<String> = w.recorder.calls_by(&morning[0].access_key()).into_iter().filter(|c| c.service == "s3").map(|c| c.operation).collect();
    assert!(s3.contains(&"ListObjectsV2".to_string()) && s3.contains(&"GetObject".to_string()), "the agent listed, k3s fetched: {s3:?}");
    // k3s ran (final snapshot, restore) with none of the agent's AWS credentials in its environment.
    for s in old.iter().chain(&morning) {
        let leaked: Vec<String> = s.stub_calls().into_iter().filter(|l| l.contains("k3s-env")).collect();
        assert!(leaked.is_empty(), "{}: {leaked:?}", s.id);
    }
    k3s_asg_testbed::reliability::held("Recovery", "control plane scaled 3 → 0 → 1", 1, "the last server's final snapshot is restored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_fresh_servers_after_a_loss_elect_one_restorer() {
    let mut w = world(true).await;
    let old = snapshotted_servers(&mut w, 1, "marker: ten").await;
    lose(&w, &old).await;
    super::common::patient(&mut w);
    let fresh = w.servers("alpha", 10).await.unwrap();
    w.agents_at_once(&fresh, &["join"]).await.unwrap();
    assert_eq!(resets(&fresh), 1, "exactly one restorer");
    assert_eq!(initialisers(&fresh).len(), 1);
    assert!(fresh.iter().all(|s| marker_of(s) == "marker: ten"));
    assert!(record(&w, 2).await.is_some_and(|r| r.recovery) && record(&w, 3).await.is_none(), "one recovery election");
    k3s_asg_testbed::reliability::held(
        "Races",
        "10 fresh servers join at once after the whole control plane was lost",
        1,
        "one recovery election, one restore",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_every_server_away_at_once_still_saves_a_final_snapshot() {
    let w = world(true).await;
    let old = w.servers("alpha", 3).await.unwrap();
    join_each(&w, &old).await;
    write_marker(&old, "marker: all at once");
    // Every server a healthy voter, and every one terminating behind the hook.
    for s in &old {
        w.asg.add(&s.id, "alpha-control-plane", "Terminating:Wait", 30);
    }
    w.agents_at_once(&old, &["leave"]).await.unwrap();
    let snaps = w.snapshots("alpha", BUCKET).await.unwrap();
    assert!(!snaps.is_empty() && snaps.iter().all(|(n, b)| n.starts_with("k3s-asg-final-") && b.contains("marker: all at once")), "{:?}", names(&snaps));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stopped_through_a_recovery_comes_back_into_the_recovered_cluster() {
    let mut w = world(true).await;
    let old = snapshotted_servers(&mut w, 2, "marker: stopped").await;
    // The initialiser is stopped (not terminated), the other lost.
    let a = &old[0];
    let _ = std::fs::remove_file(a.path("/run/k3s-stub/active-k3s"));
    w.ec2.stop_instances().instance_ids(&a.id).send().await.unwrap();
    lose(&w, &old[1..]).await;
    let c = w.joined("alpha", "control-plane").await.unwrap();
    assert!(c.file(RESTORED_FROM).is_some(), "c recovered the cluster");
    c.etcd_put(MARKER, "marker: written after the recovery");
    // a starts again: its old datastore must not come back as a second cluster.
    w.ec2.start_instances().instance_ids(&a.id).send().await.unwrap();
    let run = w.agent(a, &["join"]).await.unwrap();
    ok(&run);
    assert!(run.stderr.contains("recovered without it"), "{}", run.stderr);
    assert_eq!(configured_server(a).as_deref(), Some(format!("https://{}:6443", c.ip).as_str()), "a joined the recovered cluster");
    assert_eq!(marker_of(a), "marker: written after the recovery", "a's old datastore is gone");
    assert!(initialisers(std::slice::from_ref(a)).is_empty());
    k3s_asg_testbed::reliability::held(
        "Recovery",
        "a stopped initialiser starts again after its cluster was recovered without it",
        1,
        "it resets its datastore and joins the recovered cluster; no second cluster",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_will_not_restore_is_set_aside_for_the_next_newest() {
    let mut w = world(true).await;
    let old = snapshotted_servers(&mut w, 1, "marker: good").await;
    lose(&w, &old).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // a later LastModified than the good ones
    let broken = format!("etcd-snapshot-{}-9999999999", old[0].id);
    w.s3().put_object().bucket(BUCKET).key(format!("clusters/alpha/{broken}")).body(b"not a snapshot".to_vec().into()).send().await.unwrap();
    let a = w.launch("alpha", "control-plane").await.unwrap();
    for attempt in 1..=3 {
        let run = w.agent(&a, &["join"]).await.unwrap();
        assert_eq!(run.code, 1, "attempt {attempt}: the broken snapshot fails to restore");
    }
    assert_eq!(state(&a).failed_snapshots(), vec![broken.clone()]);
    ok(&w.agent(&a, &["join"]).await.unwrap());
    assert_eq!(marker_of(&a), "marker: good");
    assert!(a.file(RESTORED_FROM).is_some_and(|n| n != broken));
    assert!(record(&w, 3).await.is_none(), "still one recovery election");
}

/// A snapshot of another cluster (its k3s token hash is not this cluster's: a folder shared by
/// mistake, an old cluster's leftovers) newer than the cluster's own is skipped and named; the
/// cluster's own newest is restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_snapshot_of_another_cluster_is_skipped_by_a_restore() {
    let mut w = world(true).await;
    let old = snapshotted_servers(&mut w, 1, "marker: ours").await;
    lose(&w, &old).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // a later LastModified than ours
    let foreign = "etcd-snapshot-i-0f0f0f0f0f0f0f0f0-9999999999";
    w.s3()
        .put_object()
        .bucket(BUCKET)
        .key(format!("clusters/alpha/{foreign}"))
        .metadata("k3s-token-hash", "0123456789ab")
        .body(b"another cluster's etcd".to_vec().into())
        .send()
        .await
        .unwrap();
    let a = w.launch("alpha", "control-plane").await.unwrap();
    let run = w.agent(&a, &["join"]).await.unwrap();
    ok(&run);
    assert!(run.stderr.contains("skipping a snapshot of another cluster") && run.stderr.contains(foreign), "said so:\n{}", run.stderr);
    assert!(a.file(RESTORED_FROM).is_some_and(|n| n.starts_with(&format!("etcd-snapshot-{}-", old[0].id))), "its own snapshot");
    assert_eq!(marker_of(&a), "marker: ours");
    assert!(state(&a).failed_snapshots().is_empty(), "the foreign one was never tried");
    let outcome = state(&a).recovery.expect("recovery").outcome;
    assert!(outcome.contains(&format!("skipped {foreign}")), "{outcome}");
}

/// k3s prunes its scheduled S3 snapshots to the retention by name prefix across every server
/// writing to the folder (k3s-io/k3s `pkg/etcd/s3/s3.go` `SnapshotRetention`: the prefix is
/// `<folder>/<etcd-snapshot-name>`, not per node), so a replaced server's snapshots go within the
/// same bound as everyone's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_snapshots_a_replaced_server_left_are_pruned_to_the_retention() {
    let mut w = world(true).await;
    w.agent_env.insert("K3S_STUB_SNAPSHOT_EVERY".into(), "1".into());
    let a = w.joined("alpha", "control-plane").await.unwrap();
    let scheduled_by = |id: &str, snaps: &[(String, String)]| snaps.iter().filter(|(n, _)| n.starts_with(&format!("etcd-snapshot-{id}-"))).count();
    let deadline = Instant::now() + Duration::from_secs(60);
    while scheduled_by(&a.id, &w.snapshots("alpha", BUCKET).await.unwrap()) < 3 {
        assert!(Instant::now() < deadline, "a's scheduled snapshots");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // a is replaced: b joins, a leaves and is terminated; a's snapshots stay behind in S3.
    let b = w.joined("alpha", "control-plane").await.unwrap();
    ok(&w.agent(&a, &["leave"]).await.unwrap());
    w.terminate(&a).await.unwrap();
    // b's schedule prunes them with its own, to the retention (5).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let snaps = w.snapshots("alpha", BUCKET).await.unwrap();
        let scheduled = snaps.iter().filter(|(n, _)| n.starts_with("etcd-snapshot-")).count();
        if scheduled_by(&a.id, &snaps) == 0 && scheduled_by(&b.id, &snaps) >= 5 {
            assert!(scheduled <= 5 + 1, "at most the retention (and one being written): {:?}", names(&snaps));
            break;
        }
        assert!(Instant::now() < deadline, "a's leftovers were not pruned: {:?}", names(&snaps));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
