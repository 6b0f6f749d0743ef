//! What the coordinator compares: desired and observed listener rules and
//! Route53 records, as plain values.

use serde::Serialize;

/// Listener rules as managed and as read back: the shared crate's, where ELBv2 is spoken to.
pub use k3s_asg_aws::rules::{ObservedRule, RuleSpec};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredRule {
    /// What the rule is for, e.g. `cluster alpha` or `endpoint blog`.
    pub purpose: String,
    pub listener: String,
    /// Specific hostnames sort before wildcards.
    pub specific: bool,
    pub spec: RuleSpec,
}

/// Route53 record sets and changes: the one model of both programs.
pub use k3s_asg_aws::records::{AliasTarget, RecordChange, RecordData, RecordSet};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredEndpointRecord {
    pub purpose: String,
    pub zone_id: String,
    pub hostname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Desired {
    pub region: String,
    pub owner: String,
    pub rules_quota: u32,
    pub alb: AliasTarget,
    pub rules: Vec<DesiredRule>,
    pub records: Vec<DesiredEndpointRecord>,
    /// (zone id, fully qualified API hostname) of every cluster: garbage-collected.
    pub api_names: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Observed {
    /// Every rule on every managed listener, ours or not (default rules excluded).
    pub rules: Vec<ObservedRule>,
    /// Every record set of every zone the desired state names.
    pub records: Vec<RecordSet>,
    /// Which of the instances named by API records are still pending or running.
    pub live_instances: std::collections::BTreeSet<String>,
    /// Which of them EC2 in this region knows at all (any state): a record under a name no spec
    /// uses is collected only for an instance EC2 here reports stopped or gone, never for one it
    /// does not know (another region's, another account's).
    pub known_instances: std::collections::BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RuleChange {
    Create {
        purpose: String,
        listener: String,
        priority: u32,
        spec: RuleSpec,
    },
    Modify {
        purpose: String,
        listener: String,
        arn: String,
        from: Option<RuleSpec>,
        to: RuleSpec,
    },
    Delete {
        listener: String,
        arn: String,
        hosts: Vec<String>,
    },
    /// `SetRulePriorities`: only when an owned specific rule sits behind an owned wildcard.
    Reprioritize {
        listener: String,
        arn: String,
        host: String,
        from: u32,
        to: u32,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub rules: Vec<RuleChange>,
    pub records: Vec<RecordChange>,
    /// API records of instances that no longer run: collected even when the rest of the plan
    /// is refused, so a bad spec never keeps dead servers in the API name.
    pub api_garbage: Vec<RecordChange>,
    /// Why the rules and endpoint records of this plan must not be applied (bad input: a quota
    /// the plan exceeds). Shown with the plan; `apply` then performs only `api_garbage`.
    pub refused: Vec<String>,
    /// Inputs left out of the plan (bad input: a cluster name the agent would refuse). The rest
    /// of the plan is applied; the run still ends with exit 2 naming them.
    pub left_out: Vec<String>,
    /// Things in the way that we do not own: reported, never touched.
    pub conflicts: Vec<String>,
    /// Decisions worth telling the operator (health overrides).
    pub notes: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.records.is_empty() && self.api_garbage.is_empty()
    }

    /// The changes `apply` performs: everything, or only the API garbage when the plan is refused.
    pub fn applicable(&self) -> (&[RuleChange], &[RecordChange]) {
        if self.refused.is_empty() {
            (&self.rules, &self.records)
        } else {
            (&[], &[])
        }
    }
}
