//! Command line: `k3s-asg-coordinator plan | apply | run`.

use crate::reconcile::{self, Effects, Settings};
use crate::warm::Warm;
use crate::{alb, source, Error};
use clap::{Parser, Subcommand};
use k3s_asg_aws::params::Prefix;
use k3s_asg_aws::ssm::SpecParameters;
use std::process::ExitCode;
use std::time::Duration;

/// Reconciles a region's shared ALB listener rules and Route53 latency records
/// for k3s-asg clusters and shared endpoints, from the desired state in SSM
/// (`{prefix}/regions/{region}`, `{prefix}/clusters/*/config`, `{prefix}/endpoints/*`).
///
/// It changes only rules tagged `k3s-asg:owner=<owner>` and records claimed by
/// its `_k3s-asg.<hostname>` TXT record; anything else is reported as a conflict.
///
/// Exit codes: 0 done (for `apply`: the region matches the desired state);
/// 2 bad input (a spec names the field; a plan over the rules quota is printed,
/// and only API records of stopped instances are collected); 1 any other failure.
#[derive(Debug, Parser)]
#[command(name = "k3s-asg-coordinator", version)]
struct Cli {
    /// SSM parameter prefix of this region's k3s-asg parameters.
    #[arg(long, env = "K3S_ASG_PREFIX", default_value = k3s_asg_aws::params::DEFAULT_PREFIX, global = true)]
    prefix: String,
    /// Owner id written on the rules (tag `k3s-asg:owner`) and record claims this coordinator
    /// creates. Default: derived from --prefix, so installations with their own prefixes never
    /// share one (`k3s-asg` for `/k3s-asg`, `k3s-asg-staging` for `/k3s-asg-staging`,
    /// `team.k3s-asg` for `/team/k3s-asg`). Claims also name the region and the load balancer.
    #[arg(long, env = "K3S_ASG_OWNER", global = true)]
    owner: Option<String>,
    /// Seconds `run` and Lambda mode keep the specs read from SSM, the ALB's listeners and
    /// the rules' owner tags between reconciles (0: read everything every time). Rules and
    /// records themselves are read on every reconcile; a failed reconcile, and in Lambda
    /// mode an SSM "Parameter Store Change" event, forget what was kept.
    #[arg(long, env = "K3S_ASG_REFRESH_S", default_value_t = 300, global = true)]
    refresh: u64,
    /// Region to reconcile (default: the SDK's region chain: AWS_REGION, AWS_DEFAULT_REGION,
    /// the profile's region).
    #[arg(long, env = "AWS_REGION", global = true)]
    region: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the changes `apply` would make (+ create, ~ modify, - delete, ! conflict); change nothing.
    Plan {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Converge the region once.
    Apply,
    /// Print a cluster's admin kubeconfig from SSM (`{prefix}/clusters/CLUSTER/kubeconfig/admin`).
    Kubeconfig {
        /// The cluster name.
        cluster: String,
    },
    /// Serve the Lambda Runtime API (chosen automatically when AWS_LAMBDA_RUNTIME_API is set).
    #[command(hide = true)]
    Lambda,
    /// Converge the region every interval, until stopped.
    Run {
        /// Seconds between reconciles.
        #[arg(long, default_value_t = 60)]
        interval: u64,
    },
}

pub fn main() -> ExitCode {
    // Lambda mode: the runtime passes no arguments.
    let lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    let cli = if lambda { Cli::parse_from(["k3s-asg-coordinator", "lambda"]) } else { Cli::parse() };
    // Logging follows the platform: level from AWS_LAMBDA_LOG_LEVEL or K3S_ASG_LOG, JSON when Lambda asks.
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().map(|l| l.to_ascii_lowercase());
    let filter = tracing_subscriber::EnvFilter::try_from_env("K3S_ASG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.as_deref().unwrap_or("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(!lambda && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().init();
    } else {
        builder.init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime starts");
    match rt.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("k3s-asg-coordinator: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn dispatch(cli: Cli) -> Result<(), Error> {
    let prefix = Prefix::new(&cli.prefix).map_err(|why| Error::bad_input("read settings", "--prefix", why))?;
    let sdk = k3s_asg_aws::clients::load(cli.region.clone()).await;
    let region = sdk.region().map(|r| r.to_string()).ok_or_else(|| {
        Error::bad_input("read settings", "--region", "set --region, AWS_REGION, AWS_DEFAULT_REGION or a region in the AWS profile")
    })?;
    let owner = cli.owner.clone().filter(|o| !o.trim().is_empty()).unwrap_or_else(|| default_owner(&prefix));
    let settings = Settings { prefix, region, owner };
    if let Command::Kubeconfig { cluster } = &cli.command {
        return print_kubeconfig(&k3s_asg_aws::ssm::Ssm::new(&sdk), &settings.prefix, cluster).await;
    }
    let fx = Effects {
        specs: Box::new(source::Ssm::new(&sdk)),
        targets: Box::new(alb::Elbv2::new(&sdk)),
        probe: Box::new(crate::health::HttpHostProbe),
        instances: Box::new(k3s_asg_aws::ec2::Ec2(aws_sdk_ec2::Client::new(&sdk))),
        alb: Box::new(alb::Elbv2::new(&sdk)),
        zones: Box::new(k3s_asg_aws::route53::Route53(aws_sdk_route53::Client::new(&sdk))),
    };
    let warm = Warm::new(Duration::from_secs(cli.refresh));
    match cli.command {
        Command::Plan { json } => {
            let p = reconcile::compute_plan(&settings, &fx, &Warm::cold()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&p).expect("plan serialises"));
            } else {
                print!("{}", crate::render::text(&p));
            }
            reconcile::refusal(&p, &settings).map_or(Ok(()), Err)
        }
        Command::Apply => {
            let p = reconcile::apply(&settings, &fx, &Warm::cold()).await?;
            print!("{}", crate::render::text(&p));
            reconcile::refusal(&p, &settings).map_or(Ok(()), Err)
        }
        Command::Lambda => crate::lambda::serve(settings, fx, warm).await,
        Command::Kubeconfig { .. } => unreachable!("handled above"),
        Command::Run { interval } => {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .map_err(|e| Error::failed("install SIGTERM handler", "", e.to_string()))?;
            loop {
                match reconcile::apply(&settings, &fx, &warm).await {
                    Ok(p) => match reconcile::refusal(&p, &settings) {
                        // Kept running: the API garbage is still collected every round.
                        Some(e) if !p.refused.is_empty() => {
                            tracing::error!(error = %e, api_garbage = p.api_garbage.len(), "plan refused; only API records of stopped instances were collected")
                        }
                        Some(e) => {
                            tracing::error!(error = %e, rules = p.rules.len(), records = p.records.len(), "reconciled without the inputs left out")
                        }
                        None => tracing::info!(
                            rules = p.rules.len(),
                            records = p.records.len(),
                            api_garbage = p.api_garbage.len(),
                            conflicts = p.conflicts.len(),
                            "reconciled"
                        ),
                    },
                    Err(e) if e.bad_input => return Err(e),
                    Err(e) => tracing::error!(error = %e, "reconcile failed; will retry"),
                }
                let jitter = rand::random::<u64>() % (interval.max(1) * 100);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(interval) + Duration::from_millis(jitter)) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                    _ = term.recv() => {
                        tracing::info!("SIGTERM: stopping");
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// The owner id an installation gets unless told otherwise: its prefix without the leading `/`,
/// with `/` as `.` (tag values and TXT claims both take it).
pub fn default_owner(prefix: &Prefix) -> String {
    prefix.as_str().trim_start_matches('/').replace('/', ".")
}

/// The operator asked for the secret: it goes to stdout only, never to the log.
async fn print_kubeconfig(ssm: &dyn SpecParameters, prefix: &Prefix, cluster: &str) -> Result<(), Error> {
    k3s_asg_aws::names::check_cluster_name(cluster).map_err(|why| Error::bad_input("read kubeconfig", "CLUSTER", why))?;
    let kubeconfig = ssm.admin_kubeconfig(&prefix.admin_kubeconfig(cluster)).await?;
    print!("{}", kubeconfig.expose());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_follow_the_prefix() {
        let owner = |p: &str| default_owner(&Prefix::new(p).unwrap());
        assert_eq!(owner("/k3s-asg"), "k3s-asg", "earlier releases' owner, kept");
        assert_eq!(owner("/k3s-asg-staging"), "k3s-asg-staging");
        assert_eq!(owner("/team/k3s-asg"), "team.k3s-asg");
    }
}
