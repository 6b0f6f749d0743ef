//! The rolling-AMI-upgrade demo (`scripts/demo --roll`): cluster `alpha` (3 servers, 2 nodes)
//! runs `k3s-asg-agent run` on the old AMI; an instance refresh then replaces every instance,
//! control plane first, one at a time, launch before terminate, the way the Terraform example's
//! `instance_refresh` does: the replacement joins, then the old instance is put in
//! `Terminating:Wait` behind the lifecycle hook and IMDS says `Terminated`. A watcher samples
//! etcd's own member list and health all along; each leaving instance's timeline shows it was out of its target group
//! before it stopped serving.

use crate::world::{Instance, Running, World};
use k3s_asg_agent::state::{Phase, State};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const OLD_AMI: &str = "ami-0old000000000000";
const NEW_AMI: &str = "ami-0new000000000000";

fn now_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis()
}

fn state_of(root: &std::path::Path) -> Option<State> {
    std::fs::read_to_string(root.join("var/lib/k3s-asg/state.json")).ok().and_then(|t| serde_json::from_str(&t).ok())
}

/// What etcd itself says, asked of the first of these servers whose k3s runs: (voters, healthy
/// voters, learners); `None` when none answers.
fn quorum(roots: &[std::path::PathBuf]) -> Option<(usize, usize, usize)> {
    for root in roots {
        if !root.join("run/k3s-stub/active-k3s").exists() {
            continue;
        }
        let m = crate::world::etcd_health_at(root);
        if m.is_empty() {
            continue;
        }
        let voters = m.iter().filter(|(_, learner, _)| !learner).count();
        let healthy = m.iter().filter(|(_, learner, healthy)| !learner && *healthy).count();
        return Some((voters, healthy, m.len() - voters));
    }
    None
}

async fn start(w: &World, role: &str, ami: &str) -> anyhow::Result<(Instance, Running)> {
    let inst = w.launch_tagged(&[("Cluster", "alpha"), ("Role", role), ("Image", ami)], Some("alpha")).await?;
    let run = w.spawn_agent(&inst, &["run"])?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while state_of(&inst.root).is_none_or(|s| s.phase != Phase::Ready) {
        anyhow::ensure!(Instant::now() < deadline, "{} ({role}) did not become ready", inst.id);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok((inst, run))
}

/// One leaving instance's timeline, in ms after the refresh told it to go.
struct Leave {
    id: String,
    role: String,
    deregistered: Option<u128>,
    drain: Option<u128>,
    stopped: Option<u128>,
}

impl Leave {
    fn out_first(&self) -> bool {
        match (self.deregistered, self.drain.or(self.stopped)) {
            (Some(d), Some(s)) => d <= s,
            _ => false,
        }
    }
}

/// The refresh replaces `old`: lifecycle hook and IMDS `Terminated`, then waits for `run` to finish.
async fn retire(w: &World, old: &Instance, agent: Running, group: &str) -> anyhow::Result<Leave> {
    w.asg.add(&old.id, group, "Terminating:Wait", 30);
    old.clear_stub_calls();
    let t0 = now_ms();
    old.imds.set("autoscaling/target-lifecycle-state", Some("Terminated"));
    let out = agent.wait(Duration::from_secs(120)).await?;
    anyhow::ensure!(out.code == 0, "{} did not leave cleanly: {}", old.id, out.stderr);
    w.terminate(old).await?;
    let dereg = w.recorder.calls_by(&old.access_key()).into_iter().find(|c| c.operation == "DeregisterTargets" && c.at_ms >= t0).map(|c| c.at_ms);
    Ok(Leave {
        id: old.id.clone(),
        role: old.role.clone(),
        deregistered: dereg.map(|t| t - t0),
        drain: old.stub_call_at(" drain ").map(|t| t.saturating_sub(t0)),
        stopped: old.stub_call_at("systemctl\tstop").map(|t| t.saturating_sub(t0)),
    })
}

pub async fn run() -> anyhow::Result<()> {
    let mut w = World::new().await?;
    w.create_cluster("alpha").await?;
    println!("Rolling AMI upgrade of cluster alpha ({OLD_AMI} → {NEW_AMI}): the instance refresh of the Terraform example,");
    println!("control plane first, then nodes, one instance at a time, launch before terminate.\n");
    println!("1. Cluster alpha runs on {OLD_AMI}: 3 servers and 2 nodes, each under `k3s-asg-agent run`.");
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(start(&w, "control-plane", OLD_AMI).await?);
    }
    let mut nodes = Vec::new();
    for _ in 0..2 {
        nodes.push(start(&w, "node", OLD_AMI).await?);
    }

    // The watcher: etcd's own member list and health, sampled all along (each sample asks a
    // running server's etcd, then every member's health).
    let roots = Arc::new(std::sync::Mutex::new(servers.iter().map(|(s, _)| s.root.clone()).collect::<Vec<_>>()));
    let (min_healthy, max_voters, max_learners) = (Arc::new(AtomicUsize::new(usize::MAX)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (samples, without_quorum) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (roots, min_healthy, max_voters, max_learners, samples, without_quorum, stop) =
            (roots.clone(), min_healthy.clone(), max_voters.clone(), max_learners.clone(), samples.clone(), without_quorum.clone(), stop.clone());
        tokio::task::spawn_blocking(move || {
            while !stop.load(Ordering::SeqCst) {
                let sampled = roots.lock().unwrap().clone();
                match quorum(&sampled) {
                    Some((voters, healthy, learners)) => {
                        min_healthy.fetch_min(healthy, Ordering::SeqCst);
                        max_voters.fetch_max(voters, Ordering::SeqCst);
                        max_learners.fetch_max(learners, Ordering::SeqCst);
                        if healthy <= voters / 2 {
                            without_quorum.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    None => {
                        without_quorum.fetch_add(1, Ordering::SeqCst);
                    }
                }
                samples.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    println!("\n2. The control plane, one server at a time: the replacement joins, then the old server leaves.");
    let mut leaves = Vec::new();
    let mut new_servers = Vec::new();
    for (old, agent) in servers {
        let t = Instant::now();
        let (new, new_agent) = start(&w, "control-plane", NEW_AMI).await?;
        roots.lock().unwrap().push(new.root.clone());
        let joined = t.elapsed().as_millis();
        let leave = retire(&w, &old, agent, "alpha-control-plane").await?;
        println!("  {} ({NEW_AMI}) joined in {joined:>5} ms; {} ({OLD_AMI}) left in order", new.id, old.id);
        leaves.push(leave);
        new_servers.push((new, new_agent));
    }
    println!("\n3. Then the nodes, the same way.");
    let mut new_nodes = Vec::new();
    for (old, agent) in nodes {
        let (new, new_agent) = start(&w, "node", NEW_AMI).await?;
        let leave = retire(&w, &old, agent, "alpha-node").await?;
        println!("  {} ({NEW_AMI}) joined; {} ({OLD_AMI}) left in order", new.id, old.id);
        leaves.push(leave);
        new_nodes.push((new, new_agent));
    }
    stop.store(true, Ordering::SeqCst);
    watcher.await?;

    println!("\n4. Each leaving instance, in ms after the refresh told it to go:\n");
    println!(
        "  | {:<21} | {:<13} | {:>12} | {:>11} | {:>11} | {:<27} |",
        "instance", "role", "deregistered", "drain began", "k3s stopped", "out of its group first"
    );
    println!("  |{:-<23}|{:-<15}|{:-<14}|{:-<13}|{:-<13}|{:-<29}|", "", "", "", "", "", "");
    let ms = |v: Option<u128>| v.map(|v| format!("+{v}")).unwrap_or_else(|| "-".into());
    for l in &leaves {
        println!(
            "  | {:<21} | {:<13} | {:>12} | {:>11} | {:>11} | {:<27} |",
            l.id,
            l.role,
            ms(l.deregistered),
            ms(l.drain),
            ms(l.stopped),
            if l.out_first() { "yes" } else { "NO" }
        );
    }
    let all_out_first = leaves.iter().all(Leave::out_first);
    let tg = &w.clusters["alpha"].target_group_arn;
    let members_now = w.members(tg).await?;
    let new_ids: Vec<String> = new_servers.iter().chain(new_nodes.iter()).map(|(i, _)| i.id.clone()).collect();
    let lost = without_quorum.load(Ordering::SeqCst);
    println!("\n5. Result:");
    println!(
        "  etcd kept a quorum at every sample: {} (healthy voters: at least {}; voters: at most {}; learners: at most {}; {} samples of etcd's own member list and health)",
        if lost == 0 { "yes" } else { "NO" },
        min_healthy.load(Ordering::SeqCst),
        max_voters.load(Ordering::SeqCst),
        max_learners.load(Ordering::SeqCst),
        samples.load(Ordering::SeqCst)
    );
    println!(
        "  {} of {} leaving instances were out of their target group before they drained or stopped k3s",
        leaves.iter().filter(|l| l.out_first()).count(),
        leaves.len()
    );
    let all_new = members_now.iter().all(|m| new_ids.contains(m)) && members_now.len() == new_ids.len();
    println!("  target group now: {} instance(s), all on {NEW_AMI}: {}", members_now.len(), if all_new { "yes" } else { "NO" });
    anyhow::ensure!(lost == 0, "etcd had no quorum (or no server answered) in {lost} sample(s)");
    anyhow::ensure!(all_out_first, "an instance stopped serving while still in its target group");
    anyhow::ensure!(all_new, "the target group holds {members_now:?}, expected the new instances {new_ids:?}");
    println!("\nDone: etcd kept a quorum of healthy voters at every sample, and no request was routed to an instance that was leaving.");
    for (_, agent) in new_servers.into_iter().chain(new_nodes) {
        agent.sigterm();
        let _ = agent.wait(Duration::from_secs(60)).await;
    }
    Ok(())
}
