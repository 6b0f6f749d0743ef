//! End-to-end: `k3s-asg-coordinator plan | apply` against moto — rules and
//! latency records for clusters and shared endpoints, owned safely.

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

async fn records(w: &World) -> Vec<ResourceRecordSet> {
    w.route53.list_resource_record_sets().hosted_zone_id(w.zone_id()).send().await.unwrap().resource_record_sets().to_vec()
}

fn writes(w: &World) -> Vec<String> {
    w.recorder.calls().into_iter().filter(|c| c.is_mutating()).map(|c| c.operation).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_apply_converge_and_leave_foreign_things_alone() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    w.create_cluster("bravo").await.unwrap();
    let (_alb, listener) = w.create_alb(443, 100).await.unwrap();
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
async fn limits_and_bad_specs_refuse_before_the_first_write() {
    let mut w = World::new().await.unwrap();
    for c in ["a", "b", "c"] {
        w.create_cluster(c).await.unwrap();
    }
    w.create_alb(443, 2).await.unwrap();
    w.recorder.clear();
    let run = w.coordinator(&["apply"]).await.unwrap();
    // Over quota is bad input: exit 2 naming the region spec, and the refused plan is shown.
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("quota is 2") && run.stderr.contains("/k3s-asg/regions/us-east-1"), "{}", run.stderr);
    assert_eq!(run.stdout.matches("+ rule").count(), 3, "{}", run.stdout);
    assert!(run.stdout.contains("! refused:"), "{}", run.stdout);
    assert!(writes(&w).is_empty(), "{:?}", writes(&w));
    let plan = w.coordinator(&["plan"]).await.unwrap();
    assert_eq!(plan.code, 2, "{}", plan.stderr);
    assert_eq!(plan.stdout, run.stdout);

    let zone = w.zone_id().to_string();
    w.put_param(
        "/k3s-asg/endpoints/wide",
        &serde_json::json!({ "hostname": "wide.example.com", "hosted_zone_id": zone,
            "clusters": { "a": 1, "b": 1, "c": 1, "d": 1, "e": 1, "f": 1 } })
        .to_string(),
    )
    .await
    .unwrap();
    w.recorder.clear();
    let run = w.coordinator(&["plan"]).await.unwrap();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("/k3s-asg/endpoints/wide") && run.stderr.contains("field `clusters`"), "{}", run.stderr);
    assert!(writes(&w).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_records_of_stopped_instances_are_collected() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    w.create_alb(443, 100).await.unwrap();
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
async fn lambda_mode_answers_each_event_with_one_reconcile() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    let (_alb, listener) = w.create_alb(443, 100).await.unwrap();
    let api = k3s_asg_testbed::lambda_api::RuntimeApi::start().await.unwrap();
    let fixtures = k3s_asg_testbed::repo_root().join("coordinator/testdata");
    let event = |name: &str| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(fixtures.join(name)).unwrap()).unwrap() };
    api.invoke("req-1", event("eventbridge-scheduled.json"));
    let function = w.spawn_coordinator_lambda(&api.address()).unwrap();
    let answers = api.answers(1, std::time::Duration::from_secs(30)).await.unwrap();
    assert_eq!(answers[0].0, "req-1");
    assert_eq!(answers[0].1, "response", "{}", answers[0].2);
    let v: serde_json::Value = serde_json::from_str(&answers[0].2).unwrap();
    assert_eq!(v["event"], "schedule");
    assert_eq!(v["rule_changes"], 1, "created the cluster rule: {v}");
    assert!(w.rule_hosts(&listener).await.unwrap().contains(&"*--alpha.us-east-1.example.com".to_string()));

    // An ASG lifecycle event is answered with one more (now empty) reconcile.
    w.recorder.clear();
    api.invoke("req-2", event("asg-lifecycle-terminating.json"));
    let answers = api.answers(2, std::time::Duration::from_secs(30)).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&answers[1].2).unwrap();
    assert!(v["event"].as_str().unwrap().starts_with("autoscaling:"), "{v}");
    assert_eq!(v["rule_changes"], 0);
    assert!(writes(&w).is_empty());
    // Warm: the specs, the listeners and the rules' owner tags were kept from the first event;
    // only the rules and records themselves were read again.
    let ops: Vec<String> = w.recorder.calls().into_iter().map(|c| c.operation).collect();
    for kept in ["GetParameter", "GetParametersByPath", "DescribeTags", "DescribeListeners", "DescribeLoadBalancers"] {
        assert!(!ops.iter().any(|o| o == kept), "{kept} sent in a warm reconcile: {ops:?}");
    }
    assert!(ops.iter().any(|o| o == "DescribeRules"), "{ops:?}");

    // A new endpoint and its Parameter Store Change event: the specs are read again and applied.
    let zone = w.zone_id().to_string();
    w.put_param(
        "/k3s-asg/endpoints/blog",
        &serde_json::json!({ "hostname": "blog.example.com", "hosted_zone_id": zone, "clusters": { "alpha": 1 }, "listener_port": 443 }).to_string(),
    )
    .await
    .unwrap();
    w.recorder.clear();
    api.invoke("req-3", event("ssm-parameter-change.json"));
    let answers = api.answers(3, std::time::Duration::from_secs(30)).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&answers[2].2).unwrap();
    assert!(v["event"].as_str().unwrap().starts_with("ssm: Parameter Store Change"), "{v}");
    assert_eq!(v["rule_changes"], 1, "{v}");
    assert!(w.rule_hosts(&listener).await.unwrap().contains(&"blog.example.com".to_string()));
    let ops: Vec<String> = w.recorder.calls().into_iter().map(|c| c.operation).collect();
    assert!(ops.iter().any(|o| o == "GetParametersByPath"), "{ops:?}");
    drop(function);
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
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    w.create_cluster("bravo").await.unwrap();
    let (_alb, listener) = w.create_alb(443, 100).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_coordinators_at_once_converge_without_duplicates() {
    let mut w = World::new().await.unwrap();
    for c in ["alpha", "bravo"] {
        w.create_cluster(c).await.unwrap();
    }
    let (_alb, listener) = w.create_alb(443, 100).await.unwrap();
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
async fn a_specific_rule_behind_a_wildcard_is_moved_in_front() {
    use aws_sdk_elasticloadbalancingv2::types::RulePriorityPair;
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    let (_alb, listener) = w.create_alb(443, 100).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_command_prints_the_admin_kubeconfig() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    let missing = w.coordinator(&["kubeconfig", "alpha"]).await.unwrap();
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("/k3s-asg/clusters/alpha/kubeconfig/admin"), "{}", missing.stderr);
    let cp = w.launch("alpha", "control-plane").await.unwrap();
    let run = w.agent(&cp, &["join"]).await.unwrap();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = w.coordinator(&["kubeconfig", "alpha"]).await.unwrap();
    ok(&out);
    assert_eq!(out.stdout, w.param("/k3s-asg/clusters/alpha/kubeconfig/admin").await.unwrap().unwrap());
    assert!(out.stdout.contains("server: https://api.alpha.us-east-1.example.com:6443"));
    assert!(!out.stderr.contains("client-key-data"), "the secret stays out of the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_name_the_agent_would_refuse_is_left_out_never_flipped_into_another() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    w.create_cluster("bravo").await.unwrap();
    let (_alb, listener) = w.create_alb(443, 100).await.unwrap();
    // `Alpha` beside `alpha`, pointing at bravo's target group: lower-cased, it would take
    // alpha's wildcard rule on every other apply.
    let bravo = w.default_spec(&w.clusters["bravo"]);
    w.put_param("/k3s-asg/clusters/Alpha/config", &bravo.to_string()).await.unwrap();
    let alpha_tg = w.clusters["alpha"].target_group_arn.clone();
    for round in 0..3 {
        w.recorder.clear();
        let run = w.coordinator(&["apply"]).await.unwrap();
        assert_eq!(run.code, 2, "round {round}: {}", run.stderr);
        assert!(run.stderr.contains("/k3s-asg/clusters/Alpha/config") && run.stderr.contains("not a valid cluster name"), "{}", run.stderr);
        assert!(run.stdout.contains("! left out: /k3s-asg/clusters/Alpha/config"), "{}", run.stdout);
        let rules = w.rules(&listener).await.unwrap();
        let alpha_rule = k3s_asg_testbed::world::rule_for_host(&rules, "*--alpha.us-east-1.example.com").expect("alpha's rule, applied");
        let forwards: Vec<String> = alpha_rule
            .actions()
            .iter()
            .flat_map(|a| {
                a.forward_config()
                    .map(|f| f.target_groups().iter().filter_map(|t| t.target_group_arn().map(str::to_string)).collect::<Vec<_>>())
                    .unwrap_or_default()
            })
            .chain(alpha_rule.actions().iter().filter_map(|a| a.target_group_arn().map(str::to_string)))
            .collect();
        assert_eq!(forwards, vec![alpha_tg.clone()], "round {round}: alpha's rule forwards to alpha only");
        if round > 0 {
            assert!(writes(&w).is_empty(), "round {round}: nothing flips: {:?}", writes(&w));
        }
    }
    k3s_asg_testbed::reliability::held(
        "Bad input: coordinator specs",
        "a cluster parameter named `Alpha` beside `alpha`, three applies",
        1,
        "exit 2 naming /k3s-asg/clusters/Alpha/config, left out of the plan; alpha's rule is applied and never switched; no writes after the first apply",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_installations_sharing_a_zone_converge_and_keep_their_records() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    w.create_alb(443, 100).await.unwrap();
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
