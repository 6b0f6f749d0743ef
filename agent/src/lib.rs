//! `k3s-asg-agent`: joins an EC2 instance to its k3s cluster, makes it routable
//! once it can serve, and (later) leaves in order.
//!
//! Shape: `plan` and `render` are pure; `effects` holds one narrow trait per
//! outside system with its real implementation; `join` sequences the steps.

pub mod cli;
pub mod config;
pub mod effects;
pub mod error;
pub mod failpoint;
pub mod join;
pub mod leave;
pub mod plan;
pub mod render;
pub mod run;
pub mod secret;
pub mod state;
pub mod status;
pub mod token;
pub mod wait;
