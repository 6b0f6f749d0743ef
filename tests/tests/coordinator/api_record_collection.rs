//! The API records of servers that are gone are collected by the coordinator: alone, while
//! servers join (and prune the same records), and when another writer deleted a record first
//! (the server's own record is published all the same).

use super::common::writes;
use k3s_asg_testbed::check::ok;
use k3s_asg_testbed::world::World;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_records_of_stopped_instances_are_collected() {
    let (w, _) = World::with_alb(&["alpha"]).await.unwrap();
    let a = w.launch("alpha", "control-plane").await.unwrap();
    let b = w.launch("alpha", "control-plane").await.unwrap();
    for s in [&a, &b] {
        let run = w.agent(s, &["join"]).await.unwrap();
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    w.terminate(&b).await.unwrap();
    let plan = w.coordinator(&["plan"]).await.unwrap();
    ok(&plan);
    assert!(plan.stdout.contains(&format!("- record api.alpha.us-east-1.example.com. A ({})", b.id)), "{}", plan.stdout);
    ok(&w.coordinator(&["apply"]).await.unwrap());
    let ids: Vec<String> = w.api_records("alpha").await.unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![a.id.clone()]);
    w.recorder.clear();
    ok(&w.coordinator(&["apply"]).await.unwrap());
    assert!(writes(&w).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_while_the_coordinator_collects_garbage() {
    let (w, _) = World::with_alb(&["alpha"]).await.unwrap();
    let tg = w.target_group("alpha");
    let a = w.joined("alpha", "control-plane").await.unwrap();
    // Three servers die without leaving: their API records are garbage.
    let mut dead = Vec::new();
    for _ in 0..3 {
        let d = w.joined("alpha", "control-plane").await.unwrap();
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

/// The names of the mutating calls, in order, with their HTTP status.
fn writes_of(w: &World, caller: &str) -> Vec<(String, u16)> {
    w.recorder.calls_by(caller).into_iter().filter(|c| c.is_mutating()).map(|c| (c.operation, c.status)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_deleted_by_another_writer_fails_neither_the_own_record_nor_the_collector() {
    let (w, _) = World::with_alb(&["alpha"]).await.unwrap();
    let hostname = w.clusters["alpha"].hostname.clone();
    let a = w.joined("alpha", "control-plane").await.unwrap();
    // A stopped server's record that another writer deletes between b's read and b's write.
    const DEAD: &str = "i-0deadbeefdeadbeef";
    w.recorder.phantom_api_record(&hostname, DEAD, "10.9.9.9");
    let b = w.launch("alpha", "control-plane").await.unwrap();
    w.recorder.clear();
    ok(&w.agent(&b, &["join"]).await.unwrap());
    let ids: Vec<String> = w.api_records("alpha").await.unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, {
        let mut v = vec![a.id.clone(), b.id.clone()];
        v.sort();
        v
    });
    // The own record alone (accepted), then the stale delete alone (Route53: not found), which
    // a re-read shows was done by someone else.
    let changes: Vec<u16> =
        writes_of(&w, &b.access_key()).into_iter().filter(|(op, _)| op == "ChangeResourceRecordSets").map(|(_, status)| status).collect();
    assert_eq!(changes, vec![200, 400], "{:?}", w.recorder.calls_by(&b.access_key()));
    assert!(w.recorder.calls_by(&b.access_key()).iter().any(|c| c.operation == "ChangeResourceRecordSets" && c.status == 400));

    // The coordinator's collection of the same kind of record does not fail either.
    w.recorder.phantom_api_record(&hostname, DEAD, "10.9.9.9");
    let run = w.coordinator(&["apply"]).await.unwrap();
    ok(&run);
    assert!(run.stderr.contains("already deleted by another writer"), "{}", run.stderr);
    k3s_asg_testbed::reliability::held(
        "Adversity",
        "a stale API record deleted by another writer between a server's read and its write (Route53 refuses the DELETE)",
        1,
        "the server's own record is published in a request of its own; the refused delete is re-read and counted as done; the coordinator's collection does the same",
    );
}
