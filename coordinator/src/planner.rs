//! The diff: desired vs observed → the changes to make (pure). The whole plan
//! is checked against the ALB quota before anything is written: a plan over
//! quota is refused whole, except the API records of dead instances.

use crate::model::*;
use k3s_asg_aws::names::fqdn;
use std::collections::{BTreeMap, BTreeSet};

pub use k3s_asg_aws::rules::OWNER_TAG;
/// Specific hostnames take the lowest free priorities, wildcards the highest.
pub const MAX_PRIORITY: u32 = 50_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "the plan needs {needed} listener rules on the load balancer but its quota is {quota} (rules_quota in the region spec); no rule or endpoint record was changed"
    )]
    Quota { needed: usize, quota: u32 },
    #[error("listener {listener} has no free priority left")]
    NoPriority { listener: String },
}

/// The TXT record that claims `hostname` for this owner in this region.
pub fn owner_record_name(hostname: &str) -> String {
    fqdn(&format!("_k3s-asg.{hostname}"))
}

/// The claim's value: who owns the records (owner and region) and the load balancer they point
/// at, so two installations sharing a zone (even with one owner id) never take each other's.
pub fn owner_value(owner: &str, region: &str, alb: &AliasTarget) -> String {
    format!("\"heritage=k3s-asg,owner={owner},region={region},alb={}\"", fqdn(&alb.dns_name))
}

/// How a claim's value relates to this coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// Our owner, region and load balancer.
    Ours,
    /// Our owner and region, written before claims named the load balancer: ours only where the
    /// records point at our load balancer.
    Legacy,
    Foreign,
}

fn claim_of(values: &[String], owner: &str, region: &str, alb: &AliasTarget) -> Claim {
    let mut best = Claim::Foreign;
    for v in values {
        let fields: BTreeMap<&str, &str> = v.trim_matches('"').split(',').filter_map(|kv| kv.split_once('=')).collect();
        if fields.get("heritage") != Some(&"k3s-asg") || fields.get("owner") != Some(&owner) || fields.get("region") != Some(&region) {
            continue;
        }
        match fields.get("alb") {
            Some(a) if fqdn(a) == fqdn(&alb.dns_name) => return Claim::Ours,
            Some(_) => {}
            None => best = Claim::Legacy,
        }
    }
    best
}

/// Whether a record is an alias to a load balancer other than ours (never changed or deleted).
fn points_elsewhere(r: &RecordSet, alb: &AliasTarget) -> bool {
    matches!(&r.data, RecordData::Alias(a) if fqdn(&a.dns_name) != fqdn(&alb.dns_name))
}

/// `SetIdentifier`s are unique in the zone (moto deletes loosely by identifier).
pub fn alias_set_id(region: &str, hostname: &str) -> String {
    format!("{region}/{hostname}")
}

pub fn owner_set_id(region: &str, hostname: &str) -> String {
    format!("{region}/{hostname}/owner")
}

pub fn plan(d: &Desired, o: &Observed) -> Result<Plan, PlanError> {
    let mut p = Plan::default();
    // Over quota, the plan is still made and shown in full, but refused (see Plan::refused).
    let blocked = plan_rules(d, o, &mut p)?;
    plan_records(d, o, &blocked, &mut p);
    plan_api_garbage(d, o, &mut p);
    Ok(p)
}

/// Instance ids named by API records (to ask EC2 which still run).
pub fn api_record_instances(d: &Desired, records: &[RecordSet]) -> Vec<String> {
    api_records(d, records).filter_map(|r| r.set_identifier.clone()).collect::<BTreeSet<_>>().into_iter().collect()
}

/// The agents' API records: `A` records named by an instance id, under a cluster's API name, or
/// (MultiValueAnswer, as agents write them) under any other name of a cluster's API zone: a name
/// no spec uses any more (`api.hostname` renamed) is collected once its instances are gone.
fn api_records<'a>(d: &'a Desired, records: &'a [RecordSet]) -> impl Iterator<Item = &'a RecordSet> {
    records.iter().filter(move |r| {
        let named = under_api_name(d, r);
        let multivalue = matches!(r.data, RecordData::Values { multivalue: true, .. });
        r.rtype == "A"
            && matches!(r.data, RecordData::Values { .. })
            && (named || (multivalue && d.api_names.iter().any(|(z, _)| *z == r.zone_id)))
            && r.set_identifier.as_deref().is_some_and(k3s_asg_aws::names::is_instance_id)
    })
}

/// Whether the record is under a cluster's current API name.
fn under_api_name(d: &Desired, r: &RecordSet) -> bool {
    d.api_names.iter().any(|(z, n)| *z == r.zone_id && *n == r.name)
}

/// API records of instances that no longer run (DESIGN.md): removed. Under a name no spec uses
/// any more, only where EC2 here knows the instance (stopped or terminated).
fn plan_api_garbage(d: &Desired, o: &Observed, p: &mut Plan) {
    for r in api_records(d, &o.records) {
        let id = r.set_identifier.as_deref().unwrap_or_default();
        if !o.live_instances.contains(id) && (under_api_name(d, r) || o.known_instances.contains(id)) {
            p.api_garbage.push(RecordChange::Delete { purpose: format!("API record of stopped instance {id}"), record: r.clone() });
        }
    }
}

/// Returns the purposes whose rule is blocked by a rule we do not own.
fn plan_rules(d: &Desired, o: &Observed, p: &mut Plan) -> Result<BTreeSet<String>, PlanError> {
    let mut blocked = BTreeSet::new();
    let listeners: BTreeSet<&String> = d.rules.iter().map(|r| &r.listener).chain(o.rules.iter().map(|r| &r.listener)).collect();
    let mut total_after = 0usize;
    for listener in listeners {
        let observed: Vec<&ObservedRule> = o.rules.iter().filter(|r| &r.listener == listener).collect();
        let mut used: BTreeSet<u32> = observed.iter().map(|r| r.priority).collect();
        let mut matched: BTreeSet<&str> = BTreeSet::new();
        let mut creates = Vec::new();
        for want in d.rules.iter().filter(|r| &r.listener == listener) {
            let existing = observed.iter().find(|r| r.hosts.contains(&want.spec.host));
            match existing {
                Some(rule) if rule.owner.as_deref() == Some(&d.owner) => {
                    matched.insert(&rule.arn);
                    if rule.spec.as_ref() != Some(&want.spec) {
                        p.rules.push(RuleChange::Modify {
                            purpose: want.purpose.clone(),
                            listener: listener.clone(),
                            arn: rule.arn.clone(),
                            from: rule.spec.clone(),
                            to: want.spec.clone(),
                        });
                    }
                }
                Some(rule) => {
                    blocked.insert(want.purpose.clone());
                    p.conflicts.push(format!(
                        "{}: listener {listener} already has rule {} (priority {}) for host {} that k3s-asg does not own{}; left alone",
                        want.purpose,
                        rule.arn,
                        rule.priority,
                        want.spec.host,
                        rule.owner.as_ref().map(|o| format!(" (owner {o})")).unwrap_or_default()
                    ))
                }
                None => creates.push(want),
            }
        }
        let mut deletes = 0;
        for rule in &observed {
            if rule.owner.as_deref() == Some(&d.owner) && !matched.contains(rule.arn.as_str()) {
                p.rules.push(RuleChange::Delete { listener: listener.clone(), arn: rule.arn.clone(), hosts: rule.hosts.clone() });
                used.remove(&rule.priority);
                deletes += 1;
            }
        }
        // Order: an owned specific rule must not sit behind an owned wildcard.
        let owned_kept: Vec<&&ObservedRule> =
            observed.iter().filter(|r| r.owner.as_deref() == Some(&d.owner) && matched.contains(r.arn.as_str())).collect();
        if let Some(lowest_wildcard) = owned_kept.iter().filter(|r| r.hosts.iter().any(|h| h.starts_with('*'))).map(|r| r.priority).min() {
            let mut behind: Vec<&&&ObservedRule> =
                owned_kept.iter().filter(|r| r.priority > lowest_wildcard && !r.hosts.iter().any(|h| h.starts_with('*'))).collect();
            behind.sort_by_key(|r| r.priority);
            for rule in behind {
                match (1..lowest_wildcard).find(|n| !used.contains(n)) {
                    Some(to) => {
                        used.remove(&rule.priority);
                        used.insert(to);
                        p.rules.push(RuleChange::Reprioritize {
                            listener: listener.clone(),
                            arn: rule.arn.clone(),
                            host: rule.hosts.first().cloned().unwrap_or_default(),
                            from: rule.priority,
                            to,
                        });
                    }
                    None => p.conflicts.push(format!(
                        "listener {listener}: rule {} (host {}) sits behind a wildcard and no free priority is left below {lowest_wildcard}",
                        rule.arn,
                        rule.hosts.join(",")
                    )),
                }
            }
        }
        // Specific hostnames first (ascending from 1), wildcards from the top down.
        creates.sort_by_key(|r| (!r.specific, r.spec.host.clone()));
        for want in creates {
            let priority =
                if want.specific { (1..MAX_PRIORITY).find(|n| !used.contains(n)) } else { (1..=MAX_PRIORITY).rev().find(|n| !used.contains(n)) }
                    .ok_or_else(|| PlanError::NoPriority { listener: listener.clone() })?;
            used.insert(priority);
            p.rules.push(RuleChange::Create { purpose: want.purpose.clone(), listener: listener.clone(), priority, spec: want.spec.clone() });
        }
        total_after +=
            observed.len() - deletes + p.rules.iter().filter(|c| matches!(c, RuleChange::Create { listener: l, .. } if l == listener)).count();
    }
    if total_after > d.rules_quota as usize {
        p.refused.push(PlanError::Quota { needed: total_after, quota: d.rules_quota }.to_string());
    }
    Ok(blocked)
}

fn plan_records(d: &Desired, o: &Observed, blocked: &BTreeSet<String>, p: &mut Plan) {
    let find = |zone: &str, name: &str, rtype: &str, set_id: &str| {
        o.records.iter().find(|r| r.zone_id == zone && r.name == name && r.rtype == rtype && r.set_identifier.as_deref() == Some(set_id))
    };
    let value = owner_value(&d.owner, &d.region, &d.alb);
    let claim_kind = |r: &RecordSet| match &r.data {
        RecordData::Txt { values, .. } => claim_of(values, &d.owner, &d.region, &d.alb),
        _ => Claim::Foreign,
    };
    let mut wanted: BTreeMap<(String, String), &DesiredEndpointRecord> = BTreeMap::new();
    for want in &d.records {
        wanted.insert((want.zone_id.clone(), fqdn(&want.hostname)), want);
        if blocked.contains(&want.purpose) {
            // No rule of ours serves it here: publishing the record would send traffic nowhere.
            continue;
        }
        let name = fqdn(&want.hostname);
        let owner_name = owner_record_name(&want.hostname);
        let owner_id = owner_set_id(&d.region, &want.hostname);
        let alias_id = alias_set_id(&d.region, &want.hostname);
        let claim = find(&want.zone_id, &owner_name, "TXT", &owner_id);
        let alias = find(&want.zone_id, &name, "A", &alias_id);
        let desired_alias = RecordSet {
            zone_id: want.zone_id.clone(),
            name: name.clone(),
            rtype: "A".into(),
            set_identifier: Some(alias_id.clone()),
            region: Some(d.region.clone()),
            data: RecordData::Alias(d.alb.clone()),
        };
        let desired_claim = RecordSet {
            zone_id: want.zone_id.clone(),
            name: owner_name.clone(),
            rtype: "TXT".into(),
            set_identifier: Some(owner_id.clone()),
            region: Some(d.region.clone()),
            data: RecordData::Txt { ttl: 300, values: vec![value.clone()] },
        };
        let kind = claim.map(claim_kind);
        // Whatever the claim says, an alias to another load balancer is another installation's.
        if let Some(a) = alias.filter(|a| points_elsewhere(a, &d.alb)) {
            let target = if let RecordData::Alias(t) = &a.data { t.dns_name.as_str() } else { "?" };
            p.conflicts.push(format!(
                "{}: record {} A (SetIdentifier {alias_id}) points at another load balancer ({target}); left alone",
                want.purpose, a.name
            ));
            continue;
        }
        match kind {
            Some(Claim::Ours) => {}
            // Adopted: the claim now names our load balancer.
            Some(Claim::Legacy) => p.records.push(RecordChange::Upsert { purpose: want.purpose.clone(), record: desired_claim }),
            Some(Claim::Foreign) => {
                p.conflicts.push(format!("{}: claim record {owner_name} belongs to another owner; left alone", want.purpose));
                continue;
            }
            None => {
                if let Some(a) = alias {
                    p.conflicts.push(format!(
                        "{}: record {} A (SetIdentifier {}) exists without this owner's claim; left alone",
                        want.purpose, a.name, alias_id
                    ));
                    continue;
                }
                p.records.push(RecordChange::Upsert { purpose: want.purpose.clone(), record: desired_claim });
            }
        }
        if alias != Some(&desired_alias) {
            p.records.push(RecordChange::Upsert { purpose: want.purpose.clone(), record: desired_alias });
        }
    }
    // Garbage: records we claimed for hostnames no endpoint wants any more, only where they
    // point at our load balancer (a legacy claim without its alias is left: it may be another
    // installation's).
    for claim in o.records.iter().filter(|r| r.rtype == "TXT" && r.region.as_deref() == Some(&d.region)) {
        let kind = claim_kind(claim);
        if kind == Claim::Foreign {
            continue;
        }
        let Some(hostname) = claim.name.strip_prefix("_k3s-asg.").map(|h| h.trim_end_matches('.').to_string()) else {
            continue;
        };
        if claim.set_identifier.as_deref() != Some(&owner_set_id(&d.region, &hostname)) {
            continue;
        }
        if wanted.contains_key(&(claim.zone_id.clone(), fqdn(&hostname))) {
            continue;
        }
        let purpose = format!("gone endpoint {hostname}");
        let alias = find(&claim.zone_id, &fqdn(&hostname), "A", &alias_set_id(&d.region, &hostname));
        match (alias, kind) {
            (Some(a), _) if points_elsewhere(a, &d.alb) => continue,
            (None, Claim::Legacy) => continue,
            (Some(a), _) => p.records.push(RecordChange::Delete { purpose: purpose.clone(), record: a.clone() }),
            (None, _) => {}
        }
        p.records.push(RecordChange::Delete { purpose, record: claim.clone() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: &str = "arn:aws:elasticloadbalancing:us-east-1:1:listener/app/shared/1/443";
    const TG_A: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/alpha/1";
    const TG_B: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/bravo/2";

    fn alb() -> AliasTarget {
        AliasTarget { dns_name: "shared-1.us-east-1.elb.amazonaws.com".into(), hosted_zone_id: "Z35SXDOTRQ7X7K".into() }
    }

    fn spec(host: &str, forward: &[(&str, u32)]) -> RuleSpec {
        RuleSpec { host: host.into(), source_ips: vec![], forward: forward.iter().map(|(a, w)| (a.to_string(), *w)).collect(), stickiness_s: 0 }
    }

    fn desired(rules: Vec<DesiredRule>, records: Vec<DesiredEndpointRecord>) -> Desired {
        Desired {
            region: "us-east-1".into(),
            owner: "me".into(),
            rules_quota: 100,
            alb: alb(),
            rules,
            records,
            api_names: vec![("Z1".into(), "api.alpha.example.com.".into())],
        }
    }

    fn want(purpose: &str, specific: bool, s: RuleSpec) -> DesiredRule {
        DesiredRule { purpose: purpose.into(), listener: L.into(), specific, spec: s }
    }

    fn seen(arn: &str, priority: u32, s: RuleSpec, owner: Option<&str>) -> ObservedRule {
        ObservedRule { listener: L.into(), arn: arn.into(), priority, hosts: vec![s.host.clone()], spec: Some(s), owner: owner.map(str::to_string) }
    }

    #[test]
    fn creates_specific_low_and_wildcards_high() {
        let d = desired(
            vec![
                want("cluster alpha", false, spec("*--alpha.us-east-1.example.com", &[(TG_A, 1)])),
                want("endpoint blog", true, spec("blog.example.com", &[(TG_A, 1), (TG_B, 1)])),
            ],
            vec![],
        );
        let o = Observed { rules: vec![seen("foreign", 1, spec("x.example.com", &[(TG_A, 1)]), None)], ..Default::default() };
        let p = plan(&d, &o).unwrap();
        let prios: Vec<(String, u32)> = p
            .rules
            .iter()
            .map(|c| match c {
                RuleChange::Create { spec, priority, .. } => (spec.host.clone(), *priority),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(prios, vec![("blog.example.com".into(), 2), ("*--alpha.us-east-1.example.com".into(), MAX_PRIORITY)]);
    }

    #[test]
    fn converged_plan_is_empty_and_owned_rules_change_in_place() {
        let s = spec("blog.example.com", &[(TG_A, 1), (TG_B, 1)]);
        let d = desired(vec![want("endpoint blog", true, s.clone())], vec![]);
        let o = Observed { rules: vec![seen("r1", 7, s.clone(), Some("me"))], ..Default::default() };
        assert!(plan(&d, &o).unwrap().is_empty());
        // Weight change: modify in place, keep the priority.
        let s2 = spec("blog.example.com", &[(TG_A, 1), (TG_B, 0)]);
        let d = desired(vec![want("endpoint blog", true, s2.clone())], vec![]);
        let p = plan(&d, &o).unwrap();
        assert!(matches!(&p.rules[..], [RuleChange::Modify { arn, to, .. }] if arn == "r1" && *to == s2));
    }

    #[test]
    fn never_touches_what_it_does_not_own() {
        let s = spec("blog.example.com", &[(TG_A, 1)]);
        let d = desired(vec![want("endpoint blog", true, s.clone())], vec![]);
        let o = Observed {
            rules: vec![
                seen("theirs", 3, spec("blog.example.com", &[(TG_B, 1)]), Some("someone-else")),
                seen("manual", 4, spec("old.example.com", &[(TG_B, 1)]), None),
            ],
            ..Default::default()
        };
        let mut d = d;
        d.records.push(DesiredEndpointRecord { purpose: "endpoint blog".into(), zone_id: "Z1".into(), hostname: "blog.example.com".into() });
        let p = plan(&d, &o).unwrap();
        assert!(p.rules.is_empty(), "{:?}", p.rules);
        assert!(p.records.is_empty(), "no record for an endpoint whose rule is blocked: {:?}", p.records);
        assert_eq!(p.conflicts.len(), 1);
        assert!(p.conflicts[0].contains("theirs") && p.conflicts[0].contains("someone-else"));
    }

    #[test]
    fn reorders_only_when_a_specific_rule_sits_behind_a_wildcard() {
        let wild = spec("*--alpha.us-east-1.example.com", &[(TG_A, 1)]);
        let blog = spec("blog.example.com", &[(TG_A, 1)]);
        let d = desired(vec![want("cluster alpha", false, wild.clone()), want("endpoint blog", true, blog.clone())], vec![]);
        // In order already: nothing.
        let o = Observed { rules: vec![seen("w", 50, wild.clone(), Some("me")), seen("b", 10, blog.clone(), Some("me"))], ..Default::default() };
        assert!(plan(&d, &o).unwrap().is_empty());
        // Behind the wildcard: moved to the lowest free slot, the wildcard keeps its place.
        let o = Observed {
            rules: vec![seen("w", 5, wild, Some("me")), seen("b", 10, blog, Some("me")), seen("f", 1, spec("x.example.com", &[(TG_B, 1)]), None)],
            ..Default::default()
        };
        let p = plan(&d, &o).unwrap();
        assert!(matches!(&p.rules[..], [RuleChange::Reprioritize { arn, from: 10, to: 2, .. }] if arn == "b"), "{:?}", p.rules);
    }

    #[test]
    fn deletes_owned_rules_nobody_wants() {
        let d = desired(vec![], vec![]);
        let o = Observed { rules: vec![seen("old", 9, spec("gone.example.com", &[(TG_A, 1)]), Some("me"))], ..Default::default() };
        let p = plan(&d, &o).unwrap();
        assert!(matches!(&p.rules[..], [RuleChange::Delete { arn, .. }] if arn == "old"));
    }

    #[test]
    fn quota_is_checked_before_anything() {
        let mut d =
            desired((0..5).map(|i| want(&format!("endpoint e{i}"), true, spec(&format!("e{i}.example.com"), &[(TG_A, 1)]))).collect(), vec![]);
        d.rules_quota = 4;
        let o = Observed::default();
        let refused = plan(&d, &o).unwrap();
        assert_eq!(refused.refused, vec![PlanError::Quota { needed: 5, quota: 4 }.to_string()]);
        assert_eq!(refused.rules.len(), 5, "the refused plan is still shown whole");
        assert!(refused.applicable().0.is_empty() && refused.applicable().1.is_empty());
        d.rules_quota = 5;
        let p = plan(&d, &o).unwrap();
        assert!(p.refused.is_empty());
        assert_eq!(p.applicable().0.len(), 5);
    }

    fn rec(name: &str, rtype: &str, set_id: &str, data: RecordData) -> RecordSet {
        RecordSet {
            zone_id: "Z1".into(),
            name: name.into(),
            rtype: rtype.into(),
            set_identifier: Some(set_id.into()),
            region: Some("us-east-1".into()),
            data,
        }
    }

    #[test]
    fn records_claimed_created_and_garbage_collected() {
        let ep = DesiredEndpointRecord { purpose: "endpoint blog".into(), zone_id: "Z1".into(), hostname: "blog.example.com".into() };
        let d = desired(vec![], vec![ep]);
        let p = plan(&d, &Observed::default()).unwrap();
        assert_eq!(p.records.len(), 2, "claim TXT and alias A: {:?}", p.records);
        assert_eq!(p.records[0].record().rtype, "TXT");
        assert_eq!(p.records[1].record().data, RecordData::Alias(alb()));

        // Converged.
        let observed: Vec<RecordSet> = p.records.iter().map(|c| c.record().clone()).collect();
        let o = Observed { rules: vec![], records: observed.clone(), ..Default::default() };
        assert!(plan(&d, &o).unwrap().is_empty());

        // Endpoint gone: both of ours deleted, A first.
        let gone = desired(vec![], vec![]);
        let p = plan(&gone, &o).unwrap();
        assert!(
            matches!(&p.records[..], [RecordChange::Delete { record: a, .. }, RecordChange::Delete { record: t, .. }] if a.rtype == "A" && t.rtype == "TXT")
        );
    }

    #[test]
    fn api_records_of_dead_instances_are_collected() {
        let d = desired(vec![], vec![]);
        let api =
            |id: &str| rec("api.alpha.example.com.", "A", id, RecordData::Values { ttl: 30, values: vec!["127.0.0.1".into()], multivalue: true });
        let manual = api("manual");
        // A name no spec uses any more (api.hostname renamed), in the API zone: collected too once
        // its instance is gone; a plain (not MultiValueAnswer) record there is nobody's API record.
        let old_name =
            rec("api-old.alpha.example.com.", "A", "i-0000000000000000c", RecordData::Values { ttl: 30, values: vec![], multivalue: true });
        let plain = rec("www.example.com.", "A", "i-0000000000000000d", RecordData::Values { ttl: 30, values: vec![], multivalue: false });
        let records = vec![api("i-0000000000000000a"), api("i-0000000000000000b"), manual, old_name, plain];
        assert_eq!(
            api_record_instances(&d, &records),
            ["i-0000000000000000a", "i-0000000000000000b", "i-0000000000000000c"].map(String::from).to_vec()
        );
        let live: std::collections::BTreeSet<String> = ["i-0000000000000000a".to_string()].into();
        let o = Observed { rules: vec![], records: records.clone(), live_instances: live.clone(), known_instances: live.clone() };
        let p = plan(&d, &o).unwrap();
        let gone: Vec<&str> = p.api_garbage.iter().filter_map(|c| c.record().set_identifier.as_deref()).collect();
        assert_eq!(gone, vec!["i-0000000000000000b"], "under another name, an instance EC2 here does not know is left (another region's)");
        let known = ["i-0000000000000000a", "i-0000000000000000c"].map(String::from).into();
        let o = Observed { rules: vec![], records, live_instances: live, known_instances: known };
        let p = plan(&d, &o).unwrap();
        let gone: Vec<&str> = p.api_garbage.iter().filter_map(|c| c.record().set_identifier.as_deref()).collect();
        assert_eq!(gone, vec!["i-0000000000000000b", "i-0000000000000000c"]);
        assert!(p.records.is_empty());
    }

    #[test]
    fn unclaimed_records_are_conflicts() {
        let ep = DesiredEndpointRecord { purpose: "endpoint blog".into(), zone_id: "Z1".into(), hostname: "blog.example.com".into() };
        let d = desired(vec![], vec![ep]);
        let foreign = rec("blog.example.com.", "A", "us-east-1/blog.example.com", RecordData::Alias(alb()));
        let p = plan(&d, &Observed { rules: vec![], records: vec![foreign.clone()], ..Default::default() }).unwrap();
        assert!(p.records.is_empty());
        assert_eq!(p.conflicts.len(), 1);
        // Someone else's claim is not garbage of ours either.
        let theirs = rec(
            "_k3s-asg.old.example.com.",
            "TXT",
            "us-east-1/old.example.com/owner",
            RecordData::Txt { ttl: 300, values: vec![owner_value("other", "us-east-1", &alb())] },
        );
        let p = plan(&desired(vec![], vec![]), &Observed { rules: vec![], records: vec![theirs, foreign], ..Default::default() }).unwrap();
        assert!(p.records.is_empty());
    }

    #[test]
    fn installations_sharing_a_zone_never_take_each_others_records() {
        let other_alb = AliasTarget { dns_name: "staging-1.us-east-1.elb.amazonaws.com.".into(), hosted_zone_id: "ZALB".into() };
        let staging_claim = rec(
            "_k3s-asg.staging.example.com.",
            "TXT",
            "us-east-1/staging.example.com/owner",
            RecordData::Txt { ttl: 300, values: vec![owner_value("me", "us-east-1", &other_alb)] },
        );
        let staging_alias = rec("staging.example.com.", "A", "us-east-1/staging.example.com", RecordData::Alias(other_alb.clone()));
        // Same owner and region, another load balancer: not garbage of ours.
        let o = Observed { rules: vec![], records: vec![staging_claim.clone(), staging_alias.clone()], ..Default::default() };
        assert!(plan(&desired(vec![], vec![]), &o).unwrap().records.is_empty());
        // A legacy claim (no load balancer named) is ours only where the alias points at ours.
        let legacy = |host: &str| {
            rec(
                &format!("_k3s-asg.{host}."),
                "TXT",
                &format!("us-east-1/{host}/owner"),
                RecordData::Txt { ttl: 300, values: vec!["\"heritage=k3s-asg,owner=me,region=us-east-1\"".into()] },
            )
        };
        let theirs = rec("staging.example.com.", "A", "us-east-1/staging.example.com", RecordData::Alias(other_alb.clone()));
        let o = Observed { rules: vec![], records: vec![legacy("staging.example.com"), theirs], ..Default::default() };
        assert!(plan(&desired(vec![], vec![]), &o).unwrap().records.is_empty(), "a legacy claim on another load balancer's alias");
        let o = Observed { rules: vec![], records: vec![legacy("staging.example.com")], ..Default::default() };
        assert!(plan(&desired(vec![], vec![]), &o).unwrap().records.is_empty(), "a legacy claim without its alias is left");
        let ours = rec("old.example.com.", "A", "us-east-1/old.example.com", RecordData::Alias(alb()));
        let o = Observed { rules: vec![], records: vec![legacy("old.example.com"), ours], ..Default::default() };
        assert_eq!(plan(&desired(vec![], vec![]), &o).unwrap().records.len(), 2, "a legacy claim on our alias is collected");
        // A wanted hostname: a legacy claim on our alias is adopted (the claim rewritten), an alias
        // to another load balancer is a conflict whatever the claim says.
        let ep = DesiredEndpointRecord { purpose: "endpoint blog".into(), zone_id: "Z1".into(), hostname: "blog.example.com".into() };
        let d = desired(vec![], vec![ep]);
        let blog = rec("blog.example.com.", "A", "us-east-1/blog.example.com", RecordData::Alias(alb()));
        let p = plan(&d, &Observed { rules: vec![], records: vec![legacy("blog.example.com"), blog], ..Default::default() }).unwrap();
        assert!(matches!(&p.records[..], [RecordChange::Upsert { record, .. }] if record.rtype == "TXT" && record.values()[0].contains(",alb=")));
        let blog_elsewhere = rec("blog.example.com.", "A", "us-east-1/blog.example.com", RecordData::Alias(other_alb));
        let mine = rec(
            "_k3s-asg.blog.example.com.",
            "TXT",
            "us-east-1/blog.example.com/owner",
            RecordData::Txt { ttl: 300, values: vec![owner_value("me", "us-east-1", &alb())] },
        );
        let p = plan(&d, &Observed { rules: vec![], records: vec![mine, blog_elsewhere], ..Default::default() }).unwrap();
        assert!(p.records.is_empty() && p.conflicts[0].contains("another load balancer"), "{p:?}");
    }
}
