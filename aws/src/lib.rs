//! The AWS-side schema of k3s-asg, shared by the agent and the coordinator:
//! instance tags, SSM parameter names, the cluster spec, naming rules, and
//! how SDK clients are configured.

#[cfg(feature = "sdk")]
pub mod clients;
pub mod error;
pub mod imds;
#[cfg(feature = "sdk")]
pub mod instances;
pub mod names;
pub mod params;
pub mod spec;
pub mod tags;
#[cfg(feature = "sdk")]
pub mod target_health;

#[cfg(feature = "sdk")]
/// Renders an SDK error with its whole chain of causes, for messages read by operators.
pub fn sdk_error_text<E: std::error::Error>(err: &E) -> String {
    aws_smithy_types::error::display::DisplayErrorContext(err).to_string()
}
