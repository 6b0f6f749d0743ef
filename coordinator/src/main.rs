//! `k3s-asg-coordinator`: one per region; reconciles the shared ALB's listener
//! rules and the Route53 latency records from the desired state in SSM.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Reconciles a region's shared ALB listener rules and Route53 latency records
/// for k3s-asg clusters and shared endpoints, from the desired state in SSM.
///
/// Runs as a CLI, a daemon (`run`) or an AWS Lambda (when AWS_LAMBDA_RUNTIME_API is set).
#[derive(Debug, Parser)]
#[command(name = "k3s-asg-coordinator", version)]
struct Cli {
    /// SSM parameter prefix of this region's k3s-asg parameters.
    #[arg(long, env = "K3S_ASG_PREFIX", default_value = k3s_asg_aws::params::DEFAULT_PREFIX, global = true)]
    prefix: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the changes that `apply` would make; change nothing.
    Plan,
    /// Converge the region once.
    Apply,
    /// Converge the region every interval, until stopped.
    Run,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let what = match cli.command {
        Command::Plan => "plan",
        Command::Apply => "apply",
        Command::Run => "run",
    };
    eprintln!("k3s-asg-coordinator: error: `{what}` is not implemented yet (prefix {})", cli.prefix);
    ExitCode::from(1)
}
