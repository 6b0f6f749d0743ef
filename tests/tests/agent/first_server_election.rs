//! The first-server election (issue: a safe first-server election): servers that join a
//! fresh cluster at once elect exactly one initialiser (5 at once; 10 at once, 20 times); a
//! dead winner is replaced by exactly one of the servers that come after it (10 at once, 20
//! times, too), a slow but live winner is never displaced, and a lost token never starts a
//! second cluster behind live servers; a live server puts it back.

use super::common::{initialisers, patient, ADMIN, DRAIN, TOKEN};
use k3s_asg_agent::election::Record;
use k3s_asg_agent::state::Phase;
use k3s_asg_testbed::check::{ok, state, wait_for_phase};
use k3s_asg_testbed::world::{secrets_of, Instance, World};
use std::time::{Duration, Instant};

// The fresh-cluster race's size and repetitions (the dead-winner race states its own).
const SERVERS: usize = 10;
/// Ten real etcd members take about a minute to form: etcd adds one learner at a time, and no
/// member within 5 s of the last membership change (its health interval). Three rounds each.
const REPETITIONS: usize = 3;

fn token_name(cluster: &str) -> String {
    format!("/k3s-asg/clusters/{cluster}/token")
}

fn election_name(cluster: &str, epoch: u64) -> String {
    format!("/k3s-asg/clusters/{cluster}/election/{epoch}")
}

async fn record(w: &World, cluster: &str, epoch: u64) -> Option<Record> {
    w.param(&election_name(cluster, epoch)).await.unwrap().map(|v| serde_json::from_str(&v).expect("an election record is JSON"))
}

/// A cluster whose first winner failed to start k3s and was then terminated: the token
/// parameter holds its election token, election 1 names it.
async fn dead_winner(w: &mut World, cluster: &str) -> Instance {
    w.create_cluster(cluster).await.unwrap();
    let a = w.launch(cluster, "control-plane").await.unwrap();
    w.agent_env.insert("K3S_STUB_FAIL_START".into(), "1".into());
    let run = w.agent(&a, &["join"]).await.unwrap();
    w.agent_env.remove("K3S_STUB_FAIL_START");
    assert_eq!(run.code, 1, "k3s failed to start on the winner:\n{}", run.stderr);
    assert_eq!(record(w, cluster, 1).await.expect("election 1").winner, a.id);
    let token = w.param(&token_name(cluster)).await.unwrap().expect("the winner wrote its election token");
    assert!(!token.starts_with("K10"), "never secured");
    w.terminate(&a).await.unwrap();
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_servers_at_once_elect_exactly_one() {
    let w = World::with_cluster("alpha").await.unwrap();
    let tg = w.target_group("alpha");
    let servers = w.servers("alpha", 5).await.unwrap();
    let runs = w.agents_at_once(&servers, &["join"]).await.unwrap();
    let inits = servers.iter().filter(|s| s.file("/etc/rancher/k3s/config.yaml").unwrap().contains("cluster-init: true")).count();
    assert_eq!(inits, 1, "exactly one server initialises the cluster");
    let creates = w.recorder.calls().iter().filter(|c| c.operation == "PutParameter").count();
    assert!(creates >= 5, "every server tried to create or secure the token ({creates})");
    let mut ids: Vec<String> = servers.iter().map(|s| s.id.clone()).collect();
    ids.sort();
    let records: Vec<String> = w.api_records("alpha").await.unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(records, ids, "five API records");
    assert_eq!(w.members(&tg).await.unwrap(), ids, "all registered");
    let token = w.param(TOKEN).await.unwrap().unwrap();
    assert!(token.starts_with("K10"));
    let roots: Vec<&std::path::Path> = servers.iter().map(|s| s.root.as_path()).collect();
    let secrets = secrets_of(&[Some(token), w.param(ADMIN).await.unwrap(), w.param(DRAIN).await.unwrap()], &roots);
    for r in &runs {
        for s in &secrets {
            assert!(!r.stderr.contains(s.as_str()) && !r.stdout.contains(s.as_str()), "a secret leaked into a server's log");
        }
    }
    k3s_asg_testbed::reliability::held("Secrets", "token and kubeconfigs searched in the logs of 5 servers joining at once", 1, "none found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_servers_at_once_elect_exactly_one_three_times() {
    let mut w = World::new().await.unwrap();
    patient(&mut w);
    for rep in 0..REPETITIONS {
        w.recorder.clear();
        let cluster = format!("race{rep}");
        w.create_cluster(&cluster).await.unwrap();
        let tg = w.target_group(&cluster);
        let servers = w.servers(&cluster, SERVERS).await.unwrap();
        let runs = w.agents_at_once(&servers, &["join"]).await.unwrap();
        let inits: Vec<usize> =
            (0..servers.len()).filter(|i| servers[*i].file("/etc/rancher/k3s/config.yaml").unwrap().contains("cluster-init: true")).collect();
        if inits.len() != 1 {
            // Say what each initialiser saw (its log has no secrets) and what SSM was asked.
            let mut why = String::new();
            for i in &inits {
                let log = &runs[*i].stderr;
                let lines: Vec<&str> = log.lines().filter(|l| l.contains("token") || l.contains("mode") || l.contains("PutParameter")).collect();
                why += &format!("\n{}:\n  {}", servers[*i].id, lines.join("\n  "));
            }
            let puts: Vec<(String, u16)> =
                w.recorder.calls().into_iter().filter(|c| c.operation == "PutParameter").map(|c| (c.caller, c.status)).collect();
            panic!("repetition {rep}: {} servers initialised the cluster:{why}\nPutParameter calls: {puts:?}", inits.len());
        }
        let mut ids: Vec<String> = servers.iter().map(|s| s.id.clone()).collect();
        ids.sort();
        let records: Vec<String> = w.api_records(&cluster).await.unwrap().into_iter().map(|(id, _)| id).collect();
        assert_eq!(records, ids, "repetition {rep}: one API record per server");
        assert_eq!(w.members(&tg).await.unwrap(), ids, "repetition {rep}: each registered once");
        let token = w.param(&format!("/k3s-asg/clusters/{cluster}/token")).await.unwrap().unwrap();
        assert!(token.starts_with("K10"), "repetition {rep}: token secured");
        // Every joiner joined with the one secured token (the initialiser keeps its election token).
        let tokens: std::collections::BTreeSet<String> = servers
            .iter()
            .filter(|s| !s.file("/etc/rancher/k3s/config.yaml").unwrap().contains("cluster-init: true"))
            .filter_map(|s| s.file("/etc/rancher/k3s/config.yaml").unwrap().lines().find(|l| l.starts_with("token:")).map(str::to_string))
            .collect();
        assert_eq!(tokens.len(), 1, "repetition {rep}: joiners disagree on the token");
        assert!(tokens.iter().next().unwrap().contains(&token), "repetition {rep}: joiners use the secured token");
    }
    k3s_asg_testbed::reliability::held(
        "Races",
        &format!("{SERVERS} control-plane agents join a fresh cluster at once"),
        REPETITIONS,
        "exactly one cluster-init every time; one API record and one registration per server; every joiner uses the secured token",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_winner_is_replaced_and_the_fresh_servers_form_one_cluster() {
    let mut w = World::new().await.unwrap();
    let a = dead_winner(&mut w, "alpha").await;
    let servers = vec![w.launch("alpha", "control-plane").await.unwrap(), w.launch("alpha", "control-plane").await.unwrap()];
    let node = w.launch("alpha", "node").await.unwrap();
    let mut runs = w.agents_at_once(servers.iter().chain([&node]), &["join"]).await.unwrap();
    let inits = initialisers(&servers);
    assert_eq!(inits.len(), 1, "exactly one cluster-init");
    let winner = inits[0];
    let second = record(&w, "alpha", 2).await.expect("election 2 was held");
    assert_eq!(second.winner, winner.id);
    let why = second.took_over.expect("the record says why");
    assert!(why.contains(&a.id) && why.contains("terminated"), "{why}");
    assert!(record(&w, "alpha", 3).await.is_none(), "one takeover, not two");
    assert!(w.param(&token_name("alpha")).await.unwrap().unwrap().starts_with("K10"), "the new winner secured the token");
    let mut ids: Vec<String> = servers.iter().map(|s| s.id.clone()).collect();
    ids.sort();
    let records: Vec<String> = w.api_records("alpha").await.unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(records, ids, "both servers publish, the dead winner does not");
    // `status` says what happened.
    let status = w.agent(winner, &["status"]).await.unwrap();
    assert!(status.stdout.contains("election:   won election 2") && status.stdout.contains("terminated"), "{}", status.stdout);
    assert_eq!(state(&node).phase, Phase::Ready);
    runs.clear();
    k3s_asg_testbed::reliability::held(
        "Election",
        "the first winner fails to start k3s and is terminated; two fresh servers and a node join",
        1,
        "exactly one cluster-init (election 2, its record names the dead winner); token secured; both servers and the node joined",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_servers_after_a_dead_winner_elect_exactly_one_three_times() {
    let mut w = World::new().await.unwrap();
    patient(&mut w);
    for rep in 0..REPETITIONS {
        let cluster = format!("dead{rep}");
        dead_winner(&mut w, &cluster).await;
        let servers = w.servers(&cluster, SERVERS).await.unwrap();
        w.agents_at_once(&servers, &["join"]).await.unwrap();
        let inits = initialisers(&servers);
        assert_eq!(inits.len(), 1, "repetition {rep}: exactly one cluster-init");
        assert_eq!(record(&w, &cluster, 2).await.expect("election 2").winner, inits[0].id, "repetition {rep}");
        assert!(record(&w, &cluster, 3).await.is_none(), "repetition {rep}: exactly one takeover");
        let token = w.param(&token_name(&cluster)).await.unwrap().unwrap();
        assert!(token.starts_with("K10"), "repetition {rep}: token secured");
        assert_eq!(w.api_records(&cluster).await.unwrap().len(), SERVERS, "repetition {rep}: every server joined");
    }
    k3s_asg_testbed::reliability::held(
        "Election",
        &format!("{SERVERS} fresh servers at once after a dead winner"),
        REPETITIONS,
        "exactly one takeover (election 2) and one cluster-init every time; every server joined it",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_live_winner_is_not_displaced() {
    let mut w = World::with_cluster("alpha").await.unwrap();
    // A short lease: the contender's patience runs out many times while the winner is slow.
    w.agent_env.insert("K3S_ASG_ELECTION_LEASE".into(), "2".into());
    let a = w.launch("alpha", "control-plane").await.unwrap();
    std::fs::create_dir_all(a.path("/run/k3s-stub")).unwrap();
    std::fs::write(a.path("/run/k3s-stub/not-ready"), "").unwrap();
    let slow = w.spawn_agent(&a, &["join"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while record(&w, "alpha", 1).await.is_none() {
        assert!(Instant::now() < deadline, "the slow server never won election 1");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = w.launch("alpha", "control-plane").await.unwrap();
    let contender = w.spawn_agent(&b, &["join"]).unwrap();
    // Let three leases pass while B waits: the time itself is what is tested.
    let waiting = Instant::now();
    while waiting.elapsed() < Duration::from_secs(6) {
        assert!(record(&w, "alpha", 2).await.is_none(), "a live winner was displaced");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let st = state(&b);
    assert!(st.waiting_for.as_deref().is_some_and(|r| r.contains(&a.id) && r.contains("election 1")), "{st:?}");
    let version = w.ssm.get_parameter().name(election_name("alpha", 1)).send().await.unwrap().parameter().unwrap().version();
    assert!(version >= 3, "the winner renewed its lease (record version {version})");
    // The winner's k3s becomes ready: it secures the token and B joins it.
    std::fs::remove_file(a.path("/run/k3s-stub/not-ready")).unwrap();
    ok(&slow.wait(Duration::from_secs(30)).await.unwrap());
    ok(&contender.wait(Duration::from_secs(60)).await.unwrap());
    assert_eq!(initialisers(&[a, b]).len(), 1, "one cluster");
    assert!(record(&w, "alpha", 2).await.is_none());
    k3s_asg_testbed::reliability::held(
        "Election",
        "the winner's k3s takes three leases to become ready (lease renewed); a second server waits",
        1,
        "no second election; the winner secures the token; the waiting server joins it",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_token_never_starts_a_second_cluster_and_a_live_server_puts_it_back() {
    let mut w = World::with_cluster("alpha").await.unwrap();
    let a = w.launch("alpha", "control-plane").await.unwrap();
    let b = w.launch("alpha", "control-plane").await.unwrap();
    ok(&w.agent(&a, &["join"]).await.unwrap());
    ok(&w.agent(&b, &["join"]).await.unwrap());
    let token = w.param(&token_name("alpha")).await.unwrap().unwrap();
    w.ssm.delete_parameter().name(token_name("alpha")).send().await.unwrap();

    // A new server refuses, says why and how to fix it, and writes nothing to AWS.
    let c = w.launch("alpha", "control-plane").await.unwrap();
    w.recorder.clear();
    let refused = w.agent(&c, &["join"]).await.unwrap();
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("is missing but server(s)") && refused.stderr.contains("/var/lib/rancher/k3s/server/token"),
        "{}",
        refused.stderr
    );
    let writes: Vec<String> = w.recorder.calls_by(&c.access_key()).into_iter().filter(|c| c.is_mutating()).map(|c| c.operation).collect();
    assert!(writes.is_empty(), "the refusing server wrote {writes:?}");
    assert!(initialisers(std::slice::from_ref(&c)).is_empty() && c.file("/etc/rancher/k3s/config.yaml").is_none(), "no k3s configured");
    assert_eq!(w.param(&token_name("alpha")).await.unwrap(), None);

    // A live server in `run` republishes its cluster's token; the new server then joins.
    w.agent_env.insert("K3S_ASG_TOKEN_CHECK".into(), "1".into());
    let guard = w.spawn_agent(&a, &["run"]).unwrap();
    wait_for_phase(&a, Phase::Ready).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while w.param(&token_name("alpha")).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the live server never republished the token");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(w.param(&token_name("alpha")).await.unwrap().unwrap(), token, "the same secure token is back");
    ok(&w.agent(&c, &["join"]).await.unwrap());
    assert!(initialisers(std::slice::from_ref(&c)).is_empty(), "the new server joined, it did not initialise");
    assert_eq!(w.api_records("alpha").await.unwrap().len(), 3);
    guard.stop(Duration::from_secs(30)).await.unwrap();
    k3s_asg_testbed::reliability::held(
        "Election",
        "two servers live, the token parameter deleted; a third server boots; a live server runs `run`",
        1,
        "the third server exits 1 naming the parameter and the fix, writes nothing to AWS; the live server republishes the same token; the third server then joins",
    );
}

/// k3s writes a tombstone when a server's etcd member was removed (its Node deleted while it
/// ran); started again with `cluster-init: true` and no `server:`, k3s would begin a second
/// cluster with the same CA and token (k3s-io/k3s pkg/etcd/etcd.go). The initialiser's agent
/// backs its datastore up, resets it and joins the live cluster instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_initialiser_joins_the_live_cluster_and_never_starts_another() {
    let w = World::with_cluster("alpha").await.unwrap();
    let a = w.joined("alpha", "control-plane").await.unwrap();
    let b = w.joined("alpha", "control-plane").await.unwrap();
    assert!(a.file("/etc/rancher/k3s/config.yaml").is_some_and(|c| c.contains("cluster-init: true")), "a initialised the cluster");
    // a's Node is deleted while it runs (by hand, through b): k3s removes its etcd member, a's
    // k3s writes its tombstone and exits, and its unit refuses the automatic restart (which
    // would have started a second cluster from a's certificates: cluster-init, no server).
    b.delete_node(&a.id);
    let tombstone = a.path("/var/lib/rancher/k3s/server/db/etcd/tombstone");
    k3s_asg_testbed::check::until("a's tombstone", Duration::from_secs(60), || tombstone.exists()).await;
    k3s_asg_testbed::check::until("systemd's automatic restart of a's k3s, refused", Duration::from_secs(30), || {
        a.stub_calls().iter().filter(|l| l.contains("systemctl\tstart --no-block k3s")).count() >= 1 && a.path("/run/k3s-stub/failed-k3s").exists()
    })
    .await;
    assert!(!a.path("/run/k3s-stub/active-k3s").exists(), "a's k3s did not start again on its own");
    assert_eq!(b.etcd_members().len(), 1, "b alone: {:?}", b.etcd_members());

    ok(&w.agent(&a, &["join"]).await.unwrap());
    let config = a.file("/etc/rancher/k3s/config.yaml").unwrap();
    assert!(!config.contains("cluster-init: true"), "never cluster-init again:\n{config}");
    assert!(config.contains(&format!("server: \"https://{}:6443\"", b.ip)), "joins the live server:\n{config}");
    assert!(!a.path("/var/lib/rancher/k3s/server/db/etcd/tombstone").exists(), "the removed member's datastore is reset");
    let backups: Vec<_> = std::fs::read_dir(a.path("/var/lib/rancher/k3s/server/db-backups")).expect("a backup").flatten().collect();
    assert!(backups.len() == 1 && backups[0].path().join("etcd/tombstone").exists(), "…after a backup of it");
    assert_eq!(state(&a).mode, Some(k3s_asg_agent::vocab::Mode::Join));
    assert!(state(&a).election.is_some_and(|e| e.contains("tombstone")), "status says why");
    // One cluster: a is a member of b's again.
    let members = b.etcd_members();
    assert!(members.len() == 2 && members.iter().any(|(n, _)| n.starts_with(&a.id)), "{members:?}");
}
