//! At 30 % injected AWS faults (throttling with each protocol's real error,
//! 500/503s and dropped connections before the call, answers lost or connections
//! dropped after moto applied the call, answers 0.5–2.5 s late), join,
//! leave and coordinator apply converge — retried as systemd or the Lambda
//! schedule would retry them — to the fault-free end state, with no duplicates.

use k3s_asg_testbed::world::{AgentRun, Instance, World};

const RATE: f64 = 0.3;
const ATTEMPTS: usize = 10;

/// Runs the agent until it exits 0 (as `Restart=on-failure` would), at most ATTEMPTS times.
async fn agent_until_ok(w: &World, inst: &Instance, args: &[&str]) -> (AgentRun, usize) {
    let mut last = None;
    for attempt in 1..=ATTEMPTS {
        let run = w.agent(inst, args).await.unwrap();
        assert_ne!(run.code, 2, "a fault must never look like bad input: {}", run.stderr);
        if run.code == 0 {
            return (run, attempt);
        }
        last = Some(run);
    }
    panic!("{} {args:?} never succeeded: {}", inst.id, last.unwrap().stderr);
}

async fn coordinator_until_ok(w: &World) -> usize {
    for attempt in 1..=ATTEMPTS {
        let run = w.coordinator(&["apply"]).await.unwrap();
        assert_ne!(run.code, 2, "{}", run.stderr);
        if run.code == 0 {
            return attempt;
        }
    }
    panic!("coordinator apply never succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_and_apply_converge_under_faults() {
    let (w, listener) = World::with_alb(&["alpha"]).await.unwrap();
    w.put_endpoint("blog", serde_json::json!({ "hostname": "blog.example.com", "clusters": { "alpha": 1 } })).await.unwrap();
    let tg = w.clusters["alpha"].target_group_arn.clone();
    w.recorder.set_fault_rate(RATE);

    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(w.launch("alpha", "control-plane").await.unwrap());
    }
    let node = w.launch("alpha", "node").await.unwrap();
    let all: Vec<&Instance> = servers.iter().chain(std::iter::once(&node)).collect();
    let runs = k3s_asg_testbed::join_all(all.iter().map(|i| agent_until_ok(&w, i, &["join"])).collect()).await;
    let retries: usize = runs.iter().map(|(_, n)| n - 1).sum();

    let inits = servers.iter().filter(|s| s.file("/etc/rancher/k3s/config.yaml").unwrap().contains("cluster-init: true")).count();
    assert_eq!(inits, 1, "exactly one cluster-init under faults");
    let mut ids: Vec<String> = servers.iter().map(|s| s.id.clone()).collect();
    ids.sort();
    let records: Vec<String> = w.api_records("alpha").await.unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(records, ids, "one API record per server, no duplicates");
    let mut members = ids.clone();
    members.push(node.id.clone());
    members.sort();
    assert_eq!(w.members(&tg).await.unwrap(), members, "each instance registered once");
    assert!(w.param("/k3s-asg/clusters/alpha/token").await.unwrap().unwrap().starts_with("K10"));

    // The coordinator converges too.
    let attempts = coordinator_until_ok(&w).await;
    let hosts = w.rule_hosts(&listener).await.unwrap();
    assert_eq!(hosts, vec!["*--alpha.us-east-1.example.com".to_string(), "blog.example.com".to_string()], "no duplicate rules");

    // Leave under faults.
    let (_, leave_attempts) = agent_until_ok(&w, &node, &["leave"]).await;
    assert!(!w.members(&tg).await.unwrap().contains(&node.id));

    // Faults really happened, of both kinds.
    let calls = w.recorder.calls();
    let failed = calls.iter().filter(|c| matches!(c.status, 0 | 400 | 500 | 503)).count();
    assert!(failed * 10 >= calls.len(), "only {failed} of {} calls failed", calls.len());

    // Without faults, everything is already converged: no writes.
    w.recorder.set_fault_rate(0.0);
    w.recorder.clear();
    for s in &servers {
        let run = w.agent(s, &["join"]).await.unwrap();
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    let run = w.coordinator(&["apply"]).await.unwrap();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let writes: Vec<String> = w.recorder.calls().into_iter().filter(|c| c.is_mutating()).map(|c| c.operation).collect();
    assert!(writes.is_empty(), "not converged: {writes:?}");
    let summary = format!(
        "{failed} of {} calls failed ({} throttled, {} 500/503, {} dropped connections; others answered late); process retries: join {retries}, coordinator {}, leave {}",
        calls.len(),
        calls.iter().filter(|c| c.status == 400).count(),
        calls.iter().filter(|c| c.status == 500 || c.status == 503).count(),
        calls.iter().filter(|c| c.status == 0).count(),
        attempts - 1,
        leave_attempts - 1
    );
    eprintln!("faults test: {summary}");
    k3s_asg_testbed::reliability::held(
        "AWS faults",
        &format!("3 servers and a node join, a coordinator apply and a node leave at 30 % injected faults: {summary}"),
        1,
        "one cluster-init; one API record and one registration per instance; no duplicate rules; token secured; a fault-free pass afterwards writes nothing",
    );
}
