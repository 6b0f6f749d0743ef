//! Races: many servers electing at once, repeatedly; a join while the
//! coordinator collects garbage. (Two coordinators at once: coordinator.rs.)

use k3s_asg_testbed::check::ok;
use k3s_asg_testbed::world::World;

const SERVERS: usize = 10;
const REPETITIONS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_servers_at_once_elect_exactly_one_twenty_times() {
    let mut w = World::new().await.unwrap();
    for rep in 0..REPETITIONS {
        w.recorder.clear();
        let cluster = format!("race{rep}");
        w.create_cluster(&cluster).await.unwrap();
        let tg = w.clusters[&cluster].target_group_arn.clone();
        let mut servers = Vec::new();
        for _ in 0..SERVERS {
            servers.push(w.launch(&cluster, "control-plane").await.unwrap());
        }
        let runs = k3s_asg_testbed::join_all(servers.iter().map(|s| w.agent(s, &["join"])).collect()).await;
        for r in &runs {
            ok(r.as_ref().unwrap());
        }
        let inits: Vec<usize> =
            (0..servers.len()).filter(|i| servers[*i].file("/etc/rancher/k3s/config.yaml").unwrap().contains("cluster-init: true")).collect();
        if inits.len() != 1 {
            // Say what each initialiser saw (its log has no secrets) and what SSM was asked.
            let mut why = String::new();
            for i in &inits {
                let log = &runs[*i].as_ref().unwrap().stderr;
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
async fn a_join_while_the_coordinator_collects_garbage() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    w.create_alb(443, 100).await.unwrap();
    let tg = w.clusters["alpha"].target_group_arn.clone();
    let a = w.launch("alpha", "control-plane").await.unwrap();
    ok(&w.agent(&a, &["join"]).await.unwrap());
    // Three servers die without leaving: their API records are garbage.
    let mut dead = Vec::new();
    for _ in 0..3 {
        let d = w.launch("alpha", "control-plane").await.unwrap();
        ok(&w.agent(&d, &["join"]).await.unwrap());
        w.terminate(&d).await.unwrap();
        dead.push(d);
    }
    // New servers join (and prune the same stale records) while coordinators collect them.
    let b = w.launch("alpha", "control-plane").await.unwrap();
    let c = w.launch("alpha", "control-plane").await.unwrap();
    let (joins, applies) = tokio::join!(
        k3s_asg_testbed::join_all(vec![w.agent(&b, &["join"]), w.agent(&c, &["join"])]),
        k3s_asg_testbed::join_all(vec![w.coordinator(&["apply"]), w.coordinator(&["apply"]), w.coordinator(&["apply"])]),
    );
    for r in joins.iter().chain(applies.iter()) {
        ok(r.as_ref().unwrap());
    }
    let mut live = vec![a.id.clone(), b.id.clone(), c.id.clone()];
    live.sort();
    let records: Vec<String> = w.api_records("alpha").await.unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(records, live, "the joiners' records survive, the dead ones are gone");
    // Registrations of the dead are the ASG's and the ALB's business; the live ones are all there.
    let members = w.members(&tg).await.unwrap();
    for id in &live {
        assert!(members.contains(id), "{id} registered: {members:?}");
    }
    // Converged: one more apply writes nothing.
    w.recorder.clear();
    ok(&w.coordinator(&["apply"]).await.unwrap());
    let writes: Vec<String> = w.recorder.calls().into_iter().filter(|c| c.is_mutating()).map(|c| c.operation).collect();
    assert!(writes.is_empty(), "{writes:?}");
    k3s_asg_testbed::reliability::held(
        "Races",
        "2 servers join while 3 coordinators collect the API records of 3 dead servers",
        1,
        "all exit 0; the live servers' records kept, the dead ones' gone; registrations kept; one more apply writes nothing",
    );
}
