//! `k3s-asg-agent`: joins an EC2 instance to its k3s cluster, makes it routable
//! once it can serve, keeps it where the cluster spec says, and leaves in order.
//!
//! Layers; a module uses only modules of its own layer or the layers above it
//! (`tests/layers.rs` reads the sources and fails when a `crate::` path breaks
//! these rules):
//!
//! 1. **Vocabulary and plumbing**: `vocab` (phases, step names, triggers, modes;
//!    imports nothing of the agent), `error`, `secret`, `config`, `wait` (waits,
//!    budgets, the clock), `failpoint`.
//! 2. **Effects**: `effects/`, one narrow trait per outside system with its real
//!    implementation (Route53, EC2, ELBv2 and SSM are the shared crate's); they
//!    use layer 1 only.
//! 3. **Pure deciders**: `token`, `election`, `recovery`, `render`: values in,
//!    values out, no effects.
//! 4. **Observation and record**: `state` (the state file, written through
//!    `effects::hostfs`), `discover` (who and where the instance is).
//! 5. **Resources the agent owns outside the host**, one home each, written like
//!    finalizers (idempotent, safe to cancel, correct when `ensure` never ran):
//!    `api_record`, `membership` (target groups), `kubeconfigs`, `nodes`, `datastore`, and
//!    `live` (which servers are live). A resource may use another (`live` reads
//!    `api_record`; a rename's cleanup points `kubeconfigs` at the new name).
//! 6. **Verbs**, short sequences of named steps over layers 1–5: `join/`,
//!    `leave`, `converge`, `guard`, `heal` (a lost etcd majority); none uses another.
//! 7. **Loops and the edge**: `run` (sequences the verbs), `status`, `cli`.

pub mod api_record;
pub mod cli;
pub mod config;
pub mod converge;
pub mod datastore;
pub mod discover;
pub mod effects;
pub mod election;
pub mod error;
pub mod failpoint;
pub mod guard;
pub mod heal;
pub mod join;
pub mod kubeconfigs;
pub mod leave;
pub mod live;
pub mod membership;
pub mod nodes;
pub mod recovery;
pub mod render;
pub mod run;
pub mod secret;
pub mod state;
pub mod status;
pub mod token;
pub mod vocab;
pub mod wait;
