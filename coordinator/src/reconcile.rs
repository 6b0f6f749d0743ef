//! One reconcile: read specs and what AWS holds, plan, and (for `apply`)
//! perform the plan. A create that loses a priority race re-plans.

use crate::alb::LoadBalancer;
use crate::desired::{desired, Inputs};
use crate::model::{Observed, ObservedRule, Plan, RecordChange, RuleChange};
use crate::planner::plan;
use crate::source::SpecSource;
use crate::warm::{Loaded, Warm};
use crate::Error;
use k3s_asg_aws::params::Prefix;
use std::collections::{BTreeMap, BTreeSet};

pub struct Effects {
    pub specs: Box<dyn SpecSource>,
    pub targets: Box<dyn k3s_asg_aws::elbv2::TargetGroups>,
    pub probe: Box<dyn crate::health::HostProbe>,
    pub instances: Box<dyn k3s_asg_aws::ec2::Instances>,
    pub alb: Box<dyn LoadBalancer>,
    pub zones: Box<dyn k3s_asg_aws::route53::Zones>,
}

pub struct Settings {
    pub prefix: Prefix,
    pub region: String,
    pub owner: String,
}

/// The specs and the ALB's identity: kept from an earlier reconcile when `warm` has them.
async fn load(s: &Settings, fx: &Effects, warm: &Warm) -> Result<Loaded, Error> {
    if let Some((age, loaded)) = warm.loaded() {
        tracing::debug!(age_s = age.as_secs(), "specs and load balancer as loaded earlier");
        return Ok(loaded);
    }
    let specs = fx.specs.load(&s.prefix, &s.region).await?;
    let alias = fx.alb.alias_target(&specs.region.alb_arn).await?;
    let listeners = fx.alb.listeners(&specs.region.alb_arn).await?;
    let mut zone_names = BTreeMap::new();
    for zone in specs.endpoints.values().map(|e| &e.hosted_zone_id).collect::<BTreeSet<_>>() {
        zone_names.insert(zone.clone(), fx.zones.name(zone).await?);
    }
    tracing::info!(clusters = specs.clusters.len(), endpoints = specs.endpoints.len(), "loaded specs from SSM");
    let loaded = Loaded { specs, alias, listeners, zone_names };
    warm.store(loaded.clone());
    Ok(loaded)
}

/// Fills in each rule's owner tag, reading only the tags `warm` does not know.
async fn fill_owners(rules: &mut [ObservedRule], fx: &Effects, warm: &Warm) -> Result<(), Error> {
    let arns: Vec<String> = rules.iter().map(|r| r.arn.clone()).collect();
    let (mut known, unknown) = warm.owners(&arns);
    let read = if unknown.is_empty() { BTreeMap::new() } else { fx.alb.owners(&unknown).await? };
    let learned: Vec<(String, Option<String>)> = unknown.iter().map(|a| (a.clone(), read.get(a).cloned())).collect();
    known.extend(learned.iter().cloned());
    warm.remember_owners(&arns, learned);
    for r in rules {
        r.owner = known.get(&r.arn).cloned().flatten();
    }
    Ok(())
}

/// Observes and plans; changes nothing.
pub async fn compute_plan(s: &Settings, fx: &Effects, warm: &Warm) -> Result<Plan, Error> {
    let Loaded { mut specs, alias: alb, listeners: all_listeners, zone_names } = load(s, fx, warm).await?;
    let health_notes = apply_health(&mut specs, fx).await?;
    let mut listeners = BTreeMap::new();
    for l in &specs.region.listener_arns {
        let port = all_listeners.get(l).ok_or_else(|| {
            Error::bad_input(
                "read region spec",
                s.prefix.region(&s.region),
                format!("field `listener_arns`: {l} is not a listener of {}", specs.region.alb_arn),
            )
        })?;
        listeners.insert(l.clone(), *port);
    }
    let d = desired(&Inputs {
        prefix: s.prefix.as_str(),
        zone_names: &zone_names,
        region: &s.region,
        owner: &s.owner,
        region_spec: &specs.region,
        listeners: &listeners,
        alb,
        clusters: &specs.clusters,
        endpoints: &specs.endpoints,
    })
    .map_err(|errors| Error::bad_input("check specs", s.prefix.as_str(), errors.join("; ")))?;
    let mut observed = Observed::default();
    for l in listeners.keys() {
        observed.rules.extend(fx.alb.rules(l).await?);
    }
    fill_owners(&mut observed.rules, fx, warm).await?;
    // The endpoints' zones and the clusters' API zones: all we look at or collect in.
    let zones: BTreeSet<&String> = d.records.iter().map(|r| &r.zone_id).chain(d.api_names.iter().map(|(z, _)| z)).collect();
    for z in zones {
        observed.records.extend(fx.zones.records(z).await?);
    }
    let ids = crate::planner::api_record_instances(&d, &observed.records);
    if !ids.is_empty() {
        let found = fx.instances.describe(&ids).await?;
        observed.live_instances = found.iter().filter(|i| i.is_live()).map(|i| i.id.clone()).collect();
        observed.known_instances = found.into_iter().map(|i| i.id).collect();
    }
    let mut p = plan(&d, &observed).map_err(|e| Error::failed("plan", s.prefix.region(&s.region), e.to_string()))?;
    p.notes = health_notes;
    p.left_out = specs.left_out.clone();
    Ok(p)
}

/// Probes every endpoint that has a `health` spec and rewrites its weights.
async fn apply_health(specs: &mut crate::source::Specs, fx: &Effects) -> Result<Vec<String>, Error> {
    let mut notes = Vec::new();
    let clusters = specs.clusters.clone();
    for (name, ep) in specs.endpoints.iter_mut() {
        let Some(health) = ep.health.clone() else {
            continue;
        };
        let mut passing = BTreeMap::new();
        for cluster in ep.clusters.keys() {
            let Some(tg) = clusters.get(cluster).and_then(|c| c.ingress()) else {
                continue;
            };
            let targets: Vec<(String, u16)> = fx
                .targets
                .members(&tg.arn)
                .await?
                .into_iter()
                .filter(|m| m.state == k3s_asg_aws::targets::TargetState::Healthy)
                .map(|m| (m.id, m.port))
                .collect();
            let ids: Vec<String> = targets.iter().map(|(id, _)| id.clone()).collect();
            let addresses = if ids.is_empty() { BTreeMap::new() } else { fx.instances.addresses(&ids).await? };
            let mut ok = false;
            for (id, port) in &targets {
                if let Some(ip) = addresses.get(id) {
                    if fx.probe.probe(ip, *port, &health.path, &ep.hostname, health.expect_status).await {
                        ok = true;
                        break;
                    }
                }
            }
            tracing::info!(endpoint = %name, cluster = %cluster, healthy_targets = targets.len(), passing = ok, "health probe");
            passing.insert(cluster.clone(), ok);
        }
        let (weights, note) = crate::health::effective_weights(name, &ep.clusters, &passing);
        ep.clusters = weights;
        notes.extend(note);
    }
    Ok(notes)
}

/// Bad input (exit 2) when the plan was refused (naming the region spec, which holds the quota)
/// or left inputs out (naming their parameters).
pub fn refusal(p: &Plan, s: &Settings) -> Option<Error> {
    if !p.refused.is_empty() {
        let mut why = p.refused.clone();
        why.extend(p.left_out.iter().cloned());
        return Some(Error::bad_input("check plan", s.prefix.region(&s.region), why.join("; ")));
    }
    (!p.left_out.is_empty()).then(|| Error::bad_input("read specs", format!("{}/clusters", s.prefix.as_str()), p.left_out.join("; ")))
}

/// Applies the plan; returns it. Retries the whole reconcile when a rule
/// priority was taken by a concurrent coordinator.
/// On any failure `warm` forgets what it kept, so the next reconcile reads everything.
pub async fn apply(s: &Settings, fx: &Effects, warm: &Warm) -> Result<Plan, Error> {
    let result = apply_inner(s, fx, warm).await;
    if let Err(e) = &result {
        warm.invalidate(&format!("reconcile failed: {}", e.step));
    }
    result
}

async fn apply_inner(s: &Settings, fx: &Effects, warm: &Warm) -> Result<Plan, Error> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let p = compute_plan(s, fx, warm).await?;
        match perform(&p, s, fx, warm).await {
            Err(e) if e.retry && attempts < 5 => {
                tracing::warn!(error = %e, attempt = attempts, "rule priority taken concurrently; planning again");
                let jitter = rand::random::<u64>() % 500;
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempts + jitter)).await;
            }
            Err(e) => return Err(e),
            Ok(()) => return Ok(p),
        }
    }
}

async fn perform(p: &Plan, s: &Settings, fx: &Effects, warm: &Warm) -> Result<(), Error> {
    // Reordering first (one call per listener), so new rules find their slots free.
    let (rules, records) = p.applicable();
    let mut moves: BTreeMap<&str, Vec<(String, u32)>> = BTreeMap::new();
    for c in rules {
        if let RuleChange::Reprioritize { listener, arn, to, .. } = c {
            moves.entry(listener).or_default().push((arn.clone(), *to));
        }
    }
    for pairs in moves.values() {
        fx.alb.set_priorities(pairs).await?;
    }
    for c in rules {
        match c {
            RuleChange::Create { listener, priority, spec, .. } => {
                let arn = fx.alb.create_rule(listener, *priority, spec, &s.owner).await?;
                warm.add_owners([(arn, Some(s.owner.clone()))]);
            }
            RuleChange::Modify { arn, to, .. } => fx.alb.modify_rule(arn, to).await?,
            RuleChange::Delete { arn, .. } => fx.alb.delete_rule(arn).await?,
            RuleChange::Reprioritize { .. } => {}
        }
    }
    let mut by_zone: BTreeMap<&str, Vec<RecordChange>> = BTreeMap::new();
    for c in records {
        by_zone.entry(&c.record().zone_id).or_default().push(c.clone());
    }
    for (zone, changes) in by_zone {
        fx.zones.change(zone, &changes).await?;
    }
    // Each on its own: an agent may delete the same stale record first.
    for c in &p.api_garbage {
        fx.zones.delete_each(&c.record().zone_id, std::slice::from_ref(c)).await?;
    }
    Ok(())
}
