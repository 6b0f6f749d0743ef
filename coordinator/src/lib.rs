//! `k3s-asg-coordinator`: one per region. Reconciles the shared ALB's listener
//! rules and the Route53 latency records from the desired state in SSM.
//!
//! Shape: `desired` and `planner` are pure; `alb`, `zones` and `source` are
//! the effects, each behind one trait; `reconcile` observes, plans, applies.

pub mod alb;
pub mod cli;
pub mod desired;
pub mod health;
pub mod instances;
pub mod lambda;
pub mod model;
pub mod planner;
pub mod reconcile;
pub mod render;
pub mod source;
pub mod warm;
pub mod zones;

use std::fmt;

/// An error naming the step and the resource; `bad_input` exits 2.
#[derive(Debug)]
pub struct Error {
    pub bad_input: bool,
    /// Worth planning again (a concurrent writer took a rule priority).
    pub retry: bool,
    pub step: &'static str,
    pub resource: String,
    pub detail: String,
}

impl Error {
    pub fn failed(step: &'static str, resource: impl Into<String>, detail: impl Into<String>) -> Self {
        Error { bad_input: false, retry: false, step, resource: resource.into(), detail: detail.into() }
    }
    pub fn bad_input(step: &'static str, resource: impl Into<String>, detail: impl Into<String>) -> Self {
        Error { bad_input: true, ..Self::failed(step, resource, detail) }
    }
    pub fn sdk<E: std::error::Error>(step: &'static str, resource: impl Into<String>, err: &E) -> Self {
        Self::failed(step, resource, k3s_asg_aws::sdk_error_text(err))
    }
    pub fn spec(e: k3s_asg_aws::spec::SpecError) -> Self {
        Self::bad_input("read spec", e.parameter, format!("field `{}`: {}", e.field, e.problem))
    }
    pub fn exit_code(&self) -> u8 {
        if self.bad_input {
            2
        } else {
            1
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.step, self.resource, self.detail)
    }
}

impl std::error::Error for Error {}
