//! Benchmark (not a test): AWS API calls per join by service and operation,
//! and the agent's wall time from "k3s ready" to "registered", against moto.
//! `--write` records the figures in BENCHMARKS.md.

use k3s_asg_testbed::world::{Instance, World};
use std::collections::BTreeMap;

struct Sample {
    calls: BTreeMap<String, usize>,
    total: usize,
    ready_to_registered_ms: u128,
    wall_ms: u128,
}

async fn measure(w: &World, inst: &Instance) -> anyhow::Result<Sample> {
    w.recorder.clear();
    let t = std::time::Instant::now();
    let run = w.agent(inst, &["join"]).await?;
    let wall_ms = t.elapsed().as_millis();
    anyhow::ensure!(run.code == 0, "join of {} failed: {}", inst.id, run.stderr);
    let mut calls = BTreeMap::new();
    let mine = w.recorder.calls_by(&inst.access_key());
    for c in &mine {
        *calls.entry(format!("{}:{}", c.service, c.operation)).or_insert(0) += 1;
    }
    let state: serde_json::Value = serde_json::from_str(&inst.file("/var/lib/k3s-asg/state.json").unwrap_or_default())?;
    let at = |name: &str| {
        state["steps"].as_array().and_then(|s| s.iter().find(|st| st["name"] == name)).and_then(|st| st["at_ms"].as_u64()).unwrap_or(0) as u128
    };
    Ok(Sample { total: mine.len(), calls, ready_to_registered_ms: at("registered").saturating_sub(at("ready")), wall_ms })
}

fn row(label: &str, samples: &[Sample]) -> String {
    let n = samples.len().max(1);
    let total: usize = samples.iter().map(|s| s.total).sum::<usize>() / n;
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    for s in samples {
        for (k, v) in &s.calls {
            *ops.entry(k.clone()).or_insert(0) += v;
        }
    }
    let ops: Vec<String> = ops.iter().map(|(k, v)| format!("{k}×{}", ((*v as f64 / n as f64) * 100.0).round() / 100.0)).collect();
    let mut overhead: Vec<u128> = samples.iter().map(|s| s.ready_to_registered_ms).collect();
    overhead.sort();
    let mut wall: Vec<u128> = samples.iter().map(|s| s.wall_ms).collect();
    wall.sort();
    format!(
        "| {label} | {n} | {total} | {} | {} | {} | {} |",
        ops.join(", "),
        overhead[overhead.len() / 2],
        overhead[overhead.len() - 1],
        wall[wall.len() / 2]
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let write = std::env::args().any(|a| a == "--write");
    // `scripts/bench heal`: only the lost-majority figure, printed.
    if std::env::args().any(|a| a == "heal") {
        println!("{}", bench_heal().await?);
        return Ok(());
    }
    let mut w = World::new().await?;
    w.create_cluster("alpha").await?;
    let first = w.launch("alpha", "control-plane").await?;
    let init = vec![measure(&w, &first).await?];
    let mut server_joins = Vec::new();
    let mut servers = vec![first];
    for _ in 0..2 {
        let s = w.launch("alpha", "control-plane").await?;
        server_joins.push(measure(&w, &s).await?);
        servers.push(s);
    }
    let mut node_joins = Vec::new();
    let mut nodes = Vec::new();
    for _ in 0..10 {
        let n = w.launch("alpha", "node").await?;
        node_joins.push(measure(&w, &n).await?);
        nodes.push(n);
    }
    let mut rejoins = Vec::new();
    for inst in servers.iter().chain(nodes.iter()) {
        rejoins.push(measure(&w, inst).await?);
    }
    let mut nodes_in_group = Vec::new();
    w.asg.set_group_tags("alpha-spot", &[("k8s.io/cluster-autoscaler/node-template/label/capacity", "spot")]);
    for _ in 0..3 {
        let n = w.launch("alpha", "node").await?;
        let tags = [("Cluster", "alpha"), ("Role", "node"), ("aws:autoscaling:groupName", "alpha-spot")];
        n.imds.set_tags(Some(tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()));
        nodes_in_group.push(measure(&w, &n).await?);
    }
    let mut nodes_no_tags = Vec::new();
    for _ in 0..3 {
        let n = w.launch("alpha", "node").await?;
        n.imds.set_tags(None);
        nodes_no_tags.push(measure(&w, &n).await?);
    }

    // Leave: time from each trigger to the first DeregisterTargets, and AWS calls per leave.
    let mut leave_rows = Vec::new();
    for trigger in ["SIGTERM (EC2: stopping)", "IMDS target-lifecycle-state Terminated", "IMDS spot instance-action"] {
        let mut latencies = Vec::new();
        let mut calls = Vec::new();
        for _ in 0..3 {
            let n = w.launch("alpha", "node").await?;
            let agent = w.spawn_agent(&n, &["run"])?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while !n.file("/var/lib/k3s-asg/state.json").unwrap_or_default().contains("\"phase\": \"ready\"") {
                anyhow::ensure!(std::time::Instant::now() < deadline, "{} never became ready", n.id);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            if trigger.starts_with("SIGTERM") {
                // A SIGTERM means leave only when AWS says the instance is going away.
                w.ec2.stop_instances().instance_ids(&n.id).send().await?;
            }
            w.recorder.clear();
            let t0 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
            match trigger {
                "SIGTERM (EC2: stopping)" => agent.sigterm(),
                "IMDS target-lifecycle-state Terminated" => n.imds.set("autoscaling/target-lifecycle-state", Some("Terminated")),
                _ => n.imds.set("spot/instance-action", Some(r#"{"action":"terminate","time":"2026-11-24T18:00:00Z"}"#)),
            }
            let run = agent.wait(std::time::Duration::from_secs(60)).await?;
            anyhow::ensure!(run.code == 0, "leave failed: {}", run.stderr);
            let mine = w.recorder.calls_by(&n.access_key());
            let first = mine.iter().find(|c| c.operation == "DeregisterTargets").map(|c| c.at_ms).unwrap_or(t0);
            latencies.push(first.saturating_sub(t0));
            calls.push(mine.len());
        }
        latencies.sort();
        leave_rows.push(format!(
            "| {trigger} | {} | {} | {} | {} |",
            latencies.len(),
            latencies[latencies.len() / 2],
            latencies[latencies.len() - 1],
            calls.iter().sum::<usize>() as f64 / calls.len() as f64
        ));
    }
    let leave_table = format!(
        "| trigger | runs | trigger→first DeregisterTargets median ms | max ms | AWS calls per leave (node, no hook) |\n|---|---|---|---|---|\n{}",
        leave_rows.join("\n")
    );

    let coordinator_table = bench_coordinator().await?;
    let recovery_table = bench_recovery().await?;
    let heal_table = bench_heal().await?;
    let storm_table = bench_storm().await?;

    let header = "| join | runs | AWS calls per join | calls by service:operation (mean) | ready→registered median ms | max ms | whole join median ms |\n|---|---|---|---|---|---|---|";
    let table = [
        header.to_string(),
        row("first control plane (cluster-init)", &init),
        row("further control plane", &server_joins),
        row("node", &node_joins),
        row("node in a group with node-template tags (autoscaling:DescribeTags)", &nodes_in_group),
        row("node, IMDS tags off (DescribeTags)", &nodes_no_tags),
        row("second join, any role (steady state)", &rejoins),
    ]
    .join("\n");
    println!("{table}\n\n{leave_table}\n\n{coordinator_table}\n\n{recovery_table}\n\n{heal_table}\n\n{storm_table}");
    if write {
        let machine = std::process::Command::new("uname")
            .arg("-srm")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let text = format!(
            "# Benchmarks\n\nProduced by `scripts/bench --write` (debug build of the agent, moto {moto} on loopback, {machine}). \
             AWS calls are counted by the test bed's recording proxy per agent (IMDS and local probes are not AWS calls). \
             \"ready→registered\" is the agent's own overhead from the moment k3s and every readiness probe passed \
             to the end of target-group registration (token securing, kubeconfig publishing, API record, registration), \
             from the step timestamps in its state file.\n\nTargets (agent-join issue): ≤ 8 AWS calls for a node join; ≤ 200 ms overhead.\n\n## Agent join\n\n{table}\n\n\
             ## Agent leave\n\nTargets (run/leave issue): ≤ 2.5 s from an IMDS notice (the agent polls IMDS every second), \
             ≤ 100 ms from SIGTERM. Measured from the moment the bench sends the signal or sets the IMDS value to the \
             recorder's timestamp of the first DeregisterTargets. Calls per leave: GetParameters, \
             DescribeAutoScalingInstances, DescribeTargetHealth (before and while waiting), DeregisterTargets, \
             DescribeTargetGroupAttributes.\n\n{leave_table}\n\n\
             ## Coordinator\n\n200 shared endpoints × 4 clusters in one region (204 rules on one listener, \
             rules_quota raised to 300), coordinator binary against moto through the recorder. \
             Targets (coordinator issue): steady state 0 writes and ≤ 6 reads; Route53 changes in as few batches as the API allows.\n\n{coordinator_table}\n\n\
             A one-shot `apply` reads every input: `GetParametersByPath` returns at most 10 parameters a page (200 endpoint \
             specs = 20 pages) and `DescribeTags` takes at most 20 rule ARNs (204 rules = 11 calls). A long-running \
             coordinator (Lambda, `run`) keeps the specs, the ALB's listeners and the rules' owner tags between reconciles \
             (`--refresh`, default 300 s; forgotten on any failure and on an SSM Parameter Store Change event) and reads \
             only the rules and records each time: that is the steady state the target is about. The first converge sends \
             all its record changes in one Route53 batch.\n\n\
             ## Recovery\n\nThe whole control plane lost (1 server, snapshots on); 3 fresh servers join at once with \
             `K3S_ASG_RECOVERY_GRACE={grace}`. Time from starting them to every one Ready, minus the grace; AWS calls of the \
             winner (who restores) and of all three. Target (survival issue): ≤ 60 s beyond the grace. The agents poll with \
             backoff, so the figure includes up to one poll interval after the grace.\n\n{recovery_table}\n\n\
             ## Healing a lost majority\n\n3 servers (real etcd members), 2 die hard and are terminated; the survivor's `run` \
             checks every second (`K3S_ASG_TOKEN_CHECK=1`) with `K3S_ASG_RECOVERY_GRACE={grace}`; 2 fresh servers boot and \
             `join` right away. Time from their boot to 3 voting etcd members, minus the grace: the survivor's \
             `--cluster-reset`, the fresh servers' learner joins (etcd adds one member at a time, none within 5 s of the \
             last change) and their promotion (`K3S_STUB_PROMOTE_AFTER`). AWS calls of the survivor from the loss to the \
             end.\n\n{heal_table}\n\n\
             ## Boot storm\n\nServers and nodes of one cluster `join` at once through the recording proxy, which allows \
             Route53 5 requests a second for all callers together (its account limit; the rest get Route53's throttling \
             error) and throttles 20 % of every other call. \"Route53 sent\" counts every request, throttled ones included; \
             the rate is over the span from the first to the last. Target (boot-storm issue): a 50-instance boot stays \
             under 5 Route53 requests a second on average, and no agent exits.\n\n{storm_table}\n",
            grace = RECOVERY_GRACE_S,
            moto = "5.2.5"
        );
        // Sections after the coordinator's are written by other commands (scripts/build-static); keep them.
        let path = k3s_asg_testbed::repo_root().join("BENCHMARKS.md");
        let kept =
            std::fs::read_to_string(&path).ok().and_then(|old| old.find("\n## Release binaries").map(|i| old[i..].to_string())).unwrap_or_default();
        std::fs::write(&path, text + &kept)?;
        println!("\nwrote BENCHMARKS.md");
    }
    Ok(())
}

async fn bench_coordinator() -> anyhow::Result<String> {
    let mut w = World::new().await?;
    let clusters = ["alpha", "bravo", "charlie", "delta"];
    for c in clusters {
        w.create_cluster(c).await?;
    }
    w.create_alb(443, 300).await?;
    let zone = w.zone_id().to_string();
    for i in 0..200 {
        let spec = serde_json::json!({
            "hostname": format!("svc{i}.example.com"), "hosted_zone_id": zone,
            "clusters": { "alpha": 1, "bravo": 1, "charlie": 1, "delta": 1 }, "listener_port": 443 });
        w.put_param(&format!("/k3s-asg/endpoints/svc{i}"), &spec.to_string()).await?;
    }
    let row = |label: &str, wall: u128, w: &World| {
        let calls = w.recorder.calls_by("AKIACOORDINATOR");
        let writes = calls.iter().filter(|c| c.is_mutating()).count();
        let reads = calls.len() - writes;
        let mut ops: BTreeMap<String, usize> = BTreeMap::new();
        for c in &calls {
            *ops.entry(c.operation.clone()).or_insert(0) += 1;
        }
        let ops: Vec<String> = ops.iter().map(|(k, v)| format!("{k}×{v}")).collect();
        format!("| {label} | {wall} | {reads} | {writes} | {} |", ops.join(", "))
    };
    let mut rows = Vec::new();
    for label in ["`apply` (one-shot): first converge", "`apply` (one-shot): steady state"] {
        w.recorder.clear();
        let t = std::time::Instant::now();
        let run = w.coordinator(&["apply"]).await?;
        let wall = t.elapsed().as_millis();
        anyhow::ensure!(run.code == 0, "apply failed: {}", run.stderr);
        rows.push(row(label, wall, &w));
    }
    // Lambda mode (as deployed): the function stays warm between events and keeps the specs.
    let api = k3s_asg_testbed::lambda_api::RuntimeApi::start().await?;
    let function = w.spawn_coordinator_lambda(&api.address())?;
    let schedule = serde_json::json!({ "source": "aws.events", "detail-type": "Scheduled Event", "detail": {} });
    let ssm_change = serde_json::json!({ "source": "aws.ssm", "detail-type": "Parameter Store Change",
        "detail": { "name": "/k3s-asg/endpoints/svc0", "operation": "Update" } });
    let events = [
        ("Lambda: first event after a cold start", &schedule),
        ("Lambda warm: steady state", &schedule),
        ("Lambda warm: steady state (again)", &schedule),
        ("Lambda warm: after a Parameter Store Change event", &ssm_change),
    ];
    for (n, (label, event)) in events.into_iter().enumerate() {
        w.recorder.clear();
        let t = std::time::Instant::now();
        api.invoke(&format!("bench-{n}"), event.clone());
        let answers = api.answers(n + 1, std::time::Duration::from_secs(120)).await?;
        let wall = t.elapsed().as_millis();
        anyhow::ensure!(answers[n].1 == "response", "reconcile failed: {}", answers[n].2);
        rows.push(row(label, wall, &w));
    }
    drop(function);
    Ok(format!("| reconcile | wall ms | reads | writes | calls by operation |\n|---|---|---|---|---|\n{}", rows.join("\n")))
}

const RECOVERY_GRACE_S: u64 = 5;

/// Total control-plane loss with snapshots: 3 fresh servers at once, one restores.
async fn bench_recovery() -> anyhow::Result<String> {
    let mut w = World::new().await?;
    w.create_cluster("alpha").await?;
    w.enable_snapshots("alpha", "bench-snapshots").await?;
    w.agent_env.insert("K3S_ASG_RECOVERY_GRACE".into(), RECOVERY_GRACE_S.to_string());
    w.agent_env.insert("K3S_STUB_SNAPSHOT_EVERY".into(), "1".into());
    let old = w.launch("alpha", "control-plane").await?;
    anyhow::ensure!(w.agent(&old, &["join"]).await?.code == 0, "first join failed");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while w.snapshots("alpha", "bench-snapshots").await?.is_empty() {
        anyhow::ensure!(std::time::Instant::now() < deadline, "no snapshot reached S3");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let _ = std::fs::remove_file(old.path("/run/k3s-stub/active-k3s"));
    w.terminate(&old).await?;
    w.agent_env.remove("K3S_STUB_SNAPSHOT_EVERY");
    let mut fresh = Vec::new();
    for _ in 0..3 {
        fresh.push(w.launch("alpha", "control-plane").await?);
    }
    w.recorder.clear();
    let t = std::time::Instant::now();
    let runs = k3s_asg_testbed::join_all(fresh.iter().map(|s| w.agent(s, &["join"])).collect()).await;
    let wall = t.elapsed().as_millis();
    for r in runs {
        let r = r?;
        anyhow::ensure!(r.code == 0, "a recovering join failed: {}", r.stderr);
    }
    let winner =
        fresh.iter().find(|s| s.file("/var/lib/rancher/k3s/server/db/restored-from").is_some()).ok_or_else(|| anyhow::anyhow!("nobody restored"))?;
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    let mine = w.recorder.calls_by(&winner.access_key());
    for c in mine.iter().filter(|c| c.service != "s3" || c.operation == "ListObjectsV2") {
        *ops.entry(format!("{}:{}", c.service, c.operation)).or_insert(0) += 1;
    }
    let all: usize = fresh.iter().map(|s| w.recorder.calls_by(&s.access_key()).len()).sum();
    let ops: Vec<String> = ops.iter().map(|(k, v)| format!("{k}×{v}")).collect();
    Ok(format!(
        "| scenario | wall ms | beyond the grace ms | AWS calls (winner) | AWS calls (all 3) | winner's calls by service:operation |\n|---|---|---|---|---|---|\n\
         | 1 server lost, 3 fresh servers, grace {RECOVERY_GRACE_S} s | {wall} | {} | {} | {all} | {} |",
        wall.saturating_sub(RECOVERY_GRACE_S as u128 * 1000),
        mine.len(),
        ops.join(", ")
    ))
}

/// A lost majority: 3 servers, 2 die hard; the survivor's `run` heals; 2 fresh servers join.
async fn bench_heal() -> anyhow::Result<String> {
    let mut w = World::new().await?;
    w.create_cluster("alpha").await?;
    for (k, v) in [("K3S_ASG_RECOVERY_GRACE", RECOVERY_GRACE_S.to_string()), ("K3S_ASG_TOKEN_CHECK", "1".into()), ("K3S_ASG_JOIN_TIMEOUT", "240".into()), ("K3S_ASG_READY_TIMEOUT", "240".into())] {
        w.agent_env.insert(k.into(), v);
    }
    let mut old = Vec::new();
    for _ in 0..3 {
        let s = w.launch("alpha", "control-plane").await?;
        anyhow::ensure!(w.agent(&s, &["join"]).await?.code == 0, "a server's join failed");
        old.push(s);
    }
    let survivor = &old[0];
    let _run = w.spawn_agent(survivor, &["run"])?;
    let voters = || survivor.etcd_members().iter().filter(|(_, learner)| !learner).count();
    anyhow::ensure!(voters() == 3, "three voters before the loss");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await; // its run is watching
    w.recorder.clear();
    for lost in &old[1..] {
        lost.kill_k3s().await;
        w.terminate(lost).await?;
    }
    let mut fresh = Vec::new();
    for _ in 0..2 {
        fresh.push(w.launch("alpha", "control-plane").await?);
    }
    let t = std::time::Instant::now();
    let joins: Vec<_> = fresh.iter().map(|s| w.spawn_agent(s, &["join"])).collect::<anyhow::Result<_>>()?;
    // 3 voters again: the survivor and both fresh servers (member names begin with the node name).
    let healed = || {
        let v: Vec<String> = survivor.etcd_members().into_iter().filter(|(_, learner)| !learner).map(|(n, _)| n).collect();
        v.len() == 3 && fresh.iter().all(|f| v.iter().any(|n| n.starts_with(&f.id)))
    };
    while !healed() {
        anyhow::ensure!(t.elapsed() < std::time::Duration::from_secs(240), "no 3 voters after 240 s");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let wall = t.elapsed().as_millis();
    for j in joins {
        let r = j.wait(std::time::Duration::from_secs(240)).await?;
        anyhow::ensure!(r.code == 0, "a fresh server's join failed: {}", r.stderr);
    }
    let calls = w.recorder.calls_by(&survivor.access_key());
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    for c in &calls {
        *ops.entry(format!("{}:{}", c.service, c.operation)).or_insert(0) += 1;
    }
    let ops: Vec<String> = ops.iter().map(|(k, v)| format!("{k}×{v}")).collect();
    Ok(format!(
        "| scenario | wall ms | beyond the grace ms | AWS calls (survivor) | survivor's calls by service:operation |\n|---|---|---|---|---|\n\
         | 2 of 3 servers lost, 2 fresh servers, grace {RECOVERY_GRACE_S} s | {wall} | {} | {} | {} |",
        wall.saturating_sub(RECOVERY_GRACE_S as u128 * 1000),
        calls.len(),
        ops.join(", ")
    ))
}

async fn bench_storm() -> anyhow::Result<String> {
    let mut rows = vec![
        "| instances | wall s | agents that exited | AWS calls | Route53 sent | Route53 throttled | Route53 / s | Route53 peak / s | other calls throttled |"
            .to_string(),
        "|---|---|---|---|---|---|---|---|---|".to_string(),
    ];
    for (servers, nodes) in [(3, 20), (3, 47)] {
        let mut w = World::new().await?;
        w.create_cluster("alpha").await?;
        let s = k3s_asg_testbed::storm::boot(&w, servers, nodes, 5.0, 0.2).await?;
        rows.push(format!(
            "| {servers} servers + {nodes} nodes | {:.0} | {} | {} | {} | {} | {:.1} | {} | {} |",
            s.wall.as_secs_f64(),
            s.failed.len(),
            s.calls,
            s.route53_sent,
            s.route53_throttled,
            s.route53_per_s,
            s.route53_peak,
            s.others_throttled
        ));
    }
    Ok(rows.join("\n"))
}
