//! One reconcile: read specs and what AWS holds, plan, and (for `apply`)
//! perform the plan. A create that loses a priority race re-plans.

use crate::alb::LoadBalancer;
use crate::desired::{desired, Inputs};
use crate::model::{Observed, Plan, RecordChange, RuleChange};
use crate::planner::plan;
use crate::source::SpecSource;
use crate::zones::Zones;
use crate::Error;
use k3s_asg_aws::params::Prefix;
use std::collections::{BTreeMap, BTreeSet};

pub struct Effects {
    pub specs: Box<dyn SpecSource>,
    pub instances: Box<dyn crate::instances::Instances>,
    pub alb: Box<dyn LoadBalancer>,
    pub zones: Box<dyn Zones>,
}

pub struct Settings {
    pub prefix: Prefix,
    pub region: String,
    pub owner: String,
}

/// Observes and plans; changes nothing.
pub async fn compute_plan(s: &Settings, fx: &Effects) -> Result<Plan, Error> {
    let specs = fx.specs.load(&s.prefix, &s.region).await?;
    let alb = fx.alb.alias_target(&specs.region.alb_arn).await?;
    let all_listeners = fx.alb.listeners(&specs.region.alb_arn).await?;
    let mut listeners = BTreeMap::new();
    for l in &specs.region.listener_arns {
        let port = all_listeners.get(l).ok_or_else(|| {
            Error::bad_input("read region spec", s.prefix.region(&s.region), format!("listener {l} is not a listener of {}", specs.region.alb_arn))
        })?;
        listeners.insert(l.clone(), *port);
    }
    let d = desired(&Inputs {
        region: &s.region,
        owner: &s.owner,
        region_spec: &specs.region,
        listeners: &listeners,
        alb,
        clusters: &specs.clusters,
        endpoints: &specs.endpoints,
    })
    .map_err(|errors| Error::bad_input("compute desired state", s.prefix.as_str(), errors.join("; ")))?;
    let mut observed = Observed::default();
    for l in listeners.keys() {
        observed.rules.extend(fx.alb.rules(l).await?);
    }
    // The endpoints' zones and the clusters' API zones: all we look at or collect in.
    let zones: BTreeSet<&String> = d.records.iter().map(|r| &r.zone_id).chain(d.api_names.iter().map(|(z, _)| z)).collect();
    for z in zones {
        observed.records.extend(fx.zones.records(z).await?);
    }
    let ids = crate::planner::api_record_instances(&d, &observed.records);
    if !ids.is_empty() {
        observed.live_instances = fx.instances.live(&ids).await?;
    }
    plan(&d, &observed).map_err(|e| Error::failed("plan", s.prefix.region(&s.region), e.to_string()))
}

/// Applies the plan; returns it. Retries the whole reconcile when a rule
/// priority was taken by a concurrent coordinator.
pub async fn apply(s: &Settings, fx: &Effects) -> Result<Plan, Error> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let p = compute_plan(s, fx).await?;
        match perform(&p, s, fx).await {
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

async fn perform(p: &Plan, s: &Settings, fx: &Effects) -> Result<(), Error> {
    for c in &p.rules {
        match c {
            RuleChange::Create { listener, priority, spec, .. } => fx.alb.create_rule(listener, *priority, spec, &s.owner).await?,
            RuleChange::Modify { arn, to, .. } => fx.alb.modify_rule(arn, to).await?,
            RuleChange::Delete { arn, .. } => fx.alb.delete_rule(arn).await?,
        }
    }
    let mut by_zone: BTreeMap<&str, Vec<RecordChange>> = BTreeMap::new();
    for c in &p.records {
        by_zone.entry(&c.record().zone_id).or_default().push(c.clone());
    }
    for (zone, changes) in by_zone {
        fx.zones.change(zone, &changes).await?;
    }
    Ok(())
}
