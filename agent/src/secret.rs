//! A string that never prints itself: the shared crate's (`k3s_asg_aws::secret`), where SSM's
//! SecureStrings are read and written; kept under this path for the agent's code.

pub use k3s_asg_aws::secret::Secret;
