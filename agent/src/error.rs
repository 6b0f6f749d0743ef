//! The agent's errors: the shared type (k3s_asg_aws::error), which names the
//! step and the resource and sets the exit code from DESIGN.md.

pub use k3s_asg_aws::error::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;
