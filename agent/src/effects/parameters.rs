//! SSM Parameter Store: the shared crate's (`k3s_asg_aws::ssm`), the one place of the
//! workspace SSM is spoken to; kept under this path for the agent's code.

pub use k3s_asg_aws::ssm::{Listed, Param, Parameters, Ssm};
