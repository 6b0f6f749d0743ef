//! Command line: `k3s-asg-agent run | join | leave | status`.

use crate::config::AgentConfig;
use crate::effects::{self, Effects};
use crate::error::{Error, Result};
use crate::state::{Phase, State};
use clap::{Parser, Subcommand};
use k3s_asg_aws::params::Prefix;
use k3s_asg_aws::tags::TagKeys;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Joins this EC2 instance to its k3s cluster and keeps it routable only while it can serve.
///
/// The agent reads IMDSv2 for its identity, its `Cluster` and `Role` tags for
/// its place, and the cluster spec from SSM Parameter Store. AWS settings come
/// from the standard environment (credentials chain, AWS_REGION,
/// AWS_ENDPOINT_URL[_<SERVICE>], AWS_EC2_METADATA_SERVICE_ENDPOINT).
///
/// Exit codes: 0 done; 2 bad input (the message names the tag, parameter or
/// field; nothing was changed); 1 any other failure.
#[derive(Debug, Parser)]
#[command(name = "k3s-asg-agent", version, propagate_version = true)]
pub struct Cli {
    /// Directory every host path is taken under.
    #[arg(long, env = "K3S_ASG_ROOT", default_value = "/", global = true)]
    root: PathBuf,
    /// SSM parameter prefix of this region's k3s-asg parameters.
    #[arg(long, env = "K3S_ASG_PREFIX", default_value = k3s_asg_aws::params::DEFAULT_PREFIX, global = true)]
    prefix: String,
    /// Instance tag key holding the cluster name.
    #[arg(long, env = "K3S_ASG_CLUSTER_TAG", default_value = "Cluster", global = true)]
    cluster_tag: String,
    /// Instance tag key holding the role (`control-plane` or `node`).
    #[arg(long, env = "K3S_ASG_ROLE_TAG", default_value = "Role", global = true)]
    role_tag: String,
    /// Seconds to wait for the join token and a live server.
    #[arg(long, env = "K3S_ASG_JOIN_TIMEOUT", default_value_t = 900, global = true)]
    join_timeout: u64,
    /// Seconds to wait for k3s and the spec's readiness probes.
    #[arg(long, env = "K3S_ASG_READY_TIMEOUT", default_value_t = 600, global = true)]
    ready_timeout: u64,
    /// Seconds a leaving server waits for quorum before keeping its etcd member, when no
    /// lifecycle hook holds it (with a hook it waits as long as the hook's global timeout allows).
    #[arg(long, env = "K3S_ASG_QUORUM_TIMEOUT", default_value_t = 600, global = true)]
    quorum_timeout: u64,
    /// Seconds of the first-server election's lease: a winner that has not secured the join
    /// token, has not renewed its election record for this long and runs no k3s is replaced.
    /// Keep it well above a slow k3s start.
    #[arg(long, env = "K3S_ASG_ELECTION_LEASE", default_value_t = 300, global = true)]
    election_lease: u64,
    /// Seconds between a server's checks (in `run`) that the token parameter still holds its
    /// cluster's secure token; a missing or replaced token is republished.
    #[arg(long, env = "K3S_ASG_TOKEN_CHECK", default_value_t = 60, global = true)]
    token_check: u64,
    /// Seconds (±20 % jitter) between `run`'s reads of the cluster spec: added target groups are
    /// registered into, removed ones deregistered from (after connection draining), and a
    /// server's API record follows a renamed `api.hostname`.
    #[arg(long, env = "K3S_ASG_SPEC_CHECK", default_value_t = 60, global = true)]
    spec_check: u64,
    /// Seconds a server that holds its cluster's token waits, with no server of the cluster
    /// answering and none that could still come up, before it takes part in a recovery
    /// election (restore the newest etcd snapshot, or start a new cluster without one).
    #[arg(long, env = "K3S_ASG_RECOVERY_GRACE", default_value_t = 180, global = true)]
    recovery_grace: u64,
    /// Days after which a server replaces the published admin kubeconfig with its own (when
    /// they differ): k3s's client certificates last 365 days and k3s renews a server's own
    /// within 90 days of expiry.
    #[arg(long, env = "K3S_ASG_KUBECONFIG_MAX_AGE_DAYS", default_value_t = 275, global = true)]
    kubeconfig_max_age_days: u64,
    /// What to do on an EC2 rebalance recommendation: `ignore` or `leave`.
    #[arg(long, env = "K3S_ASG_ON_REBALANCE", default_value = "ignore", global = true, value_parser = ["ignore", "leave"])]
    on_rebalance: String,
    /// Log format: `text` or `json`.
    #[arg(long, env = "K3S_ASG_LOG_FORMAT", default_value = "text", global = true)]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Join, then stay until told to leave (the systemd service runs this).
    Run,
    /// Join the cluster once: configure and start k3s, wait until ready, publish, register.
    Join,
    /// Leave the cluster in order: deregister, remove the API record, drain, stop k3s.
    Leave,
    /// Show what the agent did on this host and where it stands.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime starts");
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("k3s-asg-agent: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("K3S_ASG_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn config(cli: &Cli) -> Result<AgentConfig> {
    Ok(AgentConfig {
        root: cli.root.clone(),
        tag_keys: TagKeys { cluster: cli.cluster_tag.clone(), role: cli.role_tag.clone() },
        prefix: Prefix::new(&cli.prefix).map_err(|why| Error::bad_input("read settings", "--prefix", why))?,
        join_timeout: Duration::from_secs(cli.join_timeout),
        ready_timeout: Duration::from_secs(cli.ready_timeout),
        leave_on_rebalance: cli.on_rebalance == "leave",
        quorum_timeout: Duration::from_secs(cli.quorum_timeout),
        election_lease: Duration::from_secs(cli.election_lease),
        recovery_grace: Duration::from_secs(cli.recovery_grace),
        kubeconfig_max_age: Duration::from_secs(cli.kubeconfig_max_age_days * 86_400),
        token_check: Duration::from_secs(cli.token_check.max(1)),
        spec_check: Duration::from_secs(cli.spec_check.max(1)),
        ..AgentConfig::default()
    })
}

async fn dispatch(cli: Cli) -> Result<()> {
    let cfg = config(&cli)?;
    let fs = effects::hostfs::HostFs::new(&cfg.root);
    match cli.command {
        Command::Status { json } => {
            let state = State::read(&fs)?;
            print!("{}", if json { crate::status::json(state.as_ref()) } else { crate::status::human(state.as_ref()) });
            Ok(())
        }
        Command::Join => {
            let fx = real_effects(&cfg).await?;
            run_join(&cfg, &fx).await
        }
        Command::Run => {
            let fx = real_effects(&cfg).await?;
            record_failure(&fx, crate::run::run(&cfg, &fx).await)
        }
        Command::Leave => {
            let fx = real_effects(&cfg).await?;
            let hurry = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            record_failure(&fx, crate::leave::leave(&cfg, &fx, &hurry, crate::state::Trigger::Command).await)
        }
    }
}

async fn run_join(cfg: &AgentConfig, fx: &Effects) -> Result<()> {
    let st = record_failure(fx, crate::join::join(cfg, fx).await)?;
    tracing::info!(instance = %st.instance_id, cluster = %st.cluster, "joined and registered");
    Ok(())
}

/// Notes a failure in the state file for `status`; a failed leave stays
/// `leaving` so that `run` finishes it when started again.
fn record_failure<T>(fx: &Effects, r: Result<T>) -> Result<T> {
    if let Err(e) = &r {
        if let Ok(Some(mut st)) = State::load(&fx.fs) {
            if st.phase != Phase::Leaving {
                st.phase = Phase::Failed;
            }
            st.last_error = Some(e.to_string());
            let _ = st.save(&fx.fs);
        }
    }
    r
}

/// Builds the real effects: the region comes from IMDS, clients from the environment.
pub async fn real_effects(cfg: &AgentConfig) -> Result<Effects> {
    let metadata = effects::metadata::Imds::from_env()?;
    let region = effects::metadata::required(&metadata, "placement/region")
        .await?
        .ok_or_else(|| Error::bad_input("read instance metadata", "/latest/meta-data/placement/region", "absent (IMDS answered 404)"))?;
    let sdk = k3s_asg_aws::clients::load(Some(region)).await;
    Ok(Effects {
        metadata: Box::new(metadata),
        instances: Box::new(k3s_asg_aws::ec2::Ec2(aws_sdk_ec2::Client::new(&sdk))),
        parameters: Box::new(effects::parameters::Ssm::new(&sdk)),
        zones: Box::new(k3s_asg_aws::route53::Route53(aws_sdk_route53::Client::new(&sdk))),
        target_groups: Box::new(k3s_asg_aws::elbv2::Elbv2::new(&sdk)),
        services: Box::new(effects::services::Systemctl { root: cfg.root.clone() }),
        k3s: Box::new(effects::k3s::K3sCli { root: cfg.root.clone() }),
        etcd: Box::new(effects::etcd::EtcdClient { root: cfg.root.clone(), port: effects::etcd::CLIENT_PORT }),
        lifecycle: Box::new(effects::lifecycle::AutoScaling(aws_sdk_autoscaling::Client::new(&sdk))),
        supervisor: Box::new(effects::supervisor::HttpsSupervisor { port: cfg.supervisor_port }),
        probes: Box::new(effects::probes::HttpProbes),
        snapshots: Box::new(effects::snapshots::S3 { sdk: sdk.clone() }),
        fs: effects::hostfs::HostFs::new(&cfg.root),
    })
}
