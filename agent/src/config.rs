//! The agent's own settings (flags and environment), distinct from the cluster spec in SSM.

use k3s_asg_aws::params::Prefix;
use k3s_asg_aws::tags::TagKeys;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Every host path the agent touches is under this directory.
    pub root: PathBuf,
    pub tag_keys: TagKeys,
    pub prefix: Prefix,
    /// How long to wait for the join token and a live server.
    pub join_timeout: Duration,
    /// How long to wait for k3s and the readiness probes.
    pub ready_timeout: Duration,
    /// The k3s supervisor port probed on servers (k3s's `https-listen-port`).
    pub supervisor_port: u16,
    /// Leave on an EC2 rebalance recommendation (default: ignore it).
    pub leave_on_rebalance: bool,
    /// How long a leaving server waits for quorum to allow removing its etcd member.
    pub quorum_timeout: Duration,
    /// The first-server election's lease: a winner that has neither secured the token nor
    /// renewed its record for this long, and on which no k3s answers, is replaced.
    pub election_lease: Duration,
    /// Age of the published admin kubeconfig after which a server replaces it with its own.
    pub kubeconfig_max_age: Duration,
    /// How long a server sees no live server and none that could come up before it recovers.
    pub recovery_grace: Duration,
    /// How often a server in `run` checks that the token parameter still holds its cluster's token.
    pub token_check: Duration,
    /// How often `run` re-reads the cluster spec and converges the instance to it (jittered).
    pub spec_check: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            root: PathBuf::from("/"),
            tag_keys: TagKeys::default(),
            prefix: Prefix::default(),
            join_timeout: Duration::from_secs(900),
            ready_timeout: Duration::from_secs(600),
            supervisor_port: 6443,
            leave_on_rebalance: false,
            quorum_timeout: Duration::from_secs(600),
            election_lease: Duration::from_secs(300),
            token_check: Duration::from_secs(60),
            spec_check: Duration::from_secs(60),
            recovery_grace: Duration::from_secs(180),
            kubeconfig_max_age: Duration::from_secs(275 * 86_400),
        }
    }
}
