//! ELBv2, spoken to in this one place of the workspace, on one client
//! ([`Elbv2`]): target groups ([`TargetGroups`]: members and their health,
//! registration, the deregistration delay), used by both programs, and the
//! shared ALB's listeners and rules ([`LoadBalancer`]), used by the
//! coordinator, over the plain values of `targets` and `rules`.

use crate::error::Error;
use crate::names::fqdn;
use crate::records::AliasTarget;
use crate::rules::{ObservedRule, RuleSpec, OWNER_TAG};
use crate::targets::{Member, TargetState};
use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, ForwardActionConfig, HostHeaderConditionConfig, RuleCondition, SourceIpConditionConfig, Tag, TargetDescription,
    TargetGroupStickinessConfig, TargetGroupTuple,
};
use std::collections::BTreeMap;

/// Target-group membership: who is registered, registering and deregistering an instance.
#[async_trait]
pub trait TargetGroups: Send + Sync {
    /// Every target of the group.
    async fn members(&self, arn: &str) -> Result<Vec<Member>, Error>;
    async fn register(&self, arn: &str, instance_id: &str, port: u16) -> Result<(), Error>;
    async fn deregister(&self, arn: &str, instance_id: &str, port: u16) -> Result<(), Error>;
    /// The group's `deregistration_delay.timeout_seconds` (ELBv2's default, 300, when unset).
    async fn deregistration_delay(&self, arn: &str) -> Result<u64, Error>;
}

/// The shared ALB's listeners and rules, as the coordinator reads and changes them.
#[async_trait]
pub trait LoadBalancer: Send + Sync {
    /// The ALB's DNS name and hosted zone, for alias records (bad input when there is no such ALB).
    async fn alias_target(&self, alb_arn: &str) -> Result<AliasTarget, Error>;
    /// listener ARN → port, for the ALB's listeners.
    async fn listeners(&self, alb_arn: &str) -> Result<BTreeMap<String, u16>, Error>;
    /// Non-default rules of a listener (owner left unset: see `owners`).
    async fn rules(&self, listener: &str) -> Result<Vec<ObservedRule>, Error>;
    /// The `k3s-asg:owner` tag of each rule ARN that has one.
    async fn owners(&self, arns: &[String]) -> Result<BTreeMap<String, String>, Error>;
    /// Creates a rule tagged with `owner`; returns its ARN.
    async fn create_rule(&self, listener: &str, priority: u32, spec: &RuleSpec, owner: &str) -> Result<String, Error>;
    async fn modify_rule(&self, arn: &str, spec: &RuleSpec) -> Result<(), Error>;
    async fn delete_rule(&self, arn: &str) -> Result<(), Error>;
    /// `SetRulePriorities` for (rule ARN, priority) pairs.
    async fn set_priorities(&self, priorities: &[(String, u32)]) -> Result<(), Error>;
}

/// The real ELBv2 client of both programs.
pub struct Elbv2(pub aws_sdk_elasticloadbalancingv2::Client);

impl Elbv2 {
    pub fn new(sdk: &aws_config::SdkConfig) -> Elbv2 {
        Elbv2(aws_sdk_elasticloadbalancingv2::Client::new(sdk))
    }
}

fn target(instance_id: &str, port: u16) -> TargetDescription {
    TargetDescription::builder().id(instance_id).port(port as i32).build()
}

#[async_trait]
impl TargetGroups for Elbv2 {
    async fn members(&self, arn: &str) -> Result<Vec<Member>, Error> {
        let resp = self
            .0
            .describe_target_health()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(|e| Error::sdk("read target group (elasticloadbalancing:DescribeTargetHealth)", arn, e))?;
        Ok(resp
            .target_health_descriptions()
            .iter()
            .filter_map(|d| {
                let t = d.target()?;
                Some(Member {
                    id: t.id()?.to_string(),
                    port: t.port().unwrap_or_default() as u16,
                    state: TargetState::parse(d.target_health().and_then(|h| h.state()).map(|s| s.as_str()).unwrap_or_default()),
                })
            })
            .collect())
    }

    async fn register(&self, arn: &str, instance_id: &str, port: u16) -> Result<(), Error> {
        self.0
            .register_targets()
            .target_group_arn(arn)
            .targets(target(instance_id, port))
            .send()
            .await
            .map_err(|e| Error::sdk("register target (elasticloadbalancing:RegisterTargets)", format!("{arn} {instance_id}:{port}"), e))?;
        Ok(())
    }

    async fn deregister(&self, arn: &str, instance_id: &str, port: u16) -> Result<(), Error> {
        self.0
            .deregister_targets()
            .target_group_arn(arn)
            .targets(target(instance_id, port))
            .send()
            .await
            .map_err(|e| Error::sdk("deregister target (elasticloadbalancing:DeregisterTargets)", format!("{arn} {instance_id}:{port}"), e))?;
        Ok(())
    }

    async fn deregistration_delay(&self, arn: &str) -> Result<u64, Error> {
        let resp = self
            .0
            .describe_target_group_attributes()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(|e| Error::sdk("read target group attributes (elasticloadbalancing:DescribeTargetGroupAttributes)", arn, e))?;
        Ok(resp
            .attributes()
            .iter()
            .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
            .and_then(|a| a.value())
            .and_then(|v| v.parse().ok())
            .unwrap_or(300))
    }
}

/// The region spec's `alb_arn` names no load balancer: bad input.
fn not_found(alb_arn: &str) -> Error {
    Error::bad_input("read load balancer", alb_arn, "no such load balancer (region spec field `alb_arn`)")
}

fn conditions(spec: &RuleSpec) -> Vec<RuleCondition> {
    let mut c = vec![RuleCondition::builder()
        .field("host-header")
        .host_header_config(HostHeaderConditionConfig::builder().values(&spec.host).build())
        .build()];
    if !spec.source_ips.is_empty() {
        c.push(
            RuleCondition::builder()
                .field("source-ip")
                .source_ip_config(SourceIpConditionConfig::builder().set_values(Some(spec.source_ips.clone())).build())
                .build(),
        );
    }
    c
}

fn forward(spec: &RuleSpec) -> Action {
    let mut cfg = ForwardActionConfig::builder();
    for (arn, weight) in &spec.forward {
        cfg = cfg.target_groups(TargetGroupTuple::builder().target_group_arn(arn).weight(*weight as i32).build());
    }
    let sticky = TargetGroupStickinessConfig::builder().enabled(spec.stickiness_s > 0);
    let sticky = if spec.stickiness_s > 0 { sticky.duration_seconds(spec.stickiness_s as i32) } else { sticky };
    cfg = cfg.target_group_stickiness_config(sticky.build());
    Action::builder().r#type(ActionTypeEnum::Forward).forward_config(cfg.build()).build()
}

/// Reads a rule back into the managed shape, if it has it.
fn spec_of(rule: &aws_sdk_elasticloadbalancingv2::types::Rule, hosts: &[String]) -> Option<RuleSpec> {
    if hosts.len() != 1 {
        return None;
    }
    let mut source_ips = Vec::new();
    for c in rule.conditions() {
        match c.field() {
            Some("host-header") => {}
            Some("source-ip") => source_ips = c.source_ip_config().map(|s| s.values().to_vec()).unwrap_or_default(),
            _ => return None,
        }
    }
    let [action] = rule.actions() else {
        return None;
    };
    if action.r#type() != Some(&ActionTypeEnum::Forward) {
        return None;
    }
    let cfg = action.forward_config();
    let forward: Vec<(String, u32)> = match cfg {
        Some(cfg) if !cfg.target_groups().is_empty() => {
            cfg.target_groups().iter().map(|t| (t.target_group_arn().unwrap_or_default().to_string(), t.weight().unwrap_or(1) as u32)).collect()
        }
        _ => vec![(action.target_group_arn()?.to_string(), 1)],
    };
    let stickiness_s =
        cfg.and_then(|c| c.target_group_stickiness_config()).filter(|s| s.enabled() == Some(true)).and_then(|s| s.duration_seconds()).unwrap_or(0)
            as u32;
    Some(RuleSpec { host: hosts[0].clone(), source_ips, forward, stickiness_s })
}

#[async_trait]
impl LoadBalancer for Elbv2 {
    async fn alias_target(&self, alb_arn: &str) -> Result<AliasTarget, Error> {
        let resp = self.0.describe_load_balancers().load_balancer_arns(alb_arn).send().await.map_err(|e| match e.as_service_error() {
            Some(s) if s.is_load_balancer_not_found_exception() => not_found(alb_arn),
            _ => Error::sdk("read load balancer (elasticloadbalancing:DescribeLoadBalancers)", alb_arn, e),
        })?;
        let lb = resp.load_balancers().first().ok_or_else(|| not_found(alb_arn))?;
        Ok(AliasTarget {
            dns_name: fqdn(lb.dns_name().unwrap_or_default()),
            hosted_zone_id: lb.canonical_hosted_zone_id().unwrap_or_default().to_string(),
        })
    }

    async fn listeners(&self, alb_arn: &str) -> Result<BTreeMap<String, u16>, Error> {
        let resp = self
            .0
            .describe_listeners()
            .load_balancer_arn(alb_arn)
            .send()
            .await
            .map_err(|e| Error::sdk("read listeners (elasticloadbalancing:DescribeListeners)", alb_arn, e))?;
        Ok(resp.listeners().iter().filter_map(|l| Some((l.listener_arn()?.to_string(), l.port().unwrap_or_default() as u16))).collect())
    }

    async fn rules(&self, listener: &str) -> Result<Vec<ObservedRule>, Error> {
        let mut rules = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let resp = self
                .0
                .describe_rules()
                .listener_arn(listener)
                .page_size(400)
                .set_marker(marker.clone())
                .send()
                .await
                .map_err(|e| Error::sdk("read rules (elasticloadbalancing:DescribeRules)", listener, e))?;
            rules.extend(resp.rules().iter().filter(|r| r.is_default() != Some(true)).cloned());
            marker = resp.next_marker().map(str::to_string);
            if marker.is_none() {
                break;
            }
        }
        Ok(rules
            .iter()
            .map(|r| {
                let hosts: Vec<String> = r
                    .conditions()
                    .iter()
                    .filter(|c| c.field() == Some("host-header"))
                    .flat_map(|c| {
                        let mut v: Vec<String> = c.host_header_config().map(|h| h.values().to_vec()).unwrap_or_default();
                        v.extend(c.values().iter().cloned());
                        v
                    })
                    .map(|h| h.to_ascii_lowercase())
                    .collect();
                let arn = r.rule_arn().unwrap_or_default().to_string();
                ObservedRule {
                    listener: listener.to_string(),
                    priority: r.priority().and_then(|p| p.parse().ok()).unwrap_or(0),
                    spec: spec_of(r, &hosts),
                    hosts,
                    owner: None,
                    arn,
                }
            })
            .collect())
    }

    async fn owners(&self, arns: &[String]) -> Result<BTreeMap<String, String>, Error> {
        let mut owners = BTreeMap::new();
        // DescribeTags takes at most 20 resource ARNs.
        for chunk in arns.chunks(20) {
            let resp = self
                .0
                .describe_tags()
                .set_resource_arns(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| Error::sdk("read rule tags (elasticloadbalancing:DescribeTags)", chunk[0].as_str(), e))?;
            for d in resp.tag_descriptions() {
                if let Some(t) = d.tags().iter().find(|t| t.key() == Some(OWNER_TAG)) {
                    owners.insert(d.resource_arn().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string());
                }
            }
        }
        Ok(owners)
    }

    async fn create_rule(&self, listener: &str, priority: u32, spec: &RuleSpec, owner: &str) -> Result<String, Error> {
        let resp = self
            .0
            .create_rule()
            .listener_arn(listener)
            .priority(priority as i32)
            .set_conditions(Some(conditions(spec)))
            .actions(forward(spec))
            .tags(Tag::builder().key(OWNER_TAG).value(owner).build())
            .send()
            .await
            .map_err(|e| {
                let priority_taken = e.as_service_error().is_some_and(|s| s.is_priority_in_use_exception());
                Error::sdk("create rule (elasticloadbalancing:CreateRule)", format!("{listener} priority {priority} host {}", spec.host), e)
                    .retry_if(priority_taken)
            })?;
        Ok(resp.rules().first().and_then(|r| r.rule_arn()).unwrap_or_default().to_string())
    }

    async fn modify_rule(&self, arn: &str, spec: &RuleSpec) -> Result<(), Error> {
        self.0
            .modify_rule()
            .rule_arn(arn)
            .set_conditions(Some(conditions(spec)))
            .actions(forward(spec))
            .send()
            .await
            .map_err(|e| Error::sdk("modify rule (elasticloadbalancing:ModifyRule)", arn, e))?;
        Ok(())
    }

    async fn set_priorities(&self, priorities: &[(String, u32)]) -> Result<(), Error> {
        self.set_rule_priorities(priorities).await
    }

    async fn delete_rule(&self, arn: &str) -> Result<(), Error> {
        self.0.delete_rule().rule_arn(arn).send().await.map_err(|e| Error::sdk("delete rule (elasticloadbalancing:DeleteRule)", arn, e))?;
        Ok(())
    }
}

impl Elbv2 {
    async fn set_rule_priorities(&self, priorities: &[(String, u32)]) -> Result<(), Error> {
        use aws_sdk_elasticloadbalancingv2::types::RulePriorityPair;
        let pairs: Vec<RulePriorityPair> =
            priorities.iter().map(|(arn, p)| RulePriorityPair::builder().rule_arn(arn).priority(*p as i32).build()).collect();
        self.0.set_rule_priorities().set_rule_priorities(Some(pairs)).send().await.map_err(|e| {
            let what: Vec<String> = priorities.iter().map(|(a, p)| format!("{a}={p}")).collect();
            let priority_taken = e.as_service_error().is_some_and(|s| s.is_priority_in_use_exception());
            Error::sdk("reorder rules (elasticloadbalancing:SetRulePriorities)", what.join(", "), e).retry_if(priority_taken)
        })?;
        Ok(())
    }
}
