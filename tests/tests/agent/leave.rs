//! Leaving in order (`leave`, and `run` on SIGTERM of a stopping instance): out of the
//! target group and the API record, drained, Node deleted, k3s stopped, the lifecycle action
//! completed, asserted from one timeline of AWS calls and stub systemctl/k3s calls; a leave is
//! idempotent, harmless on a node that never joined, and a second SIGTERM skips the waits
//! but not the clean-up.

use super::common::cluster;
use k3s_asg_agent::state::{Phase, Trigger};
use k3s_asg_testbed::check::ok;
use k3s_asg_testbed::world::{Instance, World};
use std::time::Duration;

/// One timeline: `(ms, what)` for the instance's AWS calls and stub calls.
fn timeline(w: &World, inst: &Instance) -> Vec<(u128, String)> {
    let mut t: Vec<(u128, String)> = w.recorder.calls_by(&inst.access_key()).into_iter().map(|c| (c.at_ms, format!("aws {}", c.operation))).collect();
    for line in inst.stub_calls() {
        let mut parts = line.splitn(3, '\t');
        let ms: u128 = parts.next().unwrap().parse().unwrap();
        t.push((ms, format!("{} {}", parts.next().unwrap(), parts.next().unwrap_or(""))));
    }
    t.sort_by_key(|(ms, _)| *ms);
    t
}

fn at(t: &[(u128, String)], needle: &str) -> u128 {
    t.iter().find(|(_, w)| w.contains(needle)).map(|(ms, _)| *ms).unwrap_or_else(|| panic!("{needle:?} not in timeline {t:#?}"))
}

fn assert_order(t: &[(u128, String)], steps: &[&str]) {
    for pair in steps.windows(2) {
        assert!(at(t, pair[0]) <= at(t, pair[1]), "{} must come before {}: {t:#?}", pair[0], pair[1]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_leaves_in_order_and_completes_the_lifecycle_action() {
    let (mut w, cp, tg) = cluster().await;
    let node = w.joined("alpha", "node").await.unwrap();
    w.asg.add(&node.id, "alpha-nodes", "Terminating:Wait", 3);
    w.agent_env.insert("K3S_STUB_DRAIN_SECONDS".into(), "2.5".into());
    w.recorder.clear();
    node.clear_stub_calls();
    let run = w.agent(&node, &["leave"]).await.unwrap();
    ok(&run);

    let t = timeline(&w, &node);
    assert_order(
        &t,
        &["aws DeregisterTargets", "k3s kubectl --kubeconfig", "drain", "delete node/", "systemctl stop k3s-agent", "aws CompleteLifecycleAction"],
    );
    assert!(t.iter().any(|(_, w)| w.contains(&format!("drain {} --ignore-daemonsets", node.id))
        && w.contains("--timeout=60s")
        && w.contains("--grace-period=30")));
    let actions = w.asg.actions();
    assert!(actions.iter().any(|a| a.0 == "RecordLifecycleActionHeartbeat" && a.1 == node.id), "heartbeats while draining: {actions:?}");
    assert_eq!(actions.last().unwrap(), &("CompleteLifecycleAction".into(), node.id.clone(), "drain".into(), "CONTINUE".into()));
    assert_eq!(w.members(&tg).await.unwrap(), vec![cp.id.clone()], "node deregistered, server untouched");
    assert!(!node.path("/run/k3s-stub/active-k3s-agent").exists(), "k3s stopped");
    let status = w.agent(&node, &["status", "--json"]).await.unwrap();
    let st: k3s_asg_agent::state::State = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!((st.phase, st.trigger), (Phase::Left, Some(Trigger::Command)));

    // Leave is idempotent: again, it changes nothing.
    w.recorder.clear();
    ok(&w.agent(&node, &["leave"]).await.unwrap());
    let mutating: Vec<_> = w.recorder.calls().into_iter().filter(|c| c.is_mutating()).collect();
    assert!(mutating.is_empty(), "second leave mutated: {mutating:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_removes_its_api_record_before_draining() {
    let (w, cp, tg) = cluster().await;
    let cp2 = w.joined("alpha", "control-plane").await.unwrap();
    w.recorder.clear();
    cp2.clear_stub_calls();
    ok(&w.agent(&cp2, &["leave"]).await.unwrap());
    let t = timeline(&w, &cp2);
    assert_order(&t, &["aws DeregisterTargets", "aws ChangeResourceRecordSets", "kubectl drain", "delete node/", "systemctl stop k3s"]);
    assert!(!t.iter().any(|(_, w)| w.contains("--kubeconfig")), "a server drains with its own admin access");
    let ids: Vec<String> = w.api_records("alpha").await.unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![cp.id.clone()]);
    assert_eq!(w.members(&tg).await.unwrap(), vec![cp.id.clone()]);
    assert!(!t.iter().any(|(_, w)| w.contains("CompleteLifecycleAction")), "no hook waiting: nothing to complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_on_a_node_that_never_joined_does_nothing_harmful() {
    let (w, cp, tg) = cluster().await;
    let node = w.launch("alpha", "node").await.unwrap();
    w.recorder.clear();
    ok(&w.agent(&node, &["leave"]).await.unwrap());
    let mutating: Vec<_> = w.recorder.calls().into_iter().filter(|c| c.is_mutating()).collect();
    assert!(mutating.is_empty(), "{mutating:?}");
    assert!(node.stub_calls().iter().all(|l| l.contains("is-active")), "{:?}", node.stub_calls());
    assert_eq!(w.members(&tg).await.unwrap(), vec![cp.id.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigterm_skips_waits_but_still_cleans_up() {
    let (mut w, cp, tg) = cluster().await;
    // A drain that would take far longer than anyone wants to wait.
    w.agent_env.insert("K3S_STUB_DRAIN_SECONDS".into(), "120".into());
    let node = w.launch("alpha", "node").await.unwrap();
    let agent = w.run_until_ready(&node).await.unwrap();
    w.ec2.stop_instances().instance_ids(&node.id).send().await.unwrap();
    agent.sigterm();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !node.stub_calls().iter().any(|l| l.contains(" drain ")) {
        assert!(std::time::Instant::now() < deadline, "never started draining");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.sigterm();
    let run = agent.wait(Duration::from_secs(60)).await.unwrap();
    ok(&run);
    assert!(run.stderr.contains("second SIGTERM"), "{}", run.stderr);
    let t = timeline(&w, &node);
    assert_order(&t, &["aws DeregisterTargets", " drain ", "delete node/", "systemctl stop k3s-agent"]);
    assert_eq!(w.members(&tg).await.unwrap(), vec![cp.id.clone()]);
}
