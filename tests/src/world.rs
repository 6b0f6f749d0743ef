//! An emulated region: moto behind the recorder, clusters (hosted zone, target
//! group, SSM spec, CA), fake instances in a 127.x.0.0/16 VPC, and runs of the
//! real agent binary against them.

use crate::http::{serve, Served};
use crate::imds::ImdsDouble;
use crate::lifecycle::LifecycleDouble;
use crate::moto::Moto;
use crate::recorder::Recorder;
use crate::supervisor::SupervisorDouble;
use anyhow::Context;
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::Arc;

pub const REGION: &str = "us-east-1";
pub const ZONE_NAME: &str = "example.com";
static NEXT_NET: AtomicU32 = AtomicU32::new(0);
/// The port of 127.N.0.1 a world listens on to claim its 127.N network (no instance double
/// serves on it: the supervisor doubles take 6443, the coordinator's health doubles 80).
const NET_CLAIM_PORT: u16 = 6442;

/// A second octet for a new world's 127.N.0.0/16 (N in 20..=249), with the claim on it that
/// the world holds for its lifetime. Candidates come from a counter, offset by the process id
/// so that processes start apart; the claim is a listener on 127.N.0.1:NET_CLAIM_PORT, which
/// only one socket at a time can hold. So two worlds never share a network, in one process
/// (several tests of a binary) or in two (a test run by hand beside `scripts/test`, the demo):
/// a network claimed elsewhere is skipped, and the kernel frees the claim when the world is
/// dropped or its process dies.
fn claim_net() -> anyhow::Result<(u8, std::net::TcpListener)> {
    for _ in 0..230 {
        let n = NEXT_NET.fetch_add(1, Ordering::SeqCst);
        let net = (20 + (std::process::id() * 7 + n) % 230) as u8;
        match std::net::TcpListener::bind((std::net::Ipv4Addr::new(127, net, 0, 1), NET_CLAIM_PORT)) {
            Ok(claim) => return Ok((net, claim)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e).with_context(|| format!("claim 127.{net}.0.0/16 (listen on 127.{net}.0.1:{NET_CLAIM_PORT})")),
        }
    }
    anyhow::bail!("every 127.N.0.0/16 of the test bed (N = 20..=249) is claimed: port {NET_CLAIM_PORT} is in use on each 127.N.0.1")
}

pub struct Cluster {
    pub name: String,
    pub zone_id: String,
    pub hostname: String,
    pub target_group_arn: String,
}

pub struct Instance {
    pub id: String,
    pub ip: String,
    pub cluster: String,
    pub role: String,
    pub root: PathBuf,
    pub imds: ImdsDouble,
    _supervisor: Option<SupervisorDouble>,
}

impl Instance {
    /// Lines of the stub call log: `ms \t program \t args`.
    pub fn stub_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.root.join("run/k3s-stub/calls.log")).map(|s| s.lines().map(str::to_string).collect()).unwrap_or_default()
    }

    /// When (Unix ms) the first stub call containing `needle` was made.
    pub fn stub_call_at(&self, needle: &str) -> Option<u128> {
        self.stub_calls().iter().find(|l| l.contains(needle)).and_then(|l| l.split('\t').next()?.parse().ok())
    }

    /// Forgets the stub calls so far (to look at one phase alone).
    pub fn clear_stub_calls(&self) {
        let _ = std::fs::remove_file(self.root.join("run/k3s-stub/calls.log"));
    }

    pub fn file(&self, host_path: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(host_path.trim_start_matches('/'))).ok()
    }

    pub fn path(&self, host_path: &str) -> PathBuf {
        self.root.join(host_path.trim_start_matches('/'))
    }

    /// The etcd members as this server's own member sees them, `(member name, is a learner)`;
    /// empty when its member does not answer.
    pub fn etcd_members(&self) -> Vec<(String, bool)> {
        let out = self.etcd(&["members"]);
        let list: Vec<serde_json::Value> = serde_json::from_str(out.trim()).unwrap_or_default();
        list.iter().map(|m| (m["name"].as_str().unwrap_or_default().to_string(), m["isLearner"].as_bool().unwrap_or(false))).collect()
    }

    /// The Node objects in the cluster's etcd, as kubectl on this host sees them: `(name, Ready)`.
    pub fn nodes(&self) -> Vec<(String, bool)> {
        self.etcd(&["nodes"]).lines().filter_map(|l| l.split_once(' ')).map(|(n, r)| (n.to_string(), r == "True")).collect()
    }

    /// The host's k3s dies hard (a crash, a lost instance): the unit is no longer active and
    /// its etcd member is killed (SIGKILL, by the stub's watcher). Returns once etcd is gone.
    pub async fn kill_k3s(&self) {
        let _ = std::fs::remove_file(self.path("/run/k3s-stub/active-k3s"));
        let Some(pid) = self.file("/run/k3s-stub/etcd.pid") else { return };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !process_gone(&pid) {
            assert!(std::time::Instant::now() < deadline, "the stub's etcd of {} did not die", self.id);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// When (Unix ms) the stub's etcd logged a line containing `needle` on this host.
    pub fn etcd_log_at(&self, needle: &str) -> Option<u128> {
        let log = self.file("/run/k3s-stub/etcd.log")?;
        log.lines().find(|l| l.contains(needle)).and_then(|l| l.split(' ').next()?.parse::<f64>().ok()).map(|s| (s * 1000.0) as u128)
    }

    /// Writes `key` = `value` into the cluster's etcd through this host's API server.
    pub fn etcd_put(&self, key: &str, value: &str) {
        self.etcd(&["put", key, value]);
    }

    /// The value of `key` in the cluster's etcd read through this host's API server (a
    /// linearizable read: it needs a quorum); empty when absent or unreadable.
    pub fn etcd_get(&self, key: &str) -> String {
        self.etcd(&["get", key])
    }

    /// This host's k3s config (`/etc/rancher/k3s/config.yaml`); empty when there is none.
    pub fn k3s_config(&self) -> String {
        self.file("/etc/rancher/k3s/config.yaml").unwrap_or_default()
    }

    /// `kubectl delete node/NAME` as this host (a server): k3s removes a server Node's etcd
    /// member (asynchronously, as its controller does).
    pub fn delete_node(&self, name: &str) {
        self.etcd(&["delete-node", name]);
    }

    /// Runs the stub's etcd helper (tests/stubs/k3s_etcd.py) as this host; its stdout.
    fn etcd(&self, args: &[&str]) -> String {
        stub_etcd(&self.root, args)
    }

    /// The access key id this instance's agent signs with (the recorder's caller).
    pub fn access_key(&self) -> String {
        access_key_for(&self.id)
    }
}

/// Whether the process `pid` (as a pid file holds it) is gone, or a zombie nobody has reaped yet.
pub fn process_gone(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).map_or(true, |s| s.split_whitespace().nth(2) == Some("Z"))
}

fn access_key_for(id: &str) -> String {
    format!("AKIA{}", id.trim_start_matches("i-").to_ascii_uppercase())
}

pub struct AgentRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl AgentRun {
    fn from(out: Output) -> Self {
        AgentRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The run itself when it exited 0; otherwise an error with everything it printed.
    pub fn success(self) -> anyhow::Result<AgentRun> {
        anyhow::ensure!(self.code == 0, "exit {}:\nstdout:\n{}\nstderr:\n{}", self.code, self.stdout, self.stderr);
        Ok(self)
    }
}

/// An agent running in the background.
pub struct Running {
    child: tokio::process::Child,
    scan: SecretScan,
}

/// Every captured output of the agent and the coordinator is searched for the secrets the
/// world holds at that moment (join token, kubeconfigs and their key lines, the drain
/// service-account token), and every secret-bearing file the agent writes must be 0600.
/// A leak fails the test that ran the program, whatever that test is about.
#[derive(Clone)]
pub struct SecretScan {
    ssm: aws_sdk_ssm::Client,
    parameters: Vec<String>,
    roots: Vec<PathBuf>,
}

/// Files the agent writes that hold secrets.
const SECRET_FILES: [&str; 2] = ["etc/rancher/k3s/config.yaml", "var/lib/k3s-asg/drain.kubeconfig"];

impl SecretScan {
    /// Panics naming `label` when a secret is in one of `outputs` or a secret file is not 0600.
    pub async fn check(&self, label: &str, outputs: &[&str]) {
        use std::os::unix::fs::PermissionsExt;
        let mut values = Vec::new();
        for chunk in self.parameters.chunks(10) {
            // Straight to moto (not through the recorder); skipped while IAM is enforced.
            let Ok(resp) = self.ssm.get_parameters().set_names(Some(chunk.to_vec())).with_decryption(true).send().await else { return };
            values.extend(resp.parameters().iter().map(|p| p.value().map(str::to_string)));
        }
        let roots: Vec<&Path> = self.roots.iter().map(PathBuf::as_path).collect();
        let secrets = secrets_of(&values, &roots);
        for out in outputs {
            for s in &secrets {
                assert!(!out.contains(s.as_str()), "{label}: a secret ({} characters) leaked into the output", s.len());
            }
        }
        for root in &self.roots {
            for f in SECRET_FILES {
                if let Ok(meta) = std::fs::metadata(root.join(f)) {
                    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{label}: {f} must be 0600");
                }
            }
        }
    }
}

impl Running {
    pub fn sigterm(&self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
    }

    /// Sends SIGTERM and waits (bounded) for the agent to exit.
    pub async fn stop(self, limit: std::time::Duration) -> anyhow::Result<AgentRun> {
        self.sigterm();
        self.wait(limit).await
    }

    /// Waits (bounded) for the agent to exit; its output is scanned for secrets.
    pub async fn wait(self, limit: std::time::Duration) -> anyhow::Result<AgentRun> {
        let out = tokio::time::timeout(limit, self.child.wait_with_output()).await.context("agent did not exit in time")??;
        let run = AgentRun::from(out);
        self.scan.check("background run", &[&run.stdout, &run.stderr]).await;
        Ok(run)
    }
}

pub struct World {
    pub moto: Moto,
    /// Route53's own moto server, when the world was built with one.
    pub dns_moto: Option<Moto>,
    pub recorder: Recorder,
    pub asg: LifecycleDouble,
    pub ec2: aws_sdk_ec2::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub route53: aws_sdk_route53::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub net: u8,
    /// Held for the world's lifetime: no other world, in this process or another, takes `net`.
    _net_claim: std::net::TcpListener,
    pub vpc_id: String,
    pub subnet_id: String,
    zone_id: String,
    pub readiness_status: Arc<AtomicU16>,
    readiness: Served,
    pub dir: tempfile::TempDir,
    pub clusters: BTreeMap<String, Cluster>,
    /// Extra environment for every agent run.
    pub agent_env: BTreeMap<String, String>,
    /// Extra environment for every coordinator run (applied last, so it can override).
    pub coordinator_env: BTreeMap<String, String>,
}

async fn create_subnet(ec2: &aws_sdk_ec2::Client, vpc_id: &str, cidr: &str, az_letter: &str) -> anyhow::Result<String> {
    Ok(ec2
        .create_subnet()
        .vpc_id(vpc_id)
        .cidr_block(cidr)
        .availability_zone(format!("{REGION}{az_letter}"))
        .send()
        .await?
        .subnet()
        .and_then(|s| s.subnet_id())
        .context("subnet id")?
        .to_string())
}

/// The coordinator binary: `K3S_ASG_COORDINATOR_BIN`, else `target/debug/k3s-asg-coordinator`.
pub fn coordinator_bin() -> PathBuf {
    std::env::var_os("K3S_ASG_COORDINATOR_BIN").map(PathBuf::from).unwrap_or_else(|| crate::repo_root().join("target/debug/k3s-asg-coordinator"))
}

/// The agent binary: `K3S_ASG_AGENT_BIN`, else `target/debug/k3s-asg-agent`.
pub fn agent_bin() -> PathBuf {
    std::env::var_os("K3S_ASG_AGENT_BIN").map(PathBuf::from).unwrap_or_else(|| crate::repo_root().join("target/debug/k3s-asg-agent"))
}

impl World {
    pub async fn new() -> anyhow::Result<World> {
        Self::build(false).await
    }

    /// A new world with one cluster, `name`.
    pub async fn with_cluster(name: &str) -> anyhow::Result<World> {
        Self::with_clusters(&[name]).await
    }

    /// A new world with the clusters `names`.
    pub async fn with_clusters(names: &[&str]) -> anyhow::Result<World> {
        let mut w = Self::new().await?;
        for name in names {
            w.create_cluster(name).await?;
        }
        Ok(w)
    }

    /// A new world with the clusters `names` and the region's ALB (listener on 443, quota 100): `(world, listener ARN)`.
    pub async fn with_alb(names: &[&str]) -> anyhow::Result<(World, String)> {
        let w = Self::with_clusters(names).await?;
        let (_alb, listener) = w.create_alb(443, 100).await?;
        Ok((w, listener))
    }

    /// A world whose Route53 lives in a second moto server (for the IAM test: moto's
    /// signature check fails every Route53 call, so Route53 stays outside enforcement).
    pub async fn with_separate_route53() -> anyhow::Result<World> {
        Self::build(true).await
    }

    async fn build(separate_route53: bool) -> anyhow::Result<World> {
        let moto = Moto::start().await?;
        let recorder = Recorder::start(moto.url()).await?;
        let asg = LifecycleDouble::start().await?;
        recorder.route("autoscaling", asg.url());
        let dns_moto = if separate_route53 { Some(Moto::start().await?) } else { None };
        if let Some(dns) = &dns_moto {
            recorder.route("route53", dns.url());
        }
        let creds = aws_sdk_ec2::config::Credentials::new("AKIATESTBED", "testbed-secret", None, None, "testbed");
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(moto.url())
            .credentials_provider(creds)
            .load()
            .await;
        let ec2 = aws_sdk_ec2::Client::new(&sdk);
        let (net, net_claim) = claim_net()?;
        let vpc_id =
            ec2.create_vpc().cidr_block(format!("127.{net}.0.0/16")).send().await?.vpc().and_then(|v| v.vpc_id()).context("vpc id")?.to_string();
        let subnet_id = create_subnet(&ec2, &vpc_id, &format!("127.{net}.0.0/20"), "a").await?;
        let route53 = match &dns_moto {
            Some(dns) => aws_sdk_route53::Client::from_conf(aws_sdk_route53::config::Builder::from(&sdk).endpoint_url(dns.url()).build()),
            None => aws_sdk_route53::Client::new(&sdk),
        };
        let zone = route53.create_hosted_zone().name(ZONE_NAME).caller_reference(format!("testbed-{net}")).send().await?;
        let zone_id = zone.hosted_zone().context("zone")?.id().trim_start_matches("/hostedzone/").to_string();
        let readiness_status = Arc::new(AtomicU16::new(200));
        let st = readiness_status.clone();
        let router = axum::Router::new().route(
            "/ping",
            axum::routing::get(move || {
                let st = st.clone();
                async move { axum::http::StatusCode::from_u16(st.load(Ordering::SeqCst)).unwrap() }
            }),
        );
        let readiness = serve("127.0.0.1:0", router).await?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("aws-config"), "")?;
        Ok(World {
            ssm: aws_sdk_ssm::Client::new(&sdk),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&sdk),
            route53,
            ec2,
            moto,
            dns_moto,
            recorder,
            asg,
            net,
            _net_claim: net_claim,
            vpc_id,
            subnet_id,
            zone_id,
            readiness_status,
            readiness,
            dir,
            clusters: BTreeMap::new(),
            agent_env: BTreeMap::new(),
            coordinator_env: BTreeMap::new(),
        })
    }

    pub fn readiness_url(&self) -> String {
        format!("{}/ping", self.readiness.url())
    }

    /// The spec the test bed gives a cluster unless a test writes its own.
    pub fn default_spec(&self, cluster: &Cluster) -> serde_json::Value {
        serde_json::json!({
            "api": { "hostname": cluster.hostname, "hosted_zone_id": cluster.zone_id, "ttl": 30, "address": "private" },
            "target_groups": [ { "arn": cluster.target_group_arn, "port": 80, "roles": ["node", "control-plane"], "ingress": true } ],
            "readiness": [ { "http": self.readiness_url(), "expect_status": 200 } ],
            "k3s": { "server": { "disable": ["servicelb"] }, "agent": {} },
            "drain": { "timeout_s": 60, "grace_period_s": 30 }
        })
    }

    /// Creates a cluster's AWS side (target group, SSM spec) and its CA.
    pub async fn create_cluster(&mut self, name: &str) -> anyhow::Result<&Cluster> {
        let tg = self
            .elb
            .create_target_group()
            .name(format!("{name}-ingress"))
            .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
            .port(80)
            .vpc_id(&self.vpc_id)
            .target_type(aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Instance)
            .send()
            .await?;
        let arn = tg.target_groups()[0].target_group_arn().context("tg arn")?.to_string();
        let cluster = Cluster {
            name: name.to_string(),
            zone_id: self.zone_id.clone(),
            hostname: format!("api.{name}.{REGION}.{ZONE_NAME}"),
            target_group_arn: arn,
        };
        let spec = self.default_spec(&cluster);
        self.clusters.insert(name.to_string(), cluster);
        self.put_spec(name, &spec.to_string()).await?;
        Ok(&self.clusters[name])
    }

    pub async fn put_spec(&self, cluster: &str, json: &str) -> anyhow::Result<()> {
        self.put_param(&format!("/k3s-asg/clusters/{cluster}/config"), json).await
    }

    /// Launches a fake instance tagged for `cluster` and `role` (either may be
    /// absent or anything, for bad-input tests) with its IMDS double and, for a
    /// control-plane instance, its supervisor double.
    pub async fn launch_tagged(&self, tags: &[(&str, &str)], cluster: Option<&str>) -> anyhow::Result<Instance> {
        let mut spec = TagSpecification::builder().resource_type(ResourceType::Instance);
        for (k, v) in tags {
            spec = spec.tags(Tag::builder().key(*k).value(*v).build());
        }
        let resp = self
            .ec2
            .run_instances()
            .image_id("ami-12c6146b")
            .min_count(1)
            .max_count(1)
            .subnet_id(&self.subnet_id)
            .tag_specifications(spec.build())
            .send()
            .await?;
        let inst = &resp.instances()[0];
        let id = inst.instance_id().context("instance id")?.to_string();
        let ip = inst.private_ip_address().context("private ip")?.to_string();
        let root = self.dir.path().join(&id);
        std::fs::create_dir_all(&root)?;
        // The stub k3s finds the server a joining server names by its address (etcd's replication).
        std::fs::create_dir_all(self.dir.path().join("hosts"))?;
        std::os::unix::fs::symlink(&root, self.dir.path().join("hosts").join(&ip))?;
        let values: BTreeMap<String, String> = [
            ("instance-id", id.clone()),
            ("instance-type", "t3.medium".to_string()),
            ("placement/region", REGION.to_string()),
            ("placement/availability-zone", format!("{REGION}a")),
            ("local-ipv4", ip.clone()),
            ("hostname", format!("ip-{}.ec2.internal", ip.replace('.', "-"))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let tag_map: BTreeMap<String, String> = tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let imds = ImdsDouble::start(values, Some(tag_map.clone())).await?;
        let role = tag_map.get("Role").cloned().unwrap_or_default();
        let supervisor = match (cluster.and_then(|c| self.clusters.get(c)), role.as_str()) {
            (Some(_), "control-plane") => Some(SupervisorDouble::start(&ip, 6443, root.clone()).await?),
            _ => None,
        };
        Ok(Instance { id, ip, cluster: cluster.unwrap_or_default().to_string(), role, root, imds, _supervisor: supervisor })
    }

    pub async fn launch(&self, cluster: &str, role: &str) -> anyhow::Result<Instance> {
        self.launch_tagged(&[("Cluster", cluster), ("Role", role)], Some(cluster)).await
    }

    /// Launches an instance of `cluster` in `role` and joins it (the join must exit 0).
    pub async fn joined(&self, cluster: &str, role: &str) -> anyhow::Result<Instance> {
        let inst = self.launch(cluster, role).await?;
        self.agent(&inst, &["join"]).await?.success()?;
        Ok(inst)
    }

    /// Launches `n` control-plane instances of `cluster` (none joined yet).
    pub async fn servers(&self, cluster: &str, n: usize) -> anyhow::Result<Vec<Instance>> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.launch(cluster, "control-plane").await?);
        }
        Ok(out)
    }

    /// The ARN of `cluster`'s target group.
    pub fn target_group(&self, cluster: &str) -> String {
        self.clusters[cluster].target_group_arn.clone()
    }

    /// Runs `k3s-asg-agent ARGS` on every instance at once; every run must exit 0.
    pub async fn agents_at_once<'a>(&self, insts: impl IntoIterator<Item = &'a Instance>, args: &[&str]) -> anyhow::Result<Vec<AgentRun>> {
        crate::join_all(insts.into_iter().map(|i| self.agent(i, args)).collect()).await.into_iter().map(|r| r?.success()).collect()
    }

    /// Starts `run` on `inst` in the background and waits until its state says Ready.
    pub async fn run_until_ready(&self, inst: &Instance) -> anyhow::Result<Running> {
        let agent = self.spawn_agent(inst, &["run"])?;
        crate::check::wait_for_phase(inst, k3s_asg_agent::state::Phase::Ready).await;
        Ok(agent)
    }

    /// Runs `k3s-asg-agent ARGS` as `inst` would: its IMDS, its root, the stubs on PATH.
    pub async fn agent(&self, inst: &Instance, args: &[&str]) -> anyhow::Result<AgentRun> {
        let out = self.agent_command(inst, args).output().await.with_context(|| format!("run {}", agent_bin().display()))?;
        let run = AgentRun::from(out);
        self.secret_scan(Some(inst)).check(&format!("k3s-asg-agent {}", args.join(" ")), &[&run.stdout, &run.stderr]).await;
        Ok(run)
    }

    /// The secrets of `inst`'s cluster (every cluster when None) and its root.
    pub fn secret_scan(&self, inst: Option<&Instance>) -> SecretScan {
        let clusters: Vec<&String> = match inst {
            Some(i) => vec![&i.cluster],
            None => self.clusters.keys().collect(),
        };
        let parameters = clusters
            .iter()
            .flat_map(|c| ["token", "agent-token", "kubeconfig/admin", "kubeconfig/drain"].map(|p| format!("/k3s-asg/clusters/{c}/{p}")))
            .collect();
        SecretScan { ssm: self.ssm.clone(), parameters, roots: inst.map(|i| vec![i.root.clone()]).unwrap_or_default() }
    }

    fn agent_command(&self, inst: &Instance, args: &[&str]) -> tokio::process::Command {
        self.host_command(inst, agent_bin().as_os_str(), args)
    }

    /// An operator's command on the host (`systemctl`, `k3s`: the stubs, found on the host's
    /// PATH as the agent finds them), with the host's environment; its output, bounded.
    pub async fn on_host(&self, inst: &Instance, argv: &[&str]) -> anyhow::Result<AgentRun> {
        let stub = crate::repo_root().join("tests/stubs").join(argv[0]);
        let program = if stub.exists() { stub.into_os_string() } else { argv[0].into() };
        let mut cmd = self.host_command(inst, &program, &argv[1..]);
        let out = tokio::time::timeout(std::time::Duration::from_secs(120), cmd.output()).await.context("host command did not finish in time")??;
        Ok(AgentRun::from(out))
    }

    fn host_command(&self, inst: &Instance, program: &std::ffi::OsStr, args: &[&str]) -> tokio::process::Command {
        let stubs = crate::repo_root().join("tests/stubs");
        let path = format!("{}:{}", stubs.display(), std::env::var("PATH").unwrap_or_default());
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.dir.path())
            .env("AWS_ENDPOINT_URL", self.recorder.url())
            .env("AWS_ACCESS_KEY_ID", inst.access_key())
            // k3s's view of the instance role and of S3 (tests/stubs/k3s_s3.py).
            .env("K3S_STUB_AWS_ACCESS_KEY_ID", inst.access_key())
            .env("K3S_STUB_AWS_SECRET_ACCESS_KEY", "testbed-secret")
            .env("K3S_STUB_S3_ENDPOINT", self.recorder.url())
            .env("AWS_SECRET_ACCESS_KEY", "testbed-secret")
            .env("AWS_CONFIG_FILE", self.dir.path().join("aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.dir.path().join("aws-config"))
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", inst.imds.url())
            .env("K3S_ASG_ROOT", &inst.root)
            .env("K3S_STUB_HOSTS", self.dir.path().join("hosts"))
            .env("K3S_STUB_PYTHON", crate::repo_root().join(".venv/bin/python"))
            // The stub's etcd members end with the test process that owns this world.
            .env("K3S_STUB_OWNER", std::process::id().to_string())
            .env("K3S_ASG_JOIN_TIMEOUT", "60")
            .env("K3S_ASG_READY_TIMEOUT", "20")
            .env("K3S_ASG_LOG", "info");
        for (k, v) in &self.agent_env {
            cmd.env(k, v);
        }
        cmd.kill_on_drop(true);
        cmd
    }

    /// Starts `k3s-asg-agent ARGS` in the background (for `run`); signal it with [`Running::sigterm`].
    pub fn spawn_agent(&self, inst: &Instance, args: &[&str]) -> anyhow::Result<Running> {
        let mut cmd = self.agent_command(inst, args);
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        Ok(Running { child: cmd.spawn()?, scan: self.secret_scan(Some(inst)) })
    }

    /// Creates the region's shared ALB with one listener on `port` and writes the region spec.
    pub async fn create_alb(&self, port: u16, rules_quota: u32) -> anyhow::Result<(String, String)> {
        self.create_alb_in("/k3s-asg", 0, port, rules_quota).await
    }

    /// The ALB of installation `nth` (0, 1, …) whose parameters live under `prefix`: its own load
    /// balancer and subnet, its region spec `{prefix}/regions/{region}`.
    pub async fn create_alb_in(&self, prefix: &str, nth: u8, port: u16, rules_quota: u32) -> anyhow::Result<(String, String)> {
        let second = create_subnet(&self.ec2, &self.vpc_id, &format!("127.{}.{}.0/20", self.net, 16 * (nth + 1)), "b").await?;
        let name = if nth == 0 { "shared".to_string() } else { format!("shared-{nth}") };
        let lb = self.elb.create_load_balancer().name(name).subnets(&self.subnet_id).subnets(second).send().await?;
        let alb = lb.load_balancers()[0].load_balancer_arn().context("alb arn")?.to_string();
        use aws_sdk_elasticloadbalancingv2::types::{Action, ActionTypeEnum, FixedResponseActionConfig, ProtocolEnum};
        let listener = self
            .elb
            .create_listener()
            .load_balancer_arn(&alb)
            .protocol(ProtocolEnum::Http)
            .port(port as i32)
            .default_actions(
                Action::builder()
                    .r#type(ActionTypeEnum::FixedResponse)
                    .fixed_response_config(FixedResponseActionConfig::builder().status_code("404").build())
                    .build(),
            )
            .send()
            .await?;
        let listener = listener.listeners()[0].listener_arn().context("listener arn")?.to_string();
        let spec = serde_json::json!({ "alb_arn": alb, "listener_arns": [listener], "zone": ZONE_NAME, "rules_quota": rules_quota });
        self.put_param(&format!("{prefix}/regions/{REGION}"), &spec.to_string()).await?;
        Ok((alb, listener))
    }

    /// Writes the endpoint spec `{prefix}/endpoints/{name}`; `hosted_zone_id` defaults to the world's zone.
    pub async fn put_endpoint(&self, name: &str, mut spec: serde_json::Value) -> anyhow::Result<()> {
        if spec.get("hosted_zone_id").is_none() {
            spec["hosted_zone_id"] = self.zone_id.clone().into();
        }
        self.put_param(&format!("/k3s-asg/endpoints/{name}"), &spec.to_string()).await
    }

    pub async fn put_param(&self, name: &str, value: &str) -> anyhow::Result<()> {
        self.ssm.put_parameter().name(name).value(value).r#type(aws_sdk_ssm::types::ParameterType::String).overwrite(true).send().await?;
        Ok(())
    }

    pub fn zone_id(&self) -> &str {
        &self.zone_id
    }

    /// Runs `k3s-asg-coordinator ARGS` against the recorder.
    pub async fn coordinator(&self, args: &[&str]) -> anyhow::Result<AgentRun> {
        let out = self.coordinator_command(args).output().await.with_context(|| format!("run {}", coordinator_bin().display()))?;
        let run = AgentRun::from(out);
        // `kubeconfig` prints the admin kubeconfig to stdout on purpose; its log must still be clean.
        let outputs: Vec<&str> = if args.first() == Some(&"kubeconfig") { vec![&run.stderr] } else { vec![&run.stdout, &run.stderr] };
        self.secret_scan(None).check(&format!("k3s-asg-coordinator {}", args.join(" ")), &outputs).await;
        Ok(run)
    }

    /// The coordinator as the Lambda service would start it: no arguments, the runtime API in the environment.
    pub fn spawn_coordinator_lambda(&self, runtime_api: &str) -> anyhow::Result<Running> {
        let mut cmd = self.coordinator_command(&[]);
        cmd.env("AWS_LAMBDA_RUNTIME_API", runtime_api)
            .env("AWS_LAMBDA_FUNCTION_NAME", "k3s-asg-coordinator")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_LOG_FORMAT", "json")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        Ok(Running { child: cmd.spawn()?, scan: self.secret_scan(None) })
    }

    fn coordinator_command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(coordinator_bin());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AWS_ENDPOINT_URL", self.recorder.url())
            .env("AWS_ACCESS_KEY_ID", "AKIACOORDINATOR")
            .env("AWS_SECRET_ACCESS_KEY", "testbed-secret")
            .env("AWS_CONFIG_FILE", self.dir.path().join("aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.dir.path().join("aws-config"))
            .env("AWS_REGION", REGION)
            .kill_on_drop(true);
        for (k, v) in &self.coordinator_env {
            // An empty value unsets the variable.
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        cmd
    }

    /// Starts `k3s-asg-coordinator ARGS` in the background (for `run`).
    pub fn spawn_coordinator(&self, args: &[&str]) -> anyhow::Result<Running> {
        let mut cmd = self.coordinator_command(args);
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        Ok(Running { child: cmd.spawn()?, scan: self.secret_scan(None) })
    }

    /// The non-default rules of a listener, as ELBv2 describes them.
    pub async fn rules(&self, listener: &str) -> anyhow::Result<Vec<aws_sdk_elasticloadbalancingv2::types::Rule>> {
        let resp = self.elb.describe_rules().listener_arn(listener).send().await?;
        Ok(resp.rules().iter().filter(|r| r.is_default() != Some(true)).cloned().collect())
    }

    /// Every host-header value of a listener's rules, sorted (duplicates kept, so tests can find them).
    pub async fn rule_hosts(&self, listener: &str) -> anyhow::Result<Vec<String>> {
        let mut hosts: Vec<String> = self.rules(listener).await?.iter().flat_map(rule_hosts).collect();
        hosts.sort();
        Ok(hosts)
    }

    /// `(SetIdentifier, values)` of the A records under the cluster's API hostname.
    pub async fn api_records(&self, cluster: &str) -> anyhow::Result<Vec<(String, Vec<String>)>> {
        let c = &self.clusters[cluster];
        let want = format!("{}.", c.hostname);
        let resp = self.route53.list_resource_record_sets().hosted_zone_id(&c.zone_id).send().await?;
        let mut out: Vec<(String, Vec<String>)> = resp
            .resource_record_sets()
            .iter()
            .filter(|r| r.name() == want && r.r#type().as_str() == "A")
            .map(|r| (r.set_identifier().unwrap_or_default().to_string(), r.resource_records().iter().map(|v| v.value().to_string()).collect()))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Instance ids registered in a target group.
    pub async fn members(&self, tg_arn: &str) -> anyhow::Result<Vec<String>> {
        let resp = self.elb.describe_target_health().target_group_arn(tg_arn).send().await?;
        let mut ids: Vec<String> =
            resp.target_health_descriptions().iter().filter_map(|d| d.target().and_then(|t| t.id()).map(str::to_string)).collect();
        ids.sort();
        Ok(ids)
    }

    pub async fn param(&self, name: &str) -> anyhow::Result<Option<String>> {
        match self.ssm.get_parameter().name(name).with_decryption(true).send().await {
            Ok(r) => Ok(r.parameter().and_then(|p| p.value()).map(str::to_string)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_parameter_not_found()) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// An S3 client of the world's moto (path-style, as a local endpoint needs).
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let creds = aws_sdk_s3::config::Credentials::new("AKIATESTBED", "testbed-secret", None, None, "testbed");
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(REGION))
            .endpoint_url(self.moto.url())
            .credentials_provider(creds)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// Creates a bucket and turns snapshots on in `cluster`'s spec (folder `clusters/{cluster}`).
    pub async fn enable_snapshots(&self, cluster: &str, bucket: &str) -> anyhow::Result<()> {
        let s3 = self.s3();
        if s3.head_bucket().bucket(bucket).send().await.is_err() {
            s3.create_bucket().bucket(bucket).send().await?;
        }
        let mut spec = self.default_spec(&self.clusters[cluster]);
        spec["snapshots"] =
            serde_json::json!({ "bucket": bucket, "folder": format!("clusters/{cluster}"), "schedule": "*/5 * * * *", "retention": 5 });
        self.put_spec(cluster, &spec.to_string()).await
    }

    /// The snapshot objects of `cluster` in `bucket`, oldest first: (name, content).
    pub async fn snapshots(&self, cluster: &str, bucket: &str) -> anyhow::Result<Vec<(String, String)>> {
        let s3 = self.s3();
        let prefix = format!("clusters/{cluster}/");
        let listed = s3.list_objects_v2().bucket(bucket).prefix(&prefix).send().await?;
        let mut objs: Vec<_> = listed.contents().to_vec();
        objs.sort_by_key(|o| o.last_modified().map(|t| t.as_nanos()));
        let mut out = Vec::new();
        for o in objs {
            let key = o.key().unwrap_or_default().to_string();
            // k3s's retention may prune an object between the listing and the read: skip it.
            let got = match s3.get_object().bucket(bucket).key(&key).send().await {
                Ok(got) => got,
                Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => continue,
                Err(e) => return Err(e.into()),
            };
            let body = got.body.collect().await?.into_bytes();
            out.push((key.trim_start_matches(&prefix).to_string(), String::from_utf8_lossy(&body).into_owned()));
        }
        Ok(out)
    }

    pub async fn terminate(&self, inst: &Instance) -> anyhow::Result<()> {
        self.ec2.terminate_instances().instance_ids(&inst.id).send().await?;
        Ok(())
    }

    pub async fn running(&self) -> anyhow::Result<Vec<String>> {
        let resp = self.ec2.describe_instances().filters(Filter::builder().name("instance-state-name").values("running").build()).send().await?;
        Ok(resp.reservations().iter().flat_map(|r| r.instances()).filter_map(|i| i.instance_id().map(str::to_string)).collect())
    }
}

impl Drop for World {
    /// The stub's etcd members (and the processes that watch them) end with the world.
    fn drop(&mut self) {
        let Ok(hosts) = std::fs::read_dir(self.dir.path().join("hosts")) else { return };
        // K3S_TESTBED_KEEP=DIR: each host's stub logs are copied there (to debug a failure).
        let keep = std::env::var_os("K3S_TESTBED_KEEP").map(PathBuf::from);
        for host in hosts.flatten() {
            if let Some(keep) = &keep {
                let to = keep.join(host.file_name());
                let _ = std::fs::create_dir_all(&to);
                for f in ["etcd.log", "etcd-server.log", "calls.log"] {
                    let _ = std::fs::copy(host.path().join("run/k3s-stub").join(f), to.join(f));
                }
            }
            let stub = host.path().join("run/k3s-stub");
            for (file, group) in [("starter.pid", false), ("watcher.pid", false), ("etcd.pid", true), ("snapshotter.pid", false)] {
                if let Some(pid) = std::fs::read_to_string(stub.join(file)).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
                    let target = if group { format!("-{pid}") } else { pid.to_string() };
                    let _ = std::process::Command::new("kill").args(["-KILL", "--", &target]).stderr(std::process::Stdio::null()).status();
                }
            }
        }
    }
}

/// Every host-header value of the rule.
pub fn rule_hosts(rule: &aws_sdk_elasticloadbalancingv2::types::Rule) -> Vec<String> {
    rule.conditions().iter().filter_map(|c| c.host_header_config()).flat_map(|h| h.values().to_vec()).collect()
}

/// The rule whose host-header condition holds `host`.
pub fn rule_for_host<'a>(
    rules: &'a [aws_sdk_elasticloadbalancingv2::types::Rule],
    host: &str,
) -> Option<&'a aws_sdk_elasticloadbalancingv2::types::Rule> {
    rules.iter().find(|r| rule_hosts(r).iter().any(|h| h == host))
}

/// Every secret an instance's run could leak: the cluster token, kubeconfig material.
pub fn secrets_of(world_params: &[Option<String>], roots: &[&Path]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in world_params.iter().flatten() {
        out.push(p.clone());
        if let Some((_, pw)) = p.rsplit_once("::server:") {
            out.push(pw.to_string());
        }
        for line in p.lines() {
            for key in ["token:", "client-key-data:"] {
                if let Some(v) = line.trim().strip_prefix(key) {
                    out.push(v.trim().to_string());
                }
            }
        }
    }
    for root in roots {
        if let Ok(t) = std::fs::read_to_string(root.join("run/k3s-stub/sa-token")) {
            out.push(t.trim().to_string());
        }
    }
    out.retain(|s| s.len() >= 8);
    out
}

/// Runs the stub's etcd helper (tests/stubs/k3s_etcd.py) as the host at `root`; its stdout.
pub fn stub_etcd(root: &std::path::Path, args: &[&str]) -> String {
    let hosts = root.parent().map(|d| d.join("hosts")).unwrap_or_default();
    let out = std::process::Command::new(crate::repo_root().join(".venv/bin/python"))
        .arg(crate::repo_root().join("tests/stubs/k3s_etcd.py"))
        .args(args)
        .env("K3S_ASG_ROOT", root)
        .env("K3S_STUB_HOSTS", hosts)
        .output()
        .expect("run tests/stubs/k3s_etcd.py");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// etcd's members as the host at `root` sees them, with their health: `(name, learner, healthy)`;
/// empty when its etcd does not answer.
pub fn etcd_health_at(root: &std::path::Path) -> Vec<(String, bool, bool)> {
    let list: Vec<serde_json::Value> = serde_json::from_str(stub_etcd(root, &["health"]).trim()).unwrap_or_default();
    list.iter()
        .map(|m| (m["name"].as_str().unwrap_or_default().to_string(), m["learner"].as_bool().unwrap_or(false), m["healthy"].as_bool().unwrap_or(false)))
        .collect()
}
