//! Bad input stops the coordinator with exit 2 and a message naming the parameter and
//! field, before its first write: bad endpoint and region specs, a plan over the listener's
//! rules quota (the dead servers' records are still collected), a cluster name the agent
//! would refuse (left out, never flipped into another).

use super::common::writes;
use k3s_asg_testbed::check::ok;
use k3s_asg_testbed::world::World;

/// A coordinator case: parameters written (name under /k3s-asg, JSON with `ZONE` and `ALB`/`LISTENER`
/// placeholders; None deletes it) before `plan` and `apply`.
struct SpecCase {
    name: &'static str,
    params: &'static [(&'static str, Option<&'static str>)],
    expect: &'static [&'static str],
}

const EP: &str = "/k3s-asg/endpoints/blog";
const RG: &str = "/k3s-asg/regions/us-east-1";

const SPEC_CASES: &[SpecCase] = &[
    SpecCase {
        name: "endpoint: clusters of the wrong type",
        params: &[(EP, Some(r#"{"hostname":"blog.example.com","hosted_zone_id":"ZONE","clusters":["alpha"]}"#))],
        expect: &[EP, "field `clusters`"],
    },
    SpecCase {
        name: "endpoint: weight as a string",
        params: &[(EP, Some(r#"{"hostname":"blog.example.com","hosted_zone_id":"ZONE","clusters":{"alpha":"1"}}"#))],
        expect: &[EP, "field `clusters.alpha`"],
    },
    SpecCase {
        name: "endpoint: weight above 999",
        params: &[(EP, Some(r#"{"hostname":"blog.example.com","hosted_zone_id":"ZONE","clusters":{"alpha":1000}}"#))],
        expect: &[EP, "field `clusters.alpha`", "999"],
    },
    SpecCase {
        name: "endpoint: unknown field",
        params: &[(EP, Some(r#"{"hostname":"blog.example.com","hosted_zone_id":"ZONE","clusters":{"alpha":1},"weights":{}}"#))],
        expect: &[EP, "unknown field `weights`"],
    },
    SpecCase {
        name: "endpoint: invalid hostname",
        params: &[(EP, Some(r#"{"hostname":"blog_example.com","hosted_zone_id":"ZONE","clusters":{"alpha":1}}"#))],
        expect: &[EP, "field `hostname`"],
    },
    SpecCase {
        name: "endpoint: hostname outside its zone",
        params: &[(EP, Some(r#"{"hostname":"blog.example.org","hosted_zone_id":"ZONE","clusters":{"alpha":1}}"#))],
        expect: &[EP, "field `hostname`", "not in hosted zone"],
    },
    SpecCase {
        name: "endpoint: hostname that only ends like the zone",
        params: &[(EP, Some(r#"{"hostname":"blogexample.com","hosted_zone_id":"ZONE","clusters":{"alpha":1}}"#))],
        expect: &[EP, "field `hostname`", "not in hosted zone"],
    },
    SpecCase {
        name: "endpoint: no such hosted zone",
        params: &[(EP, Some(r#"{"hostname":"blog.example.com","hosted_zone_id":"Z0NOSUCHZONE","clusters":{"alpha":1}}"#))],
        expect: &[EP, "field `hosted_zone_id`"],
    },
    SpecCase {
        name: "endpoint: malformed hosted zone id",
        params: &[(EP, Some(r#"{"hostname":"blog.example.com","hosted_zone_id":"zone-1","clusters":{"alpha":1}}"#))],
        expect: &[EP, "field `hosted_zone_id`"],
    },
    SpecCase {
        name: "endpoint: too many clusters for one forward action",
        params: &[(EP, Some(r#"{"hostname":"blog.example.com","hosted_zone_id":"ZONE","clusters":{"a":1,"b":1,"c":1,"d":1,"e":1,"f":1}}"#))],
        expect: &[EP, "field `clusters`", "at most 5"],
    },
    SpecCase {
        name: "endpoint: no clusters",
        params: &[(EP, Some(r#"{"hostname":"blog.example.com","hosted_zone_id":"ZONE","clusters":{}}"#))],
        expect: &[EP, "field `clusters`"],
    },
    SpecCase {
        name: "endpoint: cluster without a spec",
        params: &[(EP, Some(r#"{"hostname":"blog.example.com","hosted_zone_id":"ZONE","clusters":{"ghost":1}}"#))],
        expect: &[EP, "field `clusters.ghost`"],
    },
    SpecCase {
        name: "endpoint: duplicate hostname",
        params: &[
            (EP, Some(r#"{"hostname":"blog.example.com","hosted_zone_id":"ZONE","clusters":{"alpha":1}}"#)),
            ("/k3s-asg/endpoints/blog2", Some(r#"{"hostname":"blog.example.com","hosted_zone_id":"ZONE","clusters":{"alpha":1}}"#)),
        ],
        expect: &["/k3s-asg/endpoints/blog2", "field `hostname`", "also the hostname of /k3s-asg/endpoints/blog"],
    },
    SpecCase {
        name: "endpoint: no listener on its port",
        params: &[(EP, Some(r#"{"hostname":"blog.example.com","hosted_zone_id":"ZONE","clusters":{"alpha":1},"listener_port":8443}"#))],
        expect: &[EP, "field `listener_port`"],
    },
    SpecCase {
        name: "endpoint: bad CIDR",
        params: &[(EP, Some(r#"{"hostname":"blog.example.com","hosted_zone_id":"ZONE","clusters":{"alpha":1},"restricted_cidrs":["10.0.0.0/33"]}"#))],
        expect: &[EP, "field `restricted_cidrs[0]`"],
    },
    SpecCase {
        name: "endpoint: health path without '/'",
        params: &[(EP, Some(r#"{"hostname":"blog.example.com","hosted_zone_id":"ZONE","clusters":{"alpha":1},"health":{"path":"healthz"}}"#))],
        expect: &[EP, "field `health.path`"],
    },
    SpecCase { name: "endpoint: not JSON", params: &[(EP, Some("hostname=blog.example.com"))], expect: &[EP, "(document)"] },
    SpecCase { name: "region: spec missing", params: &[(RG, None)], expect: &[RG, "does not exist"] },
    SpecCase {
        name: "region: not an ALB ARN",
        params: &[(
            RG,
            Some(
                r#"{"alb_arn":"arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/x/1","listener_arns":["LISTENER"],"zone":"example.com"}"#,
            ),
        )],
        expect: &[RG, "field `alb_arn`"],
    },
    SpecCase {
        name: "region: no such ALB",
        params: &[(
            RG,
            Some(
                r#"{"alb_arn":"arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/gone/1","listener_arns":["LISTENER"],"zone":"example.com"}"#,
            ),
        )],
        expect: &["loadbalancer/app/gone/1", "field `alb_arn`"],
    },
    SpecCase {
        name: "region: listener of another ALB",
        params: &[(
            RG,
            Some(
                r#"{"alb_arn":"ALB","listener_arns":["arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/other/1/2"],"zone":"example.com"}"#,
            ),
        )],
        expect: &[RG, "field `listener_arns`"],
    },
    SpecCase {
        name: "region: no listeners",
        params: &[(RG, Some(r#"{"alb_arn":"ALB","listener_arns":[],"zone":"example.com"}"#))],
        expect: &[RG, "field `listener_arns`"],
    },
    SpecCase {
        name: "region: unknown field",
        params: &[(RG, Some(r#"{"alb_arn":"ALB","listener_arns":["LISTENER"],"zone":"example.com","rules":100}"#))],
        expect: &[RG, "unknown field `rules`"],
    },
    SpecCase {
        name: "region: invalid zone",
        params: &[(RG, Some(r#"{"alb_arn":"ALB","listener_arns":["LISTENER"],"zone":"example..com"}"#))],
        expect: &[RG, "field `zone`"],
    },
    SpecCase {
        name: "region: quota of the wrong type",
        params: &[(RG, Some(r#"{"alb_arn":"ALB","listener_arns":["LISTENER"],"zone":"example.com","rules_quota":"100"}"#))],
        expect: &[RG, "field `rules_quota`"],
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_bad_specs_exit_2_name_the_field_and_change_nothing() {
    let w = World::with_cluster("alpha").await.unwrap();
    let (alb, listener) = w.create_alb(443, 100).await.unwrap();
    let good_region = w.param(RG).await.unwrap().unwrap();
    let zone = w.zone_id().to_string();
    let fill = |json: &str| json.replace("ZONE", &zone).replace("\"ALB\"", &format!("{alb:?}")).replace("\"LISTENER\"", &format!("{listener:?}"));
    for case in SPEC_CASES {
        for (name, value) in case.params {
            match value {
                Some(v) => w.put_param(name, &fill(v)).await.unwrap(),
                None => {
                    w.ssm.delete_parameter().name(*name).send().await.unwrap();
                }
            }
        }
        w.recorder.clear();
        let mut last_apply = String::new();
        for command in ["plan", "apply"] {
            let run = w.coordinator(&[command]).await.unwrap();
            assert_eq!(run.code, 2, "{} ({command}): exit {} stderr:\n{}", case.name, run.code, run.stderr);
            let last = run.stderr.lines().last().unwrap_or_default();
            assert!(last.starts_with("k3s-asg-coordinator: error: "), "{}: {last}", case.name);
            for e in case.expect {
                assert!(last.contains(e), "{} ({command}): expected {e:?} in {last:?}", case.name);
            }
            last_apply = last.to_string();
        }
        let mutating: Vec<_> = w.recorder.calls().into_iter().filter(|c| c.is_mutating()).collect();
        assert!(mutating.is_empty(), "{}: mutating calls {mutating:?}", case.name);
        k3s_asg_testbed::reliability::held(
            "Bad input: coordinator specs",
            case.name,
            1,
            &format!("plan and apply exit 2, 0 mutating AWS calls: `{last_apply}`"),
        );
        // Back to a good state for the next case.
        for (name, _) in case.params {
            if name.starts_with("/k3s-asg/endpoints/") {
                w.ssm.delete_parameter().name(*name).send().await.unwrap();
            }
        }
        w.put_param(RG, &good_region).await.unwrap();
    }
    assert!(w.rules(&listener).await.unwrap().is_empty(), "no rule was ever created");
    assert!(SPEC_CASES.len() >= 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_bad_specs_refuse_before_the_first_write() {
    let w = World::with_clusters(&["a", "b", "c"]).await.unwrap();
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
async fn a_plan_over_quota_is_refused_but_dead_servers_records_are_collected() {
    let w = World::with_clusters(&["alpha", "bravo", "charlie"]).await.unwrap();
    w.create_alb(443, 2).await.unwrap();
    let a = w.launch("alpha", "control-plane").await.unwrap();
    let b = w.launch("alpha", "control-plane").await.unwrap();
    for s in [&a, &b] {
        ok(&w.agent(s, &["join"]).await.unwrap());
    }
    w.terminate(&b).await.unwrap();
    w.recorder.clear();
    let run = w.coordinator(&["apply"]).await.unwrap();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("quota is 2"), "{}", run.stderr);
    assert!(run.stdout.contains(&format!("- record {hostname}. A ({})", b.id, hostname = w.clusters["alpha"].hostname)), "{}", run.stdout);
    assert_eq!(run.stdout.matches("+ rule").count(), 3, "the refused rules are shown: {}", run.stdout);
    let ids: Vec<String> = w.api_records("alpha").await.unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![a.id.clone()], "the stopped server's record is collected");
    let writes: Vec<String> = w.recorder.calls().into_iter().filter(|c| c.is_mutating()).map(|c| c.operation).collect();
    assert_eq!(writes, vec!["ChangeResourceRecordSets"], "no rule written");
    k3s_asg_testbed::reliability::held(
        "Adversity",
        "the coordinator's plan exceeds the listener rules quota while a server's record is stale",
        1,
        "exit 2 with the refused plan printed; no rule written; the stopped server's API record collected",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_name_the_agent_would_refuse_is_left_out_never_flipped_into_another() {
    let (w, listener) = World::with_alb(&["alpha", "bravo"]).await.unwrap();
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
