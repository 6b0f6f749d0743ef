//! Several coordinators: two applying at once converge without duplicates; two
//! installations (their own prefixes and ALBs) sharing a hosted zone keep their own records
//! and never touch each other's.

use super::common::{records, writes};
use aws_sdk_route53::types::RrType;
use k3s_asg_testbed::check::ok;
use k3s_asg_testbed::world::World;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_coordinators_at_once_converge_without_duplicates() {
    let (w, listener) = World::with_alb(&["alpha", "bravo"]).await.unwrap();
    let zone = w.zone_id().to_string();
    for i in 0..5 {
        w.put_param(
            &format!("/k3s-asg/endpoints/e{i}"),
            &serde_json::json!({ "hostname": format!("e{i}.example.com"), "hosted_zone_id": zone, "clusters": { "alpha": 1, "bravo": 1 } })
                .to_string(),
        )
        .await
        .unwrap();
    }
    let runs = k3s_asg_testbed::join_all(vec![w.coordinator(&["apply"]), w.coordinator(&["apply"])]).await;
    for r in &runs {
        ok(r.as_ref().unwrap());
    }
    let hosts = w.rule_hosts(&listener).await.unwrap();
    let mut unique = hosts.clone();
    unique.dedup();
    assert_eq!(hosts, unique, "duplicate rules");
    assert_eq!(hosts.len(), 7, "5 endpoints + 2 clusters: {hosts:?}");
    let recs = records(&w).await;
    let aliases = recs.iter().filter(|r| r.r#type() == &RrType::A && r.alias_target().is_some()).count();
    assert_eq!(aliases, 5);
    w.recorder.clear();
    ok(&w.coordinator(&["apply"]).await.unwrap());
    assert!(writes(&w).is_empty(), "{:?}", writes(&w));
    k3s_asg_testbed::reliability::held(
        "Races",
        "two coordinators apply 5 endpoints × 2 clusters at once",
        1,
        "both exit 0; 7 rules, no duplicates; 5 latency records; one more apply writes nothing",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_installations_sharing_a_zone_converge_and_keep_their_records() {
    let (w, _) = World::with_alb(&["alpha"]).await.unwrap();
    // Staging: its own prefix and ALB, the same zone, and (as an operator might) the same owner.
    const STAGING: &str = "/k3s-asg-staging";
    w.create_alb_in(STAGING, 1, 443, 100).await.unwrap();
    let spec = w.default_spec(&w.clusters["alpha"]);
    w.put_param(&format!("{STAGING}/clusters/alpha/config"), &spec.to_string()).await.unwrap();
    let zone = w.zone_id().to_string();
    let endpoint = |host: &str| serde_json::json!({ "hostname": host, "hosted_zone_id": zone, "clusters": { "alpha": 1 } }).to_string();
    w.put_param("/k3s-asg/endpoints/blog", &endpoint("blog.example.com")).await.unwrap();
    w.put_param(&format!("{STAGING}/endpoints/blog"), &endpoint("blog-staging.example.com")).await.unwrap();
    let production = ["--owner", "k3s-asg", "apply"];
    let staging = ["--owner", "k3s-asg", "--prefix", STAGING, "apply"];
    let alias_of = |recs: &[aws_sdk_route53::types::ResourceRecordSet], host: &str| {
        recs.iter()
            .find(|r| r.name() == format!("{host}.") && r.r#type().as_str() == "A")
            .and_then(|r| r.alias_target().map(|a| a.dns_name().to_string()))
    };
    let mut first_targets = None;
    for round in 0..5 {
        w.recorder.clear();
        ok(&w.coordinator(&production).await.unwrap());
        ok(&w.coordinator(&staging).await.unwrap());
        let recs = records(&w).await;
        let targets = (
            alias_of(&recs, "blog.example.com").expect("production's record"),
            alias_of(&recs, "blog-staging.example.com").expect("staging's record"),
        );
        assert_ne!(targets.0, targets.1, "each points at its own ALB");
        let claims = recs.iter().filter(|r| r.name().starts_with("_k3s-asg.")).count();
        assert_eq!(claims, 2, "both ownership claims kept");
        match &first_targets {
            None => first_targets = Some(targets),
            Some(t) => {
                assert_eq!(t, &targets, "round {round}: records unchanged");
                assert!(writes(&w).is_empty(), "round {round}: no writes after the first round: {:?}", writes(&w));
            }
        }
    }
    k3s_asg_testbed::reliability::held(
        "Races",
        "two installations (prefixes /k3s-asg and /k3s-asg-staging, own ALBs, one owner id) sharing a hosted zone, 5 rounds of applies each",
        1,
        "no writes after the first round; each keeps its latency record and claim (claims name the load balancer; an alias to another load balancer is never changed or deleted)",
    );
}
