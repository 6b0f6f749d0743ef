//! The desired state of a region, computed from the specs in SSM (pure).

use crate::model::{AliasTarget, Desired, DesiredEndpointRecord, DesiredRule, RuleSpec};
use k3s_asg_aws::spec::{ClusterSpec, EndpointSpec, RegionSpec};
use std::collections::BTreeMap;

/// The per-cluster wildcard host: `*--{cluster}.{region}.{zone}`.
pub fn cluster_host(cluster: &str, region: &str, zone: &str) -> String {
    format!("*--{cluster}.{region}.{}", zone.trim_end_matches('.')).to_ascii_lowercase()
}

pub struct Inputs<'a> {
    /// The SSM prefix, to name the parameter at fault.
    pub prefix: &'a str,
    pub region: &'a str,
    pub owner: &'a str,
    pub region_spec: &'a RegionSpec,
    /// listener ARN → port
    pub listeners: &'a BTreeMap<String, u16>,
    pub alb: AliasTarget,
    pub clusters: &'a BTreeMap<String, ClusterSpec>,
    pub endpoints: &'a BTreeMap<String, EndpointSpec>,
    /// hosted zone id → its domain (None: no such zone).
    pub zone_names: &'a BTreeMap<String, Option<String>>,
}

/// Whether `host` (lower case, no trailing dot) lies in the zone `domain`.
pub fn in_zone(host: &str, domain: &str) -> bool {
    host == domain || host.strip_suffix(domain).is_some_and(|rest| rest.ends_with('.'))
}

/// Builds the desired rules and records; each error names the parameter and field at fault.
pub fn desired(i: &Inputs<'_>) -> Result<Desired, Vec<String>> {
    let mut errors = Vec::new();
    let mut rules = Vec::new();
    let mut records = Vec::new();
    let api_names = i.clusters.values().map(|c| (c.api.hosted_zone_id.clone(), k3s_asg_aws::names::fqdn(&c.api.hostname))).collect();
    for (name, spec) in i.clusters {
        let Some(ingress) = spec.ingress() else {
            continue;
        };
        for listener in &i.region_spec.listener_arns {
            rules.push(DesiredRule {
                purpose: format!("cluster {name}"),
                listener: listener.clone(),
                specific: false,
                spec: RuleSpec {
                    host: cluster_host(name, i.region, &i.region_spec.zone),
                    source_ips: vec![],
                    forward: vec![(ingress.arn.clone(), 1)],
                    stickiness_s: 0,
                },
            });
        }
    }
    let mut hostnames: BTreeMap<String, &str> = BTreeMap::new();
    for (name, ep) in i.endpoints {
        let param = format!("{}/endpoints/{name}", i.prefix);
        let mut bad = |field: &str, problem: String| errors.push(format!("{param} field `{field}`: {problem}"));
        let host = ep.hostname.trim_end_matches('.').to_ascii_lowercase();
        if let Some(other) = hostnames.insert(host.clone(), name) {
            bad("hostname", format!("{host} is also the hostname of {}/endpoints/{other}", i.prefix));
            continue;
        }
        match i.zone_names.get(&ep.hosted_zone_id) {
            Some(Some(domain)) if !in_zone(&host, domain) => {
                bad("hostname", format!("{host} is not in hosted zone {} ({domain})", ep.hosted_zone_id));
                continue;
            }
            Some(None) => {
                bad("hosted_zone_id", format!("no hosted zone {} in this account", ep.hosted_zone_id));
                continue;
            }
            _ => {}
        }
        let mut forward = Vec::new();
        for (cluster, weight) in &ep.clusters {
            match i.clusters.get(cluster).and_then(|c| c.ingress()) {
                Some(tg) => forward.push((tg.arn.clone(), *weight)),
                None => {
                    bad(&format!("clusters.{cluster}"), format!("cluster {cluster} has no spec in this region or no target group marked ingress"))
                }
            }
        }
        if forward.is_empty() {
            continue;
        }
        let listeners: Vec<&String> = i.listeners.iter().filter(|(_, port)| **port == ep.listener_port).map(|(arn, _)| arn).collect();
        if listeners.is_empty() {
            bad("listener_port", format!("no listener of the region spec on port {}", ep.listener_port));
            continue;
        }
        for listener in listeners {
            rules.push(DesiredRule {
                purpose: format!("endpoint {name}"),
                listener: listener.clone(),
                specific: true,
                spec: RuleSpec {
                    host: host.clone(),
                    source_ips: ep.restricted_cidrs.clone(),
                    forward: forward.clone(),
                    stickiness_s: ep.stickiness_s,
                },
            });
        }
        records.push(DesiredEndpointRecord { purpose: format!("endpoint {name}"), zone_id: ep.hosted_zone_id.clone(), hostname: host });
    }
    if errors.is_empty() {
        Ok(Desired {
            region: i.region.to_string(),
            owner: i.owner.to_string(),
            rules_quota: i.region_spec.rules_quota,
            alb: i.alb.clone(),
            rules,
            records,
            api_names,
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L443: &str = "arn:aws:elasticloadbalancing:us-east-1:1:listener/app/shared/1/443";
    const L80: &str = "arn:aws:elasticloadbalancing:us-east-1:1:listener/app/shared/1/80";

    fn tg(name: &str) -> String {
        format!("arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/{name}/1")
    }

    fn cluster(name: &str, ingress: bool) -> ClusterSpec {
        let json = serde_json::json!({
            "api": { "hostname": format!("api.{name}.us-east-1.example.com"), "hosted_zone_id": "ZAPI" },
            "target_groups": [ { "arn": tg(name), "port": 80, "ingress": ingress } ]
        });
        ClusterSpec::parse(&format!("/k3s-asg/clusters/{name}/config"), &json.to_string()).unwrap()
    }

    fn endpoint(json: serde_json::Value) -> EndpointSpec {
        EndpointSpec::parse("/k3s-asg/endpoints/x", &json.to_string()).unwrap()
    }

    struct Fixture {
        region: RegionSpec,
        listeners: BTreeMap<String, u16>,
        clusters: BTreeMap<String, ClusterSpec>,
        endpoints: BTreeMap<String, EndpointSpec>,
        zones: BTreeMap<String, Option<String>>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let region = RegionSpec::parse(
                "/k3s-asg/regions/us-east-1",
                &serde_json::json!({ "alb_arn": "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/shared/1",
                                     "listener_arns": [L443, L80], "zone": "example.com" })
                .to_string(),
            )
            .unwrap();
            Fixture {
                region,
                listeners: [(L443.to_string(), 443), (L80.to_string(), 80)].into(),
                clusters: [("alpha".to_string(), cluster("alpha", true)), ("bravo".to_string(), cluster("bravo", true))].into(),
                endpoints: BTreeMap::new(),
                zones: [("ZEP".to_string(), Some("example.com".to_string())), ("ZNONE".to_string(), None)].into(),
            }
        }

        fn desired(&self) -> Result<Desired, Vec<String>> {
            desired(&Inputs {
                prefix: "/k3s-asg",
                region: "us-east-1",
                owner: "k3s-asg",
                region_spec: &self.region,
                listeners: &self.listeners,
                alb: AliasTarget { dns_name: "shared-1.us-east-1.elb.amazonaws.com.".into(), hosted_zone_id: "ZALB".into() },
                clusters: &self.clusters,
                endpoints: &self.endpoints,
                zone_names: &self.zones,
            })
        }
    }

    #[test]
    fn a_wildcard_rule_per_cluster_and_listener() {
        let mut f = Fixture::new();
        f.clusters.insert("charlie".into(), cluster("charlie", false));
        let d = f.desired().unwrap();
        let hosts: Vec<(&str, &str, bool)> = d.rules.iter().map(|r| (r.listener.as_str(), r.spec.host.as_str(), r.specific)).collect();
        assert_eq!(
            hosts,
            vec![
                (L443, "*--alpha.us-east-1.example.com", false),
                (L80, "*--alpha.us-east-1.example.com", false),
                (L443, "*--bravo.us-east-1.example.com", false),
                (L80, "*--bravo.us-east-1.example.com", false),
            ],
            "a cluster without an ingress target group gets no rule"
        );
        assert_eq!(d.rules[0].spec.forward, vec![(tg("alpha"), 1)]);
        assert!(d.records.is_empty());
        assert_eq!(d.api_names.len(), 3, "every cluster's API name is collected, ingress or not");
        assert!(d.api_names.contains(&("ZAPI".to_string(), "api.charlie.us-east-1.example.com.".to_string())));
    }

    #[test]
    fn an_endpoint_forwards_by_weight_on_its_listener_port() {
        let mut f = Fixture::new();
        f.endpoints.insert(
            "blog".into(),
            endpoint(serde_json::json!({ "hostname": "blog.example.com.", "hosted_zone_id": "ZEP", "clusters": { "alpha": 1, "bravo": 3 },
                                          "listener_port": 443, "restricted_cidrs": ["10.0.0.0/8"], "stickiness_s": 60 })),
        );
        let d = f.desired().unwrap();
        let ep: Vec<&DesiredRule> = d.rules.iter().filter(|r| r.specific).collect();
        assert_eq!(ep.len(), 1, "only the 443 listener");
        assert_eq!(
            ep[0],
            &DesiredRule {
                purpose: "endpoint blog".into(),
                listener: L443.into(),
                specific: true,
                spec: RuleSpec {
                    host: "blog.example.com".into(),
                    source_ips: vec!["10.0.0.0/8".into()],
                    forward: vec![(tg("alpha"), 1), (tg("bravo"), 3)],
                    stickiness_s: 60
                },
            }
        );
        assert_eq!(
            d.records,
            vec![DesiredEndpointRecord { purpose: "endpoint blog".into(), zone_id: "ZEP".into(), hostname: "blog.example.com".into() }]
        );
    }

    #[test]
    fn every_bad_endpoint_is_named_with_its_field() {
        let mut f = Fixture::new();
        let ep = |host: &str, zone: &str, clusters: serde_json::Value, port: u16| {
            endpoint(serde_json::json!({ "hostname": host, "hosted_zone_id": zone, "clusters": clusters, "listener_port": port }))
        };
        f.endpoints.insert("a-dup".into(), ep("dup.example.com", "ZEP", serde_json::json!({ "alpha": 1 }), 443));
        f.endpoints.insert("b-dup".into(), ep("dup.example.com.", "ZEP", serde_json::json!({ "alpha": 1 }), 443));
        f.endpoints.insert("c-outside".into(), ep("blog.example.org", "ZEP", serde_json::json!({ "alpha": 1 }), 443));
        f.endpoints.insert("d-nozone".into(), ep("x.example.com", "ZNONE", serde_json::json!({ "alpha": 1 }), 443));
        f.endpoints.insert("e-nocluster".into(), ep("y.example.com", "ZEP", serde_json::json!({ "zulu": 1 }), 443));
        f.endpoints.insert("f-noport".into(), ep("z.example.com", "ZEP", serde_json::json!({ "alpha": 1 }), 8443));
        let errors = f.desired().unwrap_err();
        assert_eq!(
            errors,
            vec![
                "/k3s-asg/endpoints/b-dup field `hostname`: dup.example.com is also the hostname of /k3s-asg/endpoints/a-dup",
                "/k3s-asg/endpoints/c-outside field `hostname`: blog.example.org is not in hosted zone ZEP (example.com)",
                "/k3s-asg/endpoints/d-nozone field `hosted_zone_id`: no hosted zone ZNONE in this account",
                "/k3s-asg/endpoints/e-nocluster field `clusters.zulu`: cluster zulu has no spec in this region or no target group marked ingress",
                "/k3s-asg/endpoints/f-noport field `listener_port`: no listener of the region spec on port 8443",
            ]
        );
    }

    #[test]
    fn zone_membership_is_by_label() {
        assert!(in_zone("blog.example.com", "example.com"));
        assert!(in_zone("example.com", "example.com"));
        assert!(in_zone("a.b.example.com", "example.com"));
        assert!(!in_zone("badexample.com", "example.com"));
        assert!(!in_zone("blog.example.org", "example.com"));
    }
}
