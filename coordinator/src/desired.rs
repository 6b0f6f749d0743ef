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
    use super::in_zone;

    #[test]
    fn zone_membership_is_by_label() {
        assert!(in_zone("blog.example.com", "example.com"));
        assert!(in_zone("example.com", "example.com"));
        assert!(in_zone("a.b.example.com", "example.com"));
        assert!(!in_zone("badexample.com", "example.com"));
        assert!(!in_zone("blog.example.org", "example.com"));
    }
}
