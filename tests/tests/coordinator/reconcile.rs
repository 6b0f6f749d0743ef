//! Plan and apply: rules and latency records for clusters and shared endpoints converge and
//! then write nothing, foreign rules and records are left alone, a specific rule is kept in
//! front of a wildcard, and health checked with the endpoint's Host header sets a failing
//! cluster's weight to 0 (failing open when every cluster fails).

use super::common::{records, writes};
use aws_sdk_elasticloadbalancingv2::types::{Action, ActionTypeEnum, HostHeaderConditionConfig, RuleCondition};
use aws_sdk_route53::types::{Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType};
use k3s_asg_testbed::check::ok;
use k3s_asg_testbed::world::{rule_for_host, World};

async fn foreign_rule(w: &World, listener: &str, host: &str, priority: i32, tg: &str) {
    w.elb
        .create_rule()
        .listener_arn(listener)
        .priority(priority)
        .conditions(
            RuleCondition::builder().field("host-header").host_header_config(HostHeaderConditionConfig::builder().values(host).build()).build(),
        )
        .actions(Action::builder().r#type(ActionTypeEnum::Forward).target_group_arn(tg).build())
        .send()
        .await
        .unwrap();
}

/// The listener's rules for hosts other than ours (as the ALB returns them, to compare whole).
async fn foreign_rules(w: &World, listener: &str) -> Vec<aws_sdk_elasticloadbalancingv2::types::Rule> {
    let foreign = |r: &aws_sdk_elasticloadbalancingv2::types::Rule| {
        k3s_asg_testbed::world::rule_hosts(r).iter().any(|h| h == "manual.example.com" || h == "taken.example.com")
    };
    w.rules(listener).await.unwrap().into_iter().filter(foreign).collect()
}

/// The zone's record sets under `manual.example.com` (someone else's), to compare whole.
async fn manual_records(w: &World) -> Vec<ResourceRecordSet> {
    records(w).await.into_iter().filter(|r| r.name().ends_with("manual.example.com.")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_apply_converge_and_leave_foreign_things_alone() {
    let (w, listener) = World::with_alb(&["alpha", "bravo"]).await.unwrap();
    let tg_a = w.clusters["alpha"].target_group_arn.clone();
    let tg_b = w.clusters["bravo"].target_group_arn.clone();
    let zone = w.zone_id().to_string();
    w.put_param(
        "/k3s-asg/endpoints/blog",
        &serde_json::json!({ "hostname": "blog.example.com", "hosted_zone_id": zone, "clusters": { "alpha": 1, "bravo": 3 },
                             "listener_port": 443, "restricted_cidrs": ["127.0.0.0/8"], "stickiness_s": 60 })
        .to_string(),
    )
    .await
    .unwrap();
    // Foreign things beside ours: a rule for another host, a record, and a rule that takes an endpoint's host.
    foreign_rule(&w, &listener, "manual.example.com", 1, &tg_a).await;
    foreign_rule(&w, &listener, "taken.example.com", 2, &tg_b).await;
    w.put_param(
        "/k3s-asg/endpoints/taken",
        &serde_json::json!({ "hostname": "taken.example.com", "hosted_zone_id": zone, "clusters": { "alpha": 1 }, "listener_port": 443 }).to_string(),
    )
    .await
    .unwrap();
    let manual = ResourceRecordSet::builder()
        .name("manual.example.com.")
        .r#type(RrType::A)
        .ttl(60)
        .resource_records(ResourceRecord::builder().value("127.9.9.9").build().unwrap())
        .build()
        .unwrap();
    w.route53
        .change_resource_record_sets()
        .hosted_zone_id(&zone)
        .change_batch(
            ChangeBatch::builder()
                .changes(Change::builder().action(ChangeAction::Create).resource_record_set(manual).build().unwrap())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let foreign_rules_before = foreign_rules(&w, &listener).await;
    let foreign_records_before = manual_records(&w).await;
    assert_eq!(foreign_rules_before.len(), 2, "the manual and the taken rule");
    assert!(!foreign_records_before.is_empty());

    // plan: a readable listing, no writes.
    w.recorder.clear();
    let plan = w.coordinator(&["plan"]).await.unwrap();
    ok(&plan);
    assert!(writes(&w).is_empty(), "plan wrote: {:?}", writes(&w));
    assert!(plan.stdout.contains("+ rule   host *--alpha.us-east-1.example.com"), "{}", plan.stdout);
    assert!(plan.stdout.contains("+ rule   host *--bravo.us-east-1.example.com"));
    assert!(plan.stdout.contains("+ rule   host blog.example.com"));
    assert!(plan.stdout.contains("+ record blog.example.com. A (us-east-1/blog.example.com)"));
    assert!(plan.stdout.contains("! conflict: endpoint taken"), "{}", plan.stdout);
    let json = w.coordinator(&["plan", "--json"]).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["rules"].as_array().unwrap().len(), 3);

    // apply.
    ok(&w.coordinator(&["apply"]).await.unwrap());
    let rules = w.rules(&listener).await.unwrap();
    let blog = rule_for_host(&rules, "blog.example.com").expect("endpoint rule");
    let fwd = blog.actions()[0].forward_config().unwrap();
    let weights: Vec<(String, i32)> = fwd.target_groups().iter().map(|t| (t.target_group_arn().unwrap().to_string(), t.weight().unwrap())).collect();
    assert!(weights.contains(&(tg_a.clone(), 1)) && weights.contains(&(tg_b.clone(), 3)), "{weights:?}");
    assert_eq!(fwd.target_group_stickiness_config().unwrap().duration_seconds(), Some(60));
    assert!(blog.conditions().iter().any(|c| c.field() == Some("source-ip")));
    let wildcard = rule_for_host(&rules, "*--alpha.us-east-1.example.com").expect("cluster rule");
    assert!(wildcard.priority().unwrap().parse::<u32>().unwrap() > blog.priority().unwrap().parse::<u32>().unwrap(), "specific before wildcard");
    let recs = records(&w).await;
    let alias = recs.iter().find(|r| r.name() == "blog.example.com." && r.r#type() == &RrType::A).expect("latency alias");
    assert_eq!(alias.set_identifier(), Some("us-east-1/blog.example.com"));
    assert_eq!(alias.region().map(|r| r.as_str()), Some("us-east-1"));
    assert!(alias.alias_target().unwrap().evaluate_target_health());
    assert!(recs.iter().any(|r| r.name() == "_k3s-asg.blog.example.com." && r.r#type() == &RrType::Txt));
    assert!(!recs.iter().any(|r| r.name().starts_with("taken.")), "no record for a conflicted endpoint");

    // Steady state: nothing to write, `plan` says so.
    for _ in 0..3 {
        w.recorder.clear();
        ok(&w.coordinator(&["apply"]).await.unwrap());
        assert!(writes(&w).is_empty(), "steady-state apply wrote: {:?}", writes(&w));
    }
    let plan = w.coordinator(&["plan"]).await.unwrap();
    assert!(!plan.stdout.contains("+ ") && !plan.stdout.contains("~ ") && !plan.stdout.contains("- "), "{}", plan.stdout);

    // Foreign rules and records are byte-identical.
    assert_eq!(foreign_rules(&w, &listener).await, foreign_rules_before, "foreign rules changed");
    assert_eq!(manual_records(&w).await, foreign_records_before, "foreign records changed");

    // Weight change → modified in place; endpoint gone → its rule and records are collected.
    w.put_param(
        "/k3s-asg/endpoints/blog",
        &serde_json::json!({ "hostname": "blog.example.com", "hosted_zone_id": zone, "clusters": { "alpha": 1, "bravo": 0 }, "listener_port": 443 })
            .to_string(),
    )
    .await
    .unwrap();
    w.recorder.clear();
    ok(&w.coordinator(&["apply"]).await.unwrap());
    assert_eq!(writes(&w), vec!["ModifyRule"]);
    w.ssm.delete_parameter().name("/k3s-asg/endpoints/blog").send().await.unwrap();
    ok(&w.coordinator(&["apply"]).await.unwrap());
    let recs = records(&w).await;
    assert!(!recs.iter().any(|r| r.name().contains("blog.example.com")), "endpoint records collected");
    assert!(!w.rule_hosts(&listener).await.unwrap().contains(&"blog.example.com".to_string()));
    assert!(w.rule_hosts(&listener).await.unwrap().contains(&"manual.example.com".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_specific_rule_behind_a_wildcard_is_moved_in_front() {
    use aws_sdk_elasticloadbalancingv2::types::RulePriorityPair;
    let (w, listener) = World::with_alb(&["alpha"]).await.unwrap();
    w.put_endpoint("blog", serde_json::json!({ "hostname": "blog.example.com", "clusters": { "alpha": 1 } })).await.unwrap();
    ok(&w.coordinator(&["apply"]).await.unwrap());
    let arn_of = |rules: &[aws_sdk_elasticloadbalancingv2::types::Rule], host: &str| {
        let r = rule_for_host(rules, host).unwrap();
        (r.rule_arn().unwrap().to_string(), r.priority().unwrap().to_string())
    };
    let rules = w.rules(&listener).await.unwrap();
    let (blog, _) = arn_of(&rules, "blog.example.com");
    let (wild, _) = arn_of(&rules, "*--alpha.us-east-1.example.com");
    // Someone reorders by hand: the wildcard now shadows the endpoint.
    w.elb
        .set_rule_priorities()
        .rule_priorities(RulePriorityPair::builder().rule_arn(&wild).priority(5).build())
        .rule_priorities(RulePriorityPair::builder().rule_arn(&blog).priority(10).build())
        .send()
        .await
        .unwrap();
    let plan = w.coordinator(&["plan"]).await.unwrap();
    assert!(plan.stdout.contains("~ order  host blog.example.com: priority 10 → 1"), "{}", plan.stdout);
    w.recorder.clear();
    ok(&w.coordinator(&["apply"]).await.unwrap());
    assert_eq!(writes(&w), vec!["SetRulePriorities"]);
    let rules = w.rules(&listener).await.unwrap();
    assert_eq!(arn_of(&rules, "blog.example.com").1, "1");
    assert_eq!(arn_of(&rules, "*--alpha.us-east-1.example.com").1, "5", "the wildcard keeps its place");
}

/// Serves `/healthz` on `ip:80`: `status` when the Host header is `host`, 421 otherwise.
async fn host_health(ip: &str, host: &'static str, status: std::sync::Arc<std::sync::atomic::AtomicU16>) -> k3s_asg_testbed::http::Served {
    let router = axum::Router::new().route(
        "/healthz",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let status = status.clone();
            async move {
                let ok = headers.get("host").and_then(|h| h.to_str().ok()) == Some(host);
                let code = if ok { status.load(std::sync::atomic::Ordering::SeqCst) } else { 421 };
                axum::http::StatusCode::from_u16(code).unwrap()
            }
        }),
    );
    k3s_asg_testbed::http::serve(&format!("{ip}:80"), router).await.unwrap()
}

fn weights_of(rules: &[aws_sdk_elasticloadbalancingv2::types::Rule], host: &str) -> Vec<i32> {
    let r = rule_for_host(rules, host).expect("rule");
    r.actions()[0].forward_config().unwrap().target_groups().iter().map(|t| t.weight().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_with_host_header_zeroes_failing_clusters_and_fails_open() {
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::sync::Arc;
    let (w, listener) = World::with_alb(&["alpha", "bravo"]).await.unwrap();
    let zone = w.zone_id().to_string();
    w.put_param(
        "/k3s-asg/endpoints/blog",
        &serde_json::json!({ "hostname": "blog.example.com", "hosted_zone_id": zone, "clusters": { "alpha": 1, "bravo": 1 },
                             "listener_port": 443, "health": { "path": "/healthz", "expect_status": 200 } })
        .to_string(),
    )
    .await
    .unwrap();
    let mut servers = Vec::new();
    let mut statuses = Vec::new();
    for c in ["alpha", "bravo"] {
        let inst = w.launch(c, "node").await.unwrap();
        let tg = w.clusters[c].target_group_arn.clone();
        w.elb
            .register_targets()
            .target_group_arn(&tg)
            .targets(aws_sdk_elasticloadbalancingv2::types::TargetDescription::builder().id(&inst.id).port(80).build())
            .send()
            .await
            .unwrap();
        let status = Arc::new(AtomicU16::new(200));
        servers.push(host_health(&inst.ip, "blog.example.com", status.clone()).await);
        statuses.push(status);
    }

    // bravo fails with the right Host header: weight 0.
    statuses[1].store(503, Ordering::SeqCst);
    let run = w.coordinator(&["apply"]).await.unwrap();
    ok(&run);
    assert!(run.stdout.contains("weight 0 for failing cluster(s) bravo"), "{}", run.stdout);
    assert_eq!(weights_of(&w.rules(&listener).await.unwrap(), "blog.example.com"), vec![1, 0]);

    // It passes again: back to its configured weight.
    statuses[1].store(200, Ordering::SeqCst);
    ok(&w.coordinator(&["apply"]).await.unwrap());
    assert_eq!(weights_of(&w.rules(&listener).await.unwrap(), "blog.example.com"), vec![1, 1]);

    // Every cluster fails: fail open, and say so.
    statuses[0].store(500, Ordering::SeqCst);
    statuses[1].store(500, Ordering::SeqCst);
    let run = w.coordinator(&["apply"]).await.unwrap();
    ok(&run);
    assert!(run.stdout.contains("fail open"), "{}", run.stdout);
    assert_eq!(weights_of(&w.rules(&listener).await.unwrap(), "blog.example.com"), vec![1, 1]);
    drop(servers);
}
