//! ALB listener rules as plain values: the shape of a rule the coordinator
//! manages, a rule as read back, and the tag that marks whose it is.

use serde::Serialize;

/// The tag that marks a listener rule as created by (and only changed by) a coordinator.
pub const OWNER_TAG: &str = "k3s-asg:owner";

/// The shape of a rule the coordinator manages: one host, optional source
/// CIDRs, a (weighted) forward, optional stickiness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleSpec {
    pub host: String,
    pub source_ips: Vec<String>,
    /// (target group ARN, weight)
    pub forward: Vec<(String, u32)>,
    pub stickiness_s: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedRule {
    pub listener: String,
    pub arn: String,
    pub priority: u32,
    /// Every host-header value of the rule (lower case).
    pub hosts: Vec<String>,
    /// The managed shape, when the rule has it.
    pub spec: Option<RuleSpec>,
    /// The `k3s-asg:owner` tag.
    pub owner: Option<String>,
}
