//! Crashes: the agent is killed with SIGKILL right after each step of join, of leave and of
//! a recovery (its `failpoints` crash points, `K3S_ASG_FAILPOINT=STEP`: the step's effect is
//! done, the state file does not know yet), or in the middle of a drain, then started again
//! as systemd would. It must converge and leave nothing behind: no orphan record or
//! registration, no half-written file, no second lifecycle completion.

use super::common::cluster;
use super::recovery::{lose, record, snapshotted_servers, world, marker_of, names, write_marker, BUCKET};
use k3s_asg_agent::failpoint::ENV as FAILPOINT;
use k3s_asg_agent::state::{Phase, StepName};
use k3s_asg_aws::tags::Role;
use k3s_asg_testbed::check::{ok, state};
use k3s_asg_testbed::world::{AgentRun, Instance, World};
use std::path::Path;
use std::time::Duration;

fn killed_at(run: &AgentRun, step: StepName) {
    assert_eq!(run.code, -1, "the agent was to die by SIGKILL after {step}:\n{}", run.stderr);
    assert!(run.stderr.contains(&format!("failpoint {step}")), "{}", run.stderr);
}

/// Runs `k3s-asg-agent COMMAND` on `inst` with the crash point after `step` armed (for this run only).
async fn run_with_failpoint(w: &mut World, inst: &Instance, command: &str, step: StepName) -> AgentRun {
    w.agent_env.insert(FAILPOINT.into(), step.as_str().into());
    let run = w.agent(inst, &[command]).await.unwrap();
    w.agent_env.remove(FAILPOINT);
    run
}

/// Files a crashed atomic write could leave: the temp files of `HostFs`.
fn leftovers(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.to_string_lossy().ends_with(".k3s-asg-tmp") {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_each_join_step_the_next_join_converges() {
    let mut w = World::new().await.unwrap();
    for &step in StepName::JOIN.iter().filter(|s| !s.only_in_recovery()) {
        // A fresh cluster per step, so the crashed server is the one that initialises it.
        let cluster = format!("j-{step}");
        w.create_cluster(&cluster).await.unwrap();
        let tg = w.target_group(&cluster);
        let cp = w.launch(&cluster, "control-plane").await.unwrap();
        killed_at(&run_with_failpoint(&mut w, &cp, "join", step).await, step);

        ok(&w.agent(&cp, &["join"]).await.unwrap());
        let token = w.param(&format!("/k3s-asg/clusters/{cluster}/token")).await.unwrap().expect("token");
        assert!(token.starts_with("K10"), "after {step}: token secured");
        let election = |n: u64| format!("/k3s-asg/clusters/{cluster}/election/{n}");
        let won = w.param(&election(1)).await.unwrap().expect("election 1 held");
        assert!(won.contains(&cp.id) && won.contains("secured_at"), "after {step}: {won}");
        assert_eq!(w.param(&election(2)).await.unwrap(), None, "after {step}: one election");
        assert_eq!(w.api_records(&cluster).await.unwrap(), vec![(cp.id.clone(), vec![cp.ip.clone()])], "after {step}");
        assert_eq!(w.members(&tg).await.unwrap(), vec![cp.id.clone()], "after {step}");
        let config = cp.file("/etc/rancher/k3s/config.yaml").expect("config.yaml");
        assert!(config.contains("cluster-init: true\n"), "after {step}: {config}");
        assert!(leftovers(&cp.root).is_empty(), "after {step}: {:?}", leftovers(&cp.root));
        assert_eq!(state(&cp).phase, Phase::Ready, "after {step}");
        // Converged: a third join changes nothing.
        w.recorder.clear();
        ok(&w.agent(&cp, &["join"]).await.unwrap());
        let writes: Vec<String> = w.recorder.calls().into_iter().filter(|c| c.is_mutating()).map(|c| c.operation).collect();
        assert!(writes.is_empty(), "after {step}: the rejoin wrote {writes:?}");
        k3s_asg_testbed::reliability::held(
            "Crashes",
            &format!("kill -9 right after join step `{step}` (the initialising server), then join again"),
            1,
            "exit 0; token secured; exactly 1 API record and 1 registration; config.yaml whole; no temp files; a third join writes nothing",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_after_each_join_step_converges() {
    let mut w = World::with_cluster("alpha").await.unwrap();
    let tg = w.target_group("alpha");
    let cp = w.joined("alpha", "control-plane").await.unwrap();
    let mut expected = vec![cp.id.clone()];
    for step in StepName::join_steps(Role::Node) {
        let node = w.launch("alpha", "node").await.unwrap();
        killed_at(&run_with_failpoint(&mut w, &node, "join", step).await, step);
        ok(&w.agent(&node, &["join"]).await.unwrap());
        expected.push(node.id.clone());
        expected.sort();
        assert_eq!(w.members(&tg).await.unwrap(), expected, "after {step}");
        assert!(leftovers(&node.root).is_empty(), "after {step}");
        assert_eq!(state(&node).phase, Phase::Ready, "after {step}");
        k3s_asg_testbed::reliability::held(
            "Crashes",
            &format!("kill -9 right after join step `{step}` (a node), then join again"),
            1,
            "exit 0; registered once; no temp files; state `ready`",
        );
    }
    assert_eq!(w.api_records("alpha").await.unwrap().len(), 1, "nodes publish no API record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_each_leave_step_run_finishes_the_leave() {
    let mut w = World::with_cluster("alpha").await.unwrap();
    let tg = w.target_group("alpha");
    let cp = w.joined("alpha", "control-plane").await.unwrap();
    for &step in StepName::LEAVE.iter().filter(|s| !s.only_in_recovery()) {
        // A second server (so the first keeps quorum), terminating behind a lifecycle hook.
        let s = w.joined("alpha", "control-plane").await.unwrap();
        w.asg.add(&s.id, "alpha-control-plane", "Terminating:Wait", 30);
        killed_at(&run_with_failpoint(&mut w, &s, "leave", step).await, step);

        // systemd restarts `run`, which finds the unfinished leave.
        let run = w.agent(&s, &["run"]).await.unwrap();
        ok(&run);
        assert!(run.stderr.contains("previous leave did not finish"), "after {step}: {}", run.stderr);
        assert_eq!(w.members(&tg).await.unwrap(), vec![cp.id.clone()], "after {step}");
        assert_eq!(w.api_records("alpha").await.unwrap(), vec![(cp.id.clone(), vec![cp.ip.clone()])], "after {step}");
        assert!(!s.path("/run/k3s-stub/active-k3s").exists(), "after {step}: k3s stopped");
        assert!(s.stub_calls().iter().any(|l| l.contains(&format!("delete node/{}", s.id))), "after {step}");
        let completions: Vec<_> = w.asg.actions().into_iter().filter(|a| a.0 == "CompleteLifecycleAction" && a.1 == s.id).collect();
        assert_eq!(completions.len(), 1, "after {step}: exactly one CONTINUE: {completions:?}");
        assert!(leftovers(&s.root).is_empty(), "after {step}");
        assert_eq!(state(&s).phase, Phase::Left, "after {step}");
        k3s_asg_testbed::reliability::held(
            "Crashes",
            &format!("kill -9 right after leave step `{step}` (a server behind a lifecycle hook), then `run`"),
            1,
            "run finishes the leave: deregistered; own API record gone, the other kept; Node deleted; k3s stopped; exactly one CONTINUE; no temp files",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_leave_the_next_run_finishes_the_job() {
    let (mut w, cp, tg) = cluster().await;
    let node = w.joined("alpha", "node").await.unwrap();
    w.agent_env.insert("K3S_STUB_DRAIN_SECONDS".into(), "30".into());
    let agent = w.spawn_agent(&node, &["leave"]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !node.stub_calls().iter().any(|l| l.contains(" drain ")) {
        assert!(std::time::Instant::now() < deadline, "never reached drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(agent); // kill_on_drop: SIGKILL mid-drain
    w.agent_env.insert("K3S_STUB_DRAIN_SECONDS".into(), "0".into());
    let run = w.agent(&node, &["run"]).await.unwrap();
    ok(&run);
    assert!(run.stderr.contains("previous leave did not finish"), "{}", run.stderr);
    assert_eq!(w.members(&tg).await.unwrap(), vec![cp.id.clone()]);
    assert!(!node.path("/run/k3s-stub/active-k3s-agent").exists());
    assert!(node.stub_calls().iter().any(|l| l.contains("delete node/")));
    k3s_asg_testbed::reliability::held(
        "Crashes",
        "kill -9 in the middle of a 30 s drain, then `run`",
        1,
        "run finishes the leave: deregistered, Node deleted, k3s stopped",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_each_recovery_step_converges() {
    for step in [StepName::RecoveryWon, StepName::Restored] {
        let mut w = world(true).await;
        let old = snapshotted_servers(&mut w, 1, "marker: crash").await;
        lose(&w, &old).await;
        let a = w.launch("alpha", "control-plane").await.unwrap();
        let crashed = run_with_failpoint(&mut w, &a, "join", step).await;
        assert_ne!(crashed.code, 0, "{step}: the failpoint killed it");
        ok(&w.agent(&a, &["join"]).await.unwrap());
        assert_eq!(marker_of(&a), "marker: crash", "{step}");
        assert!(record(&w, 2).await.is_some_and(|r| r.winner == a.id && r.secured_at.is_some()), "{step}");
        assert!(record(&w, 3).await.is_none(), "{step}: no second recovery election");
    }
    // The last server killed right after its final snapshot: leave again finishes.
    let mut w = world(true).await;
    let s = w.joined("alpha", "control-plane").await.unwrap();
    write_marker(std::slice::from_ref(&s), "marker: final");
    assert_ne!(run_with_failpoint(&mut w, &s, "leave", StepName::FinalSnapshot).await.code, 0);
    ok(&w.agent(&s, &["leave"]).await.unwrap());
    assert_eq!(state(&s).phase, Phase::Left);
    let snaps = w.snapshots("alpha", BUCKET).await.unwrap();
    assert!(!snaps.is_empty() && snaps.iter().all(|(n, b)| n.starts_with("k3s-asg-final-") && b.contains("marker: final")), "{:?}", names(&snaps));
    k3s_asg_testbed::reliability::held(
        "Crashes",
        "kill -9 after recovery-won, restored and final-snapshot",
        3,
        "a second run converges: one recovery election, the marker back",
    );
}
