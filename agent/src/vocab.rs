//! The agent's vocabulary: where it stands (`Phase`), the named steps of join
//! and leave (`StepName`, also the failpoints' names), why it leaves
//! (`Trigger`) and how a server starts (`Mode`). Plain values, serialised as
//! the kebab-case words earlier agents wrote into the state file. Imports
//! nothing of the agent (only the shared crate's `Role`): every layer may use it.

use k3s_asg_aws::tags::Role;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where the agent stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    #[default]
    Joining,
    Ready,
    Failed,
    /// A leave began and has not finished: `run` finishes it when started again.
    Leaving,
    Left,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Joining => "joining",
            Phase::Ready => "ready",
            Phase::Failed => "failed",
            Phase::Leaving => "leaving",
            Phase::Left => "left",
        })
    }
}

/// The named steps of join and leave, in their normative order (DESIGN.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepName {
    // join
    Identity,
    /// This server created the latest election's record (it initialises the cluster).
    ElectionWon,
    /// The election's winner wrote its election token into the token parameter.
    TokenWritten,
    /// This server won a recovery election (it brings the cluster back).
    RecoveryWon,
    Token,
    Render,
    /// The recovery's winner restored the newest snapshot into its datastore.
    Restored,
    Start,
    /// k3s is ready (the unit active, the Node Ready).
    Ready,
    Kubeconfigs,
    ApiRecord,
    /// The spec's readiness probes of this role pass (they gate registration only).
    Probes,
    Registered,
    // leave
    Deregistered,
    ApiRecordRemoved,
    Drained,
    /// The last server of a cluster with snapshots saved one to S3 before going.
    FinalSnapshot,
    NodeDeleted,
    K3sStopped,
    LifecycleCompleted,
}

impl StepName {
    /// Every join step, in order (`election-won`, `token-written`, `kubeconfigs` and `api-record`
    /// are the control plane's; the first two only the election winner's).
    pub const JOIN: &'static [StepName] = &[
        StepName::Identity,
        StepName::ElectionWon,
        StepName::TokenWritten,
        StepName::RecoveryWon,
        StepName::Token,
        StepName::Render,
        StepName::Restored,
        StepName::Start,
        StepName::Ready,
        StepName::Kubeconfigs,
        StepName::ApiRecord,
        StepName::Probes,
        StepName::Registered,
    ];
    /// Every leave step, in order (`api-record-removed` is the control plane's; `lifecycle-completed`
    /// happens where a hook waits).
    pub const LEAVE: &'static [StepName] = &[
        StepName::Deregistered,
        StepName::ApiRecordRemoved,
        StepName::Drained,
        StepName::FinalSnapshot,
        StepName::NodeDeleted,
        StepName::K3sStopped,
        StepName::LifecycleCompleted,
    ];

    /// The join steps an instance of `role` goes through.
    pub fn join_steps(role: Role) -> Vec<StepName> {
        let server_only = |s: &StepName| {
            matches!(
                s,
                StepName::ElectionWon
                    | StepName::TokenWritten
                    | StepName::RecoveryWon
                    | StepName::Restored
                    | StepName::Kubeconfigs
                    | StepName::ApiRecord
            )
        };
        Self::JOIN.iter().copied().filter(|s| role.is_server() || !server_only(s)).collect()
    }

    /// Steps only a recovery goes through (tests/recovery.rs crashes at each of them).
    pub fn only_in_recovery(self) -> bool {
        matches!(self, StepName::RecoveryWon | StepName::Restored | StepName::FinalSnapshot)
    }

    /// The name in the state file, the logs and `K3S_ASG_FAILPOINT`.
    pub fn as_str(self) -> &'static str {
        match self {
            StepName::Identity => "identity",
            StepName::ElectionWon => "election-won",
            StepName::TokenWritten => "token-written",
            StepName::RecoveryWon => "recovery-won",
            StepName::Restored => "restored",
            StepName::Token => "token",
            StepName::Render => "render",
            StepName::Start => "start",
            StepName::Ready => "ready",
            StepName::Kubeconfigs => "kubeconfigs",
            StepName::ApiRecord => "api-record",
            StepName::Probes => "probes",
            StepName::Registered => "registered",
            StepName::Deregistered => "deregistered",
            StepName::ApiRecordRemoved => "api-record-removed",
            StepName::Drained => "drained",
            StepName::FinalSnapshot => "final-snapshot",
            StepName::NodeDeleted => "node-deleted",
            StepName::K3sStopped => "k3s-stopped",
            StepName::LifecycleCompleted => "lifecycle-completed",
        }
    }
}

impl fmt::Display for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the agent is leaving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    Sigterm,
    LifecycleTerminated,
    /// A spot `instance-action` notice (its JSON text).
    SpotInterruption(String),
    Rebalance,
    /// The `leave` command.
    Command,
    /// `run` found a leave that had not finished.
    Resume,
    /// The group took the instance out of service without terminating it (its target
    /// lifecycle state: back to a warm pool on scale-in, or `Standby`): leave, and join again
    /// once it is `InService`.
    OutOfService(String),
}

impl Trigger {
    /// Whether the instance comes back after this leave (and `run` joins again).
    pub fn returns(&self) -> bool {
        matches!(self, Trigger::OutOfService(_))
    }
}

/// How this server starts: the one that created the token initialises the
/// cluster, every other instance joins a live server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    ClusterInit,
    Join,
}
