//! `k3s-asg-coordinator`: one per region. Reconciles the shared ALB's listener
//! rules and the Route53 latency records from the desired state in SSM.
//!
//! Shape: `desired` and `planner` are pure; the effects, each behind one trait, are the shared
//! crate's `ssm`, `elbv2` (target groups, and the ALB's listeners and rules, which `alb`
//! re-exports), `route53` and `ec2`; `source` picks the specs out of what SSM holds; `reconcile`
//! observes, plans, applies.

pub mod alb;
pub mod cli;
pub mod desired;
pub mod health;
pub mod lambda;
pub mod model;
pub mod planner;
pub mod reconcile;
pub mod render;
pub mod source;
pub mod warm;

/// The shared error type: names the step and the resource; `bad_input` exits 2.
pub use k3s_asg_aws::error::Error;
