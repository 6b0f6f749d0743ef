//! ELBv2: the shared ALB's listeners and rules, the shared crate's
//! (`k3s_asg_aws::elbv2`, the one place of the workspace ELBv2 is spoken to);
//! kept under this path for the coordinator's code.

pub use k3s_asg_aws::elbv2::{Elbv2, LoadBalancer};
