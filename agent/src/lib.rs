//! `k3s-asg-agent`: joins an EC2 instance to its k3s cluster, makes it routable
//! once it can serve, and (later) leaves in order.
//!
//! Shape: `discover` finds who and where the instance is (once, for join,
//! leave and run); `plan` and `render` are pure; `effects` holds one narrow
//! trait per outside system with its real implementation (SSM, Route53, EC2
//! and ELBv2 come from the shared crate); `join` and `leave` are short sequences
//! of named steps over a typed `state`.

pub mod cli;
pub mod config;
pub mod converge;
pub mod discover;
pub mod effects;
pub mod election;
pub mod error;
pub mod failpoint;
pub mod guard;
pub mod join;
pub mod leave;
pub mod plan;
pub mod recovery;
pub mod render;
pub mod run;
pub mod secret;
pub mod state;
pub mod status;
pub mod token;
pub mod wait;
