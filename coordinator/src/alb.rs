//! ELBv2: the shared ALB's listeners and rules.

use crate::model::{AliasTarget, ObservedRule, RuleSpec};
use crate::planner::OWNER_TAG;
use crate::Error;
use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, ForwardActionConfig, HostHeaderConditionConfig, RuleCondition, SourceIpConditionConfig, Tag, TargetGroupStickinessConfig,
    TargetGroupTuple,
};
use k3s_asg_aws::names::fqdn;
use std::collections::BTreeMap;

#[async_trait]
pub trait LoadBalancer: Send + Sync {
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

pub struct Elbv2(pub aws_sdk_elasticloadbalancingv2::Client);

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
