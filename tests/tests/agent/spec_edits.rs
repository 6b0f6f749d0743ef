//! Change without breakage (issue 18): cluster spec edits converge while `run` goes, and a
//! leave undoes what the instance was put into, whatever the spec says now: edited, or
//! broken by a typo.

use k3s_asg_agent::state::Phase;
use k3s_asg_testbed::check::{ok, state, until, wait_for_phase};
use k3s_asg_testbed::world::World;
use std::time::Duration;

/// A second target group in the world's VPC.
async fn target_group(w: &World, name: &str) -> String {
    let tg = w
        .elb
        .create_target_group()
        .name(name)
        .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
        .port(80)
        .vpc_id(&w.vpc_id)
        .target_type(aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Instance)
        .send()
        .await
        .unwrap();
    tg.target_groups()[0].target_group_arn().unwrap().to_string()
}

/// The set identifiers of the A records named `hostname`.
async fn records_named(w: &World, hostname: &str) -> Vec<String> {
    let resp = w.route53.list_resource_record_sets().hosted_zone_id(w.zone_id()).send().await.unwrap();
    let mut ids: Vec<String> = resp
        .resource_record_sets()
        .iter()
        .filter(|r| r.name() == format!("{hostname}.") && r.r#type().as_str() == "A")
        .filter_map(|r| r.set_identifier().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_target_group_and_a_renamed_api_converge_while_run_goes() {
    let w = World::with_cluster("alpha").await.unwrap();
    let tg1 = w.target_group("alpha");
    let tg2 = target_group(&w, "alpha-two").await;
    let old_host = w.clusters["alpha"].hostname.clone();
    let new_host = old_host.replacen("api.", "api2.", 1);
    let a = w.launch("alpha", "control-plane").await.unwrap();
    let b = w.launch("alpha", "control-plane").await.unwrap();
    let n = w.launch("alpha", "node").await.unwrap();
    let args = ["--spec-check", "1", "run"];
    let runs = [w.spawn_agent(&a, &args).unwrap(), w.spawn_agent(&b, &args).unwrap(), w.spawn_agent(&n, &args).unwrap()];
    for i in [&a, &b, &n] {
        wait_for_phase(i, Phase::Ready).await;
    }
    assert_eq!(w.members(&tg1).await.unwrap().len(), 3);

    // The operator replaces the target group and renames the API.
    let mut spec = w.default_spec(&w.clusters["alpha"]);
    spec["target_groups"][0]["arn"] = tg2.clone().into();
    spec["api"]["hostname"] = new_host.clone().into();
    w.put_spec("alpha", &spec.to_string()).await.unwrap();
    let everyone = sorted(vec![a.id.clone(), b.id.clone(), n.id.clone()]);
    let servers = sorted(vec![a.id.clone(), b.id.clone()]);
    let mut converged = false;
    for _ in 0..300 {
        let (m1, m2) = (w.members(&tg1).await.unwrap(), w.members(&tg2).await.unwrap());
        let (old, new) = (records_named(&w, &old_host).await, records_named(&w, &new_host).await);
        if m1.is_empty() && m2 == everyone && old.is_empty() && new == servers {
            converged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !converged {
        let [ra, ..] = runs;
        a.imds.set("autoscaling/target-lifecycle-state", Some("Terminated"));
        let r = ra.wait(Duration::from_secs(60)).await.unwrap();
        eprintln!("{}", r.stderr);
        let resp = w.route53.list_resource_record_sets().hosted_zone_id(w.zone_id()).send().await.unwrap();
        let all: Vec<String> =
            resp.resource_record_sets().iter().map(|r| format!("{} {} {:?}", r.name(), r.r#type().as_str(), r.set_identifier())).collect();
        panic!("not converged: {all:#?}");
    }
    assert!(
        converged,
        "registrations and API records follow the spec: tg1 {:?} tg2 {:?} old {:?} new {:?}",
        w.members(&tg1).await.unwrap(),
        w.members(&tg2).await.unwrap(),
        records_named(&w, &old_host).await,
        records_named(&w, &new_host).await
    );
    let admin = w.param("/k3s-asg/clusters/alpha/kubeconfig/admin").await.unwrap().unwrap();
    assert!(admin.contains(&format!("https://{new_host}:6443")), "the published kubeconfig names the new API");
    until("the node's drain kubeconfig to name the new API", Duration::from_secs(10), || {
        n.file("/var/lib/k3s-asg/drain.kubeconfig").is_some_and(|k| k.contains(&new_host))
    })
    .await;

    // A new node joins through the renamed API's records.
    let late = w.joined("alpha", "node").await.unwrap();
    assert!(w.members(&tg2).await.unwrap().contains(&late.id));

    // The running node leaves from where it now is.
    n.imds.set("autoscaling/target-lifecycle-state", Some("Terminated"));
    let [ra, rb, rn] = runs;
    ok(&rn.wait(Duration::from_secs(60)).await.unwrap());
    assert!(!w.members(&tg2).await.unwrap().contains(&n.id));
    for (i, r) in [(&a, ra), (&b, rb)] {
        i.imds.set("autoscaling/target-lifecycle-state", Some("Terminated"));
        ok(&r.wait(Duration::from_secs(60)).await.unwrap());
    }
    assert!(records_named(&w, &new_host).await.is_empty() && records_named(&w, &old_host).await.is_empty());
    k3s_asg_testbed::reliability::held(
        "Adversity",
        "the cluster spec's target group replaced and api.hostname renamed while two servers and a node run",
        1,
        "all register into the new group and leave the old one; the servers' records move to the new name and the old name's are removed; kubeconfigs follow; a new node joins through the new name; leaves undo where each now is",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_after_a_spec_edit_undoes_what_was_recorded() {
    let w = World::with_cluster("alpha").await.unwrap();
    let tg1 = w.target_group("alpha");
    let tg2 = target_group(&w, "alpha-two").await;
    let old_host = w.clusters["alpha"].hostname.clone();
    let a = w.launch("alpha", "control-plane").await.unwrap();
    let n = w.launch("alpha", "node").await.unwrap();
    ok(&w.agent(&a, &["join"]).await.unwrap());
    ok(&w.agent(&n, &["join"]).await.unwrap());
    // Edited with no `run` to converge: the instances are still where they joined.
    let mut spec = w.default_spec(&w.clusters["alpha"]);
    spec["target_groups"][0]["arn"] = tg2.clone().into();
    spec["api"]["hostname"] = old_host.replacen("api.", "api2.", 1).into();
    w.put_spec("alpha", &spec.to_string()).await.unwrap();
    for i in [&n, &a] {
        ok(&w.agent(i, &["leave"]).await.unwrap());
    }
    assert!(w.members(&tg1).await.unwrap().is_empty(), "deregistered from the group they were put into");
    assert!(records_named(&w, &old_host).await.is_empty(), "the server's record under the name it published");
    k3s_asg_testbed::reliability::held(
        "Adversity",
        "a node and a server leave after the spec's target group and api.hostname were edited (no run to converge)",
        1,
        "each deregisters from the group the state file recorded, and the server removes its record under the recorded name",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_spec_does_not_stop_a_leave_from_what_was_recorded() {
    let w = World::with_cluster("alpha").await.unwrap();
    let tg = w.target_group("alpha");
    let a = w.joined("alpha", "control-plane").await.unwrap();
    let b = w.joined("alpha", "control-plane").await.unwrap();
    let node = w.joined("alpha", "node").await.unwrap();
    // A typo in the spec, then the ASG terminates the node and a server.
    w.put_spec("alpha", r#"{"api": {"hostnme": "oops"}}"#).await.unwrap();
    for inst in [&node, &b] {
        let run = w.agent(inst, &["leave"]).await.unwrap();
        ok(&run);
        assert!(run.stderr.contains("leaving from what the state file recorded"), "{}", run.stderr);
        assert!(!w.members(&tg).await.unwrap().contains(&inst.id), "{}: out of its target group", inst.id);
        assert!(inst.stub_calls().iter().any(|l| l.contains(&format!("delete node/{}", inst.id))));
        let st = state(inst);
        assert_eq!(st.phase, Phase::Left);
        assert!(st.last_error.is_some_and(|e| e.contains("left from what the state file recorded")));
    }
    let records: Vec<String> = w.api_records("alpha").await.unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(records, vec![a.id.clone()], "the leaving server's API record is gone");
    k3s_asg_testbed::reliability::held(
        "Adversity",
        "the cluster spec has a typo when a node and a server leave",
        1,
        "each deregisters and the server removes its API record from what its state file recorded",
    );
}
