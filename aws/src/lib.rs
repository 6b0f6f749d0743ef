//! The AWS-side schema of k3s-asg, shared by the agent and the coordinator:
//! instance tags, SSM parameter names, the cluster spec, naming rules, and
//! how SDK clients are configured, and the one place each of SSM, Route53,
//! EC2 and ELBv2 is spoken to (`ssm`, `route53`, `ec2`, `elbv2`, over the
//! plain values of `records`, `targets` and `rules`, and the `secret` that
//! SSM's SecureStrings travel as).

#[cfg(feature = "sdk")]
pub mod clients;
#[cfg(feature = "sdk")]
pub mod ec2;
#[cfg(feature = "sdk")]
pub mod elbv2;
pub mod error;
pub mod imds;
pub mod k3s_flags;
pub mod names;
pub mod node_template;
pub mod params;
pub mod records;
#[cfg(feature = "sdk")]
pub mod route53;
pub mod rules;
pub mod secret;
pub mod spec;
#[cfg(feature = "sdk")]
pub mod ssm;
pub mod tags;
pub mod targets;

#[cfg(feature = "sdk")]
/// Renders an SDK error with its whole chain of causes, for messages read by operators.
pub fn sdk_error_text<E: std::error::Error>(err: &E) -> String {
    aws_smithy_types::error::display::DisplayErrorContext(err).to_string()
}
