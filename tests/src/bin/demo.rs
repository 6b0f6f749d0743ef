//! The local demo: cluster `alpha` (3 control-plane, 2 nodes) joins an
//! emulated region, then the resulting AWS state and node configs are printed.
//! `--roll`: a rolling AMI upgrade of the same cluster (`k3s_asg_testbed::roll`).

use k3s_asg_testbed::world::{Instance, World};

const SIMULATED: &str = "\
k3s-asg demo — AWS is emulated (moto on 127.0.0.1), IMDS and the k3s supervisor are
simulated per instance, and systemctl/k3s are stub programs. The agent binary and
the AWS SDK calls are real.";

fn redact(config: &str) -> String {
    config.lines().map(|l| if l.starts_with("token:") { "token: <redacted>".to_string() } else { l.to_string() }).collect::<Vec<_>>().join("\n")
}

/// Three API record lines, then the target group members, for the before/after table.
async fn snapshot(w: &World) -> anyhow::Result<Vec<String>> {
    let mut rows: Vec<String> = w.api_records("alpha").await?.into_iter().map(|(id, ips)| format!("{id} → {}", ips.join(","))).collect();
    rows.resize(3, String::new());
    rows.extend(w.members(&w.clusters["alpha"].target_group_arn).await?);
    Ok(rows)
}

async fn join(w: &World, inst: &Instance) -> anyhow::Result<()> {
    let t = std::time::Instant::now();
    let run = w.agent(inst, &["join"]).await?;
    if run.code != 0 {
        anyhow::bail!("{} ({}) failed to join (exit {}):\n{}", inst.id, inst.role, run.code, run.stderr);
    }
    println!("  {:<22} {:<14} {:<12} joined in {:>5} ms", inst.id, inst.role, inst.ip, t.elapsed().as_millis());
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    println!("{SIMULATED}\n");
    if std::env::args().any(|a| a == "--roll") {
        return k3s_asg_testbed::roll::run().await;
    }
    let mut w = World::new().await?;
    w.create_cluster("alpha").await?;
    let c = &w.clusters["alpha"];
    println!("region us-east-1: cluster spec at /k3s-asg/clusters/alpha/config, API name {}, target group {}\n", c.hostname, c.target_group_arn);

    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(w.launch("alpha", "control-plane").await?);
    }
    let mut nodes = Vec::new();
    for _ in 0..2 {
        nodes.push(w.launch("alpha", "node").await?);
    }
    println!("1. All five instances boot at once and run `k3s-asg-agent join`:");
    let all: Vec<&Instance> = servers.iter().chain(nodes.iter()).collect();
    let runs = all.iter().map(|i| join(&w, i));
    let mut handles = Vec::new();
    for f in runs {
        handles.push(f);
    }
    let results = k3s_asg_testbed::join_all(handles).await;
    for r in results {
        r?;
    }

    println!("\n2. What AWS holds now:");
    let token = w.param("/k3s-asg/clusters/alpha/token").await?.unwrap_or_default();
    let form = if token.starts_with("K10") { "k3s secure form K10<CA hash>::server:<redacted>" } else { "election form" };
    println!("  token parameter   /k3s-asg/clusters/alpha/token: SecureString, {form}");
    for p in ["admin", "drain"] {
        let name = format!("/k3s-asg/clusters/alpha/kubeconfig/{p}");
        let present = w.param(&name).await?.is_some();
        println!("  kubeconfig        {name}: {}", if present { "published (SecureString)" } else { "absent" });
    }
    for (id, values) in w.api_records("alpha").await? {
        println!("  API record        {} A {} (MultiValueAnswer, SetIdentifier {id})", w.clusters["alpha"].hostname, values.join(","));
    }
    for id in w.members(&w.clusters["alpha"].target_group_arn).await? {
        println!("  target-group      alpha-ingress ← {id}:80");
    }

    println!("\n3. Each instance's rendered /etc/rancher/k3s/config.yaml (mode 0600; token redacted here):");
    for inst in &all {
        let cfg = inst.file("/etc/rancher/k3s/config.yaml").unwrap_or_default();
        println!("\n  --- {} ({}) ---", inst.id, inst.role);
        for line in redact(&cfg).lines() {
            println!("  {line}");
        }
    }

    println!("\n4. A second join on every instance changes nothing:");
    w.recorder.clear();
    for inst in &all {
        join(&w, inst).await?;
    }
    let mutating = w.recorder.calls().iter().filter(|c| c.is_mutating()).count();
    println!("  mutating AWS calls on the second pass: {mutating}");

    // 5. The coordinator: shared ALB rules and a latency record.
    let (_alb, listener) = w.create_alb(443, 100).await?;
    let zone = w.zone_id().to_string();
    w.put_param(
        "/k3s-asg/endpoints/blog",
        &serde_json::json!({ "hostname": "blog.example.com", "hosted_zone_id": zone, "clusters": { "alpha": 1 }, "listener_port": 443 }).to_string(),
    )
    .await?;
    println!("\n5. `k3s-asg-coordinator apply` reconciles the region's shared ALB and latency records:");
    let run = w.coordinator(&["apply"]).await?;
    anyhow::ensure!(run.code == 0, "coordinator apply failed: {}", run.stderr);
    for line in run.stdout.lines() {
        println!("  {line}");
    }

    // 6. A control-plane instance is terminated: its agent leaves in order.
    let before = snapshot(&w).await?;
    let victim = &servers[1];
    w.asg.add(&victim.id, "alpha-control-plane", "Terminating:Wait", 30);
    println!("\n6. The ASG terminates {} (a terminating lifecycle hook holds it); its agent leaves:", victim.id);
    w.recorder.clear();
    victim.clear_stub_calls();
    let run = w.agent(victim, &["leave"]).await?;
    anyhow::ensure!(run.code == 0, "leave failed: {}", run.stderr);
    let mut timeline: Vec<(u128, String)> = w
        .recorder
        .calls_by(&victim.access_key())
        .into_iter()
        .filter(|c| c.is_mutating())
        .map(|c| (c.at_ms, format!("AWS {}", c.operation)))
        .collect();
    for line in victim.stub_calls() {
        let parts: Vec<&str> = line.splitn(3, '\t').collect();
        if parts.len() == 3 && (parts[2].contains("drain") || parts[2].contains("delete") || parts[2].starts_with("stop")) {
            timeline.push((parts[0].parse().unwrap_or(0), format!("{} {}", parts[1], parts[2].split(" --").next().unwrap_or(parts[2]))));
        }
    }
    timeline.sort();
    let t0 = timeline.first().map(|t| t.0).unwrap_or(0);
    for (ms, what) in &timeline {
        println!("  +{:>5} ms  {what}", ms - t0);
    }
    w.terminate(victim).await?;

    // 7. The ASG launches a replacement; it joins by itself.
    let replacement = w.launch("alpha", "control-plane").await?;
    println!("\n7. The replacement {} boots and joins — nobody re-runs anything:", replacement.id);
    join(&w, &replacement).await?;
    w.recorder.clear();
    let run = w.coordinator(&["apply"]).await?;
    anyhow::ensure!(run.code == 0, "coordinator apply failed: {}", run.stderr);
    println!("  coordinator apply afterwards: {} mutating AWS calls", w.recorder.calls().iter().filter(|c| c.is_mutating()).count());
    let after = snapshot(&w).await?;

    println!("\n8. Before and after the replacement:\n");
    println!("  | {:<28} | {:<46} | {:<46} |", "", "before", "after");
    println!("  |{:-<30}|{:-<48}|{:-<48}|", "", "", "");
    let rows = before.len().max(after.len());
    for i in 0..rows {
        let b = before.get(i).cloned().unwrap_or_default();
        let a = after.get(i).cloned().unwrap_or_default();
        let label = if i == 0 {
            "API records (id → ip)"
        } else if i == 3 {
            "target group alpha-ingress"
        } else {
            ""
        };
        println!("  | {label:<28} | {:<46} | {:<46} |", b, a);
    }
    let rules = w.elb.describe_rules().listener_arn(&listener).send().await?.rules().len() - 1;
    println!("\n  listener rules on the shared ALB: {rules} (unchanged by the replacement)");

    let init = all.iter().filter(|i| i.file("/etc/rancher/k3s/config.yaml").unwrap_or_default().contains("cluster-init: true")).count();
    println!("\nDone: {init} server ran cluster-init, the others joined a live server verified by the CA hash in the token.");
    Ok(())
}
