//! An in-memory world behind the agent's effect traits, for tests that drive `join`, `leave`
//! and `converge` without moto, programs on PATH or sockets.
//!
//! One [`World`] holds what AWS, systemd and k3s would hold; every call through an effect is
//! appended, in the order made, to one call log (`service:Action resource [=> answer]`).
//! A test seeds the world, runs the agent over [`Fake::effects`], then states which calls must
//! have arrived and in which order ([`Fake::expect_in_order`], after kube-rs/controller-rs
//! `src/fixtures.rs`), and what the world holds afterwards. Files go through the real
//! [`HostFs`] over a temporary root.
//!
//! Each rule a fake enforces that mirrors the real system names its source in a comment.

#![allow(dead_code)] // each test binary uses a different part of the world

use async_trait::async_trait;
use k3s_asg_agent::effects::etcd::{self, Etcd};
use k3s_asg_agent::effects::hostfs::HostFs;
use k3s_asg_agent::effects::k3s::K3s;
use k3s_asg_agent::effects::lifecycle::{Lifecycle, WaitingHook};
use k3s_asg_agent::effects::metadata::Metadata;
use k3s_asg_agent::effects::parameters::{Listed, Param, Parameters};
use k3s_asg_agent::effects::probes::Probes;
use k3s_asg_agent::effects::services::Services;
use k3s_asg_agent::effects::snapshots::{Newest, SnapshotStore, Snapshots};
use k3s_asg_agent::effects::supervisor::Supervisor;
use k3s_asg_agent::effects::Effects;
use k3s_asg_agent::error::{Error, Result};
use k3s_asg_agent::secret::Secret;
use k3s_asg_aws::ec2::{InstanceInfo, Instances};
use k3s_asg_aws::elbv2::TargetGroups;
use k3s_asg_aws::names::fqdn;
use k3s_asg_aws::records::{RecordChange, RecordSet};
use k3s_asg_aws::route53::Zones;
use k3s_asg_aws::targets::{Member, TargetState};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// An EC2 instance as DescribeInstances and DescribeTags see it.
#[derive(Debug, Clone)]
pub struct Instance {
    pub state: String,
    pub private_ip: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// An ELBv2 target group.
#[derive(Debug, Clone)]
pub struct TargetGroup {
    pub members: Vec<Member>,
    pub deregistration_delay_s: u64,
    /// How many DescribeTargetHealth answers still show a deregistered target as `draining`
    /// before its connections are done and it is gone.
    pub drain_reads: usize,
    /// Deregistered targets `(id, port)` and the draining answers left.
    pub draining: BTreeMap<(String, u16), usize>,
}

impl Default for TargetGroup {
    fn default() -> Self {
        // ELBv2's default deregistration_delay.timeout_seconds (TargetGroupAttribute docs).
        TargetGroup { members: vec![], deregistration_delay_s: 300, drain_reads: 1, draining: BTreeMap::new() }
    }
}

/// A Kubernetes Node object.
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub ready: bool,
    pub unschedulable: bool,
    pub control_plane: bool,
}

/// Everything the fakes hold. Public: tests seed and inspect it through [`Fake::with`].
#[derive(Debug, Default)]
pub struct World {
    pub log: Vec<String>,
    /// IMDS paths under `/latest/meta-data/` and their values.
    pub imds: BTreeMap<String, String>,
    /// The instance's `InstanceMetadataTags` option: its tags under `tags/instance`.
    pub imds_tags: bool,
    pub instances: BTreeMap<String, Instance>,
    pub params: BTreeMap<String, Param>,
    /// Hosted zone id → (domain name, record sets).
    pub zones: BTreeMap<String, (String, Vec<RecordSet>)>,
    pub target_groups: BTreeMap<String, TargetGroup>,
    /// Units systemd has active.
    pub active: BTreeSet<String>,
    pub nodes: BTreeMap<String, Node>,
    pub account_tokens: BTreeMap<String, String>,
    /// Instance id → (Auto Scaling group, lifecycle state).
    pub asg: BTreeMap<String, (String, String)>,
    /// Auto Scaling group → its terminating lifecycle hook.
    pub hooks: BTreeMap<String, WaitingHook>,
    pub group_tags: BTreeMap<String, BTreeMap<String, String>>,
    /// Server address → sha256 of the CA bundle its supervisor serves on `/cacerts`.
    pub supervisors: BTreeMap<String, String>,
    /// Readiness probe URL → the status it answers (absent: nothing listens).
    pub probes: BTreeMap<String, u16>,
}

impl World {
    pub fn param(&mut self, name: &str, value: &str, secure: bool) {
        self.params.insert(name.into(), Param { value: Secret::new(value), secure, modified: Some(SystemTime::now()) });
    }

    pub fn members(&self, arn: &str) -> Vec<(String, u16, TargetState)> {
        self.target_groups[arn].members.iter().map(|m| (m.id.clone(), m.port, m.state.clone())).collect()
    }

    fn own_id(&self) -> String {
        self.imds.get("instance-id").cloned().unwrap_or_default()
    }

    fn metadata(&self, path: &str) -> Option<String> {
        // IMDS serves `tags/instance` only with InstanceMetadataTags enabled, else 404 (EC2 docs,
        // "View tags for your EC2 instances using instance metadata").
        if let Some(rest) = path.strip_prefix("tags/instance") {
            let tags = &self.instances.get(&self.own_id()).filter(|_| self.imds_tags)?.tags;
            return match rest.strip_prefix('/') {
                None if rest.is_empty() => Some(tags.keys().cloned().collect::<Vec<_>>().join("\n")),
                Some(key) => tags.get(key).cloned(),
                None => None,
            };
        }
        self.imds.get(path).cloned()
    }

    fn info(&self, id: &str) -> Option<InstanceInfo> {
        self.instances.get(id).map(|i| InstanceInfo { id: id.into(), state: i.state.clone(), private_ip: i.private_ip.clone() })
    }

    fn group(&mut self, arn: &str, action: &'static str) -> Result<&mut TargetGroup> {
        // An unknown ARN is TargetGroupNotFound (ELBv2 API reference, every target-group action).
        self.target_groups.get_mut(arn).ok_or_else(|| Error::failed(action, arn, "TargetGroupNotFound: One or more target groups not found"))
    }

    /// Whether kubectl reaches an API server: the local server's, or one named by a kubeconfig.
    fn api_reachable(&self, kubeconfig: Option<&Path>) -> bool {
        self.active.contains("k3s") || kubeconfig.is_some_and(Path::exists)
    }
}

/// The world, a temporary host root, and the effects over them.
pub struct Fake {
    pub dir: tempfile::TempDir,
    world: Arc<Mutex<World>>,
}

impl Default for Fake {
    fn default() -> Self {
        Fake { dir: tempfile::tempdir().expect("temporary root"), world: Arc::default() }
    }
}

impl Fake {
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn fs(&self) -> HostFs {
        HostFs::new(self.root())
    }

    /// Reads or changes the world.
    pub fn with<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        f(&mut self.world.lock().expect("world lock"))
    }

    /// Every effect over this world; the files under [`Fake::root`].
    pub fn effects(&self) -> Effects {
        let b = Backend { world: self.world.clone(), fs: self.fs() };
        Effects {
            metadata: Box::new(b.clone()),
            instances: Box::new(b.clone()),
            parameters: Box::new(b.clone()),
            zones: Box::new(b.clone()),
            target_groups: Box::new(b.clone()),
            services: Box::new(b.clone()),
            k3s: Box::new(b.clone()),
            etcd: Box::new(b.clone()),
            lifecycle: Box::new(b.clone()),
            supervisor: Box::new(b.clone()),
            probes: Box::new(b.clone()),
            snapshots: Box::new(b),
            fs: self.fs(),
        }
    }

    pub fn log(&self) -> Vec<String> {
        self.with(|w| w.log.clone())
    }

    /// The calls so far, leaving the log empty (one scenario step at a time).
    pub fn take_log(&self) -> Vec<String> {
        self.with(|w| std::mem::take(&mut w.log))
    }

    /// Fails, naming the first expected call that never came, unless calls starting with each of
    /// `expected` arrived in this order (other calls in between are fine).
    #[track_caller]
    pub fn expect_in_order(&self, expected: &[&str]) {
        let log = self.log();
        let mut at = 0;
        for (i, want) in expected.iter().enumerate() {
            match log[at..].iter().position(|line| line.starts_with(want)) {
                Some(found) => at += found + 1,
                None => panic!("expected call #{i} never came (after call {at} of the log):\n  {want}\ncalls made:\n  {}", log.join("\n  ")),
            }
        }
    }

    /// The calls that start with `prefix`.
    pub fn calls(&self, prefix: &str) -> Vec<String> {
        self.log().into_iter().filter(|l| l.starts_with(prefix)).collect()
    }
}

/// What each boxed effect is: a handle on the shared world.
#[derive(Clone)]
struct Backend {
    world: Arc<Mutex<World>>,
    fs: HostFs,
}

impl Backend {
    fn w(&self) -> MutexGuard<'_, World> {
        self.world.lock().expect("world lock")
    }

    /// Logs a call and hands over the world to answer it.
    fn call(&self, line: String) -> MutexGuard<'_, World> {
        let mut w = self.w();
        w.log.push(line);
        w
    }
}

#[async_trait]
impl Metadata for Backend {
    async fn get(&self, path: &str) -> Result<Option<String>> {
        let mut w = self.w();
        let answer = w.metadata(path);
        w.log.push(format!("imds:GET {path} => {}", answer.as_deref().unwrap_or("404").replace('\n', ",")));
        Ok(answer)
    }
}

#[async_trait]
impl Instances for Backend {
    async fn tags(&self, instance_id: &str) -> Result<BTreeMap<String, String>> {
        let w = self.call(format!("ec2:DescribeTags {instance_id}"));
        // A resource-id filter that matches nothing answers no tags, not an error.
        Ok(w.instances.get(instance_id).map(|i| i.tags.clone()).unwrap_or_default())
    }

    async fn live(&self, ids: &[String]) -> Result<BTreeSet<String>> {
        let w = self.call(format!("ec2:DescribeInstances {} state=pending,running", ids.join(",")));
        Ok(ids.iter().filter(|id| w.info(id).is_some_and(|i| i.is_live())).cloned().collect())
    }

    async fn addresses(&self, ids: &[String]) -> Result<BTreeMap<String, String>> {
        let w = self.call(format!("ec2:DescribeInstances {}", ids.join(",")));
        Ok(ids.iter().filter_map(|id| Some((id.clone(), w.info(id)?.private_ip?))).collect())
    }

    async fn describe(&self, ids: &[String]) -> Result<Vec<InstanceInfo>> {
        let w = self.call(format!("ec2:DescribeInstances {}", ids.join(",")));
        Ok(ids.iter().filter_map(|id| w.info(id)).collect())
    }

    async fn live_tagged(&self, tags: &[(String, String)]) -> Result<Vec<InstanceInfo>> {
        let mut w = self.w();
        let what: Vec<String> = tags.iter().map(|(k, v)| format!("tag:{k}={v}")).collect();
        w.log.push(format!("ec2:DescribeInstances {} state=pending,running", what.join(",")));
        let has = |i: &Instance| tags.iter().all(|(k, v)| i.tags.get(k) == Some(v));
        let ids: Vec<String> = w.instances.iter().filter(|(_, i)| has(i)).map(|(id, _)| id.clone()).collect();
        Ok(ids.iter().filter_map(|id| w.info(id)).filter(InstanceInfo::is_live).collect())
    }
}

#[async_trait]
impl Parameters for Backend {
    async fn get(&self, names: &[String]) -> Result<BTreeMap<String, Param>> {
        let w = self.call(format!("ssm:GetParameters {}", names.join(",")));
        // Names that do not exist come back as InvalidParameters, not an error (GetParameters).
        Ok(names.iter().filter_map(|n| Some((n.clone(), w.params.get(n)?.clone()))).collect())
    }

    async fn create_secure(&self, name: &str, value: &Secret) -> Result<bool> {
        let mut w = self.call(format!("ssm:PutParameter {name} SecureString Overwrite=false"));
        // Overwrite=false on an existing name is ParameterAlreadyExists (PutParameter).
        if w.params.contains_key(name) {
            return Ok(false);
        }
        w.param(name, value.expose(), true);
        Ok(true)
    }

    async fn overwrite_secure(&self, name: &str, value: &Secret) -> Result<()> {
        let mut w = self.call(format!("ssm:PutParameter {name} SecureString Overwrite=true"));
        w.param(name, value.expose(), true);
        Ok(())
    }

    async fn list(&self, path: &str) -> Result<Vec<Listed>> {
        let w = self.call(format!("ssm:GetParametersByPath {path}"));
        // Recursive=false: one level below the path only (GetParametersByPath); Strings only (the trait).
        let below = |n: &str| n.strip_prefix(path).and_then(|r| r.strip_prefix('/')).is_some_and(|r| !r.is_empty() && !r.contains('/'));
        let listed = w.params.iter().filter(|(n, p)| below(n) && !p.secure);
        Ok(listed.map(|(n, p)| Listed { name: n.clone(), value: p.value.expose().into(), last_modified: p.modified }).collect())
    }

    async fn create_string(&self, name: &str, value: &str) -> Result<bool> {
        let mut w = self.call(format!("ssm:PutParameter {name} String Overwrite=false {value}"));
        if w.params.contains_key(name) {
            return Ok(false);
        }
        w.param(name, value, false);
        Ok(true)
    }

    async fn overwrite_string(&self, name: &str, value: &str) -> Result<()> {
        let mut w = self.call(format!("ssm:PutParameter {name} String Overwrite=true {value}"));
        w.param(name, value, false);
        Ok(())
    }
}

fn no_zone(zone_id: &str) -> Error {
    Error::failed("read records (route53:ListResourceRecordSets)", zone_id, "NoSuchHostedZone")
}

#[async_trait]
impl Zones for Backend {
    async fn name(&self, zone_id: &str) -> Result<Option<String>> {
        let w = self.call(format!("route53:GetHostedZone {zone_id}"));
        Ok(w.zones.get(zone_id).map(|(name, _)| name.clone()))
    }

    async fn records(&self, zone_id: &str) -> Result<Vec<RecordSet>> {
        let w = self.call(format!("route53:ListResourceRecordSets {zone_id}"));
        w.zones.get(zone_id).map(|(_, r)| r.clone()).ok_or_else(|| no_zone(zone_id))
    }

    async fn records_named(&self, zone_id: &str, name: &str, rtype: &str) -> Result<Vec<RecordSet>> {
        let mut w = self.w();
        let want = fqdn(name);
        let (_, records) = w.zones.get(zone_id).ok_or_else(|| no_zone(zone_id))?;
        // Only the sets of exactly that name and type (the trait; Route53 compares names lower-cased).
        let found: Vec<RecordSet> = records.iter().filter(|r| r.name == want && r.rtype == rtype).cloned().collect();
        let ids: Vec<&str> = found.iter().map(|r| r.set_identifier.as_deref().unwrap_or("-")).collect();
        let line = format!("route53:ListResourceRecordSets {zone_id} {want} {rtype} => [{}]", ids.join(","));
        w.log.push(line);
        Ok(found)
    }

    async fn change(&self, zone_id: &str, changes: &[RecordChange]) -> Result<()> {
        let mut w = self.w();
        let what: Vec<String> = changes.iter().map(|c| format!("{} {}", c.action(), c.record().label())).collect();
        w.log.push(format!("route53:ChangeResourceRecordSets {zone_id} {}", what.join("; ")));
        let (_, records) = w.zones.get_mut(zone_id).ok_or_else(|| no_zone(zone_id))?;
        // A batch applies whole or not at all, and a DELETE must match the set exactly
        // (ChangeResourceRecordSets: InvalidChangeBatch).
        let mut next = records.clone();
        for c in changes {
            let r = c.record();
            let same = |x: &RecordSet| x.name == r.name && x.rtype == r.rtype && x.set_identifier == r.set_identifier;
            match c {
                RecordChange::Upsert { .. } => {
                    next.retain(|x| !same(x));
                    next.push(r.clone());
                }
                RecordChange::Delete { .. } if next.contains(r) => next.retain(|x| x != r),
                RecordChange::Delete { .. } => {
                    let why = format!("InvalidChangeBatch: Tried to delete resource record set [{}] but it was not found", r.label());
                    return Err(Error::failed("change records (route53:ChangeResourceRecordSets)", zone_id, why));
                }
            }
        }
        *records = next;
        Ok(())
    }
}

#[async_trait]
impl TargetGroups for Backend {
    async fn members(&self, arn: &str) -> Result<Vec<Member>> {
        let mut w = self.w();
        let tg = w.group(arn, "read target group (elasticloadbalancing:DescribeTargetHealth)")?;
        // A deregistered target is `draining` until its connections close or the delay passes,
        // then no longer listed (ELBv2 "Deregistration delay").
        let done: Vec<(String, u16)> = tg.draining.iter().filter(|(_, left)| **left == 0).map(|(k, _)| k.clone()).collect();
        for (id, port) in &done {
            tg.draining.remove(&(id.clone(), *port));
            tg.members.retain(|m| !(m.id == *id && m.port == *port));
        }
        tg.draining.values_mut().for_each(|left| *left -= 1);
        let members = tg.members.clone();
        let shown: Vec<String> = members.iter().map(|m| format!("{}:{} {:?}", m.id, m.port, m.state).to_lowercase()).collect();
        w.log.push(format!("elbv2:DescribeTargetHealth {arn} => [{}]", shown.join(", ")));
        Ok(members)
    }

    async fn register(&self, arn: &str, instance_id: &str, port: u16) -> Result<()> {
        let mut w = self.call(format!("elbv2:RegisterTargets {arn} {instance_id}:{port}"));
        // Only a running instance can be registered (RegisterTargets: InvalidTarget).
        if w.info(instance_id).is_none_or(|i| i.state != "running") {
            return Err(Error::failed("register target (elasticloadbalancing:RegisterTargets)", arn, "InvalidTarget: not a running instance"));
        }
        let tg = w.group(arn, "register target (elasticloadbalancing:RegisterTargets)")?;
        tg.draining.remove(&(instance_id.to_string(), port));
        tg.members.retain(|m| !(m.id == instance_id && m.port == port));
        // A new target is `initial` while the first health checks run (TargetHealth docs).
        tg.members.push(Member { id: instance_id.into(), port, state: TargetState::Initial });
        Ok(())
    }

    async fn deregister(&self, arn: &str, instance_id: &str, port: u16) -> Result<()> {
        let mut w = self.call(format!("elbv2:DeregisterTargets {arn} {instance_id}:{port}"));
        let tg = w.group(arn, "deregister target (elasticloadbalancing:DeregisterTargets)")?;
        let drain_reads = tg.drain_reads;
        if let Some(m) = tg.members.iter_mut().find(|m| m.id == instance_id && m.port == port) {
            m.state = TargetState::Draining;
            tg.draining.entry((instance_id.into(), port)).or_insert(drain_reads);
        }
        Ok(())
    }

    async fn deregistration_delay(&self, arn: &str) -> Result<u64> {
        let mut w = self.call(format!("elbv2:DescribeTargetGroupAttributes {arn}"));
        Ok(w.group(arn, "read target group attributes (elasticloadbalancing:DescribeTargetGroupAttributes)")?.deregistration_delay_s)
    }
}

impl Backend {
    /// systemd starts a unit; for a k3s unit, k3s registers its Node.
    fn run_unit(&self, w: &mut World, unit: &str) -> Result<()> {
        // systemd loads units from /etc/systemd/system ("Unit X.service not found." otherwise).
        if !self.fs.exists(&format!("/etc/systemd/system/{unit}.service")) {
            return Err(Error::failed("run systemctl", format!("start {unit}"), format!("Unit {unit}.service not found.")));
        }
        w.active.insert(unit.to_string());
        // k3s registers a Node named by config.yaml's `node-name`; the kubelet makes it Ready.
        let config = self.fs.read("/etc/rancher/k3s/config.yaml")?.unwrap_or_default();
        if let Some(name) = config_value(&config, "node-name") {
            w.nodes.insert(name, Node { ready: true, unschedulable: false, control_plane: unit == "k3s" });
        }
        Ok(())
    }
}

/// The value of a `key: "value"` line of k3s's config.yaml (as `render` writes it).
fn config_value(config: &str, key: &str) -> Option<String> {
    let line = config.lines().find_map(|l| l.strip_prefix(&format!("{key}: ")))?;
    serde_json::from_str(line).ok()
}

#[async_trait]
impl Services for Backend {
    async fn daemon_reload(&self) -> Result<()> {
        self.w().log.push("systemd:daemon-reload".into());
        Ok(())
    }

    async fn start(&self, unit: &str) -> Result<()> {
        let mut w = self.call(format!("systemd:start {unit}"));
        // Starting a running unit does nothing (systemctl(1) "start").
        if w.active.contains(unit) {
            return Ok(());
        }
        self.run_unit(&mut w, unit)
    }

    async fn restart(&self, unit: &str) -> Result<()> {
        let mut w = self.call(format!("systemd:restart {unit}"));
        w.active.remove(unit);
        self.run_unit(&mut w, unit)
    }

    async fn is_active(&self, unit: &str) -> Result<bool> {
        let mut w = self.w();
        let active = w.active.contains(unit);
        w.log.push(format!("systemd:is-active {unit} => {active}"));
        Ok(active)
    }

    async fn is_failed(&self, unit: &str) -> Result<bool> {
        // A start that fails here fails at once (`start` returns the error), so no unit is left failed.
        self.w().log.push(format!("systemd:is-failed {unit} => false"));
        Ok(false)
    }

    async fn stop(&self, unit: &str) -> Result<()> {
        let mut w = self.call(format!("systemd:stop {unit}"));
        w.active.remove(unit);
        // A stopped kubelet no longer posts status: its Node turns NotReady (simplified: at once).
        let config = self.fs.read("/etc/rancher/k3s/config.yaml")?.unwrap_or_default();
        if let Some(node) = config_value(&config, "node-name").and_then(|n| w.nodes.get_mut(&n)) {
            node.ready = false;
        }
        Ok(())
    }
}

fn unreachable_api(node: &str) -> Error {
    Error::failed("run k3s", node, "The connection to the server localhost:8080 was refused")
}

/// etcd as the control-plane Nodes imply it: a voter each, healthy while Ready (k3s names members
/// NODE-<8 hex>); the fake has no learners.
#[async_trait]
impl Etcd for Backend {
    async fn members(&self, addresses: &[String]) -> Result<Option<Vec<etcd::Member>>> {
        let w = self.call(format!("etcd:POST /v3/cluster/member/list via {}", addresses.join(",")));
        let members: Vec<etcd::Member> = w
            .nodes
            .iter()
            .filter(|(_, n)| n.control_plane)
            .map(|(name, n)| etcd::Member { name: format!("{name}-0000000a"), client_urls: vec![], learner: false, healthy: n.ready })
            .collect();
        Ok((!members.is_empty()).then_some(members))
    }

    async fn status(&self, url: &str) -> Result<Option<etcd::Status>> {
        drop(self.call(format!("etcd:POST {url}/v3/maintenance/status")));
        Ok(None)
    }
}

#[async_trait]
impl K3s for Backend {
    async fn node_ready(&self, node: &str, kubeconfig: Option<&Path>) -> Result<bool> {
        let mut w = self.w();
        // Without a local server, kubectl needs a kubeconfig (the trait); `get` fails, so not Ready.
        let ready = w.api_reachable(kubeconfig) && w.nodes.get(node).is_some_and(|n| n.ready);
        w.log.push(format!("k3s:kubectl get node/{node} => {}", if ready { "Ready" } else { "NotReady" }));
        Ok(ready)
    }

    async fn account_token(&self, account: &str) -> Result<Option<Secret>> {
        let w = self.call(format!("k3s:kubectl get secret {account}"));
        Ok(w.account_tokens.get(account).map(Secret::new))
    }

    async fn drain(&self, node: &str, kubeconfig: Option<&Path>, timeout_s: u64, grace_period_s: u64) -> Result<()> {
        let mut w = self.w();
        let via = if kubeconfig.is_some() { "kubeconfig" } else { "local" };
        w.log.push(format!("k3s:kubectl drain {node} --grace-period={grace_period_s} --timeout={timeout_s}s ({via})"));
        if !w.api_reachable(kubeconfig) {
            return Err(unreachable_api(node));
        }
        // `kubectl drain` cordons first; an absent Node is NotFound.
        let n = w.nodes.get_mut(node).ok_or_else(|| Error::failed("drain node", node, format!("nodes \"{node}\" not found")))?;
        n.unschedulable = true;
        Ok(())
    }

    async fn control_plane_nodes(&self) -> Result<Vec<(String, bool)>> {
        let w = self.call("k3s:kubectl get nodes -l node-role.kubernetes.io/control-plane=true".into());
        Ok(w.nodes.iter().filter(|(_, n)| n.control_plane).map(|(name, n)| (name.clone(), n.ready)).collect())
    }

    async fn nodes(&self) -> Result<Vec<String>> {
        let w = self.call("k3s:kubectl get nodes".into());
        Ok(w.nodes.keys().cloned().collect())
    }

    async fn delete_node(&self, node: &str, kubeconfig: Option<&Path>) -> Result<()> {
        let mut w = self.call(format!("k3s:kubectl delete node/{node}"));
        if !w.api_reachable(kubeconfig) {
            return Err(unreachable_api(node));
        }
        // --ignore-not-found: an absent Node is fine (the trait).
        w.nodes.remove(node);
        Ok(())
    }

    async fn restore_snapshot(&self, name: &str, _limit: std::time::Duration) -> Result<()> {
        self.w().log.push(format!("k3s:server --cluster-reset-restore-path={name}"));
        Err(Error::failed("restore etcd snapshot", name, "not modelled by the fake"))
    }

    async fn cluster_reset(&self, _limit: std::time::Duration) -> Result<()> {
        drop(self.call("k3s:server --cluster-reset".into()));
        Ok(())
    }

    async fn save_snapshot(&self, name: &str, store: &SnapshotStore, _limit: std::time::Duration) -> Result<()> {
        self.w().log.push(format!("k3s:etcd-snapshot save --name={name} {}", store.url()));
        Err(Error::failed("save etcd snapshot", store.url(), "not modelled by the fake"))
    }
}

#[async_trait]
impl Lifecycle for Backend {
    async fn waiting_hook(&self, instance_id: &str) -> Result<Option<WaitingHook>> {
        let mut w = self.w();
        let state = w.asg.get(instance_id).cloned();
        w.log.push(format!("autoscaling:DescribeAutoScalingInstances {instance_id} => {}", state.as_ref().map_or("none", |(_, s)| s)));
        // A terminating hook holds the instance in Terminating:Wait (or the warm-pool waits).
        Ok(match state {
            Some((group, s)) if ["Terminating:Wait", "Warmed:Terminating:Wait", "Warmed:Pending:Wait"].contains(&s.as_str()) => {
                w.hooks.get(&group).cloned()
            }
            _ => None,
        })
    }

    async fn heartbeat(&self, hook: &WaitingHook, instance_id: &str) -> Result<()> {
        let w = self.call(format!("autoscaling:RecordLifecycleActionHeartbeat {}/{} {instance_id}", hook.group, hook.hook));
        pending_action(&w, hook, instance_id, "heartbeat (autoscaling:RecordLifecycleActionHeartbeat)")
    }

    async fn group_tags(&self, group: &str) -> Result<BTreeMap<String, String>> {
        let w = self.call(format!("autoscaling:DescribeTags {group}"));
        Ok(w.group_tags.get(group).cloned().unwrap_or_default())
    }

    async fn terminating(&self, ids: &[String]) -> Result<BTreeSet<String>> {
        let w = self.call(format!("autoscaling:DescribeAutoScalingInstances {}", ids.join(",")));
        Ok(ids.iter().filter(|id| w.asg.get(*id).is_some_and(|(_, s)| s.starts_with("Terminating"))).cloned().collect())
    }

    async fn complete(&self, hook: &WaitingHook, instance_id: &str) -> Result<()> {
        let mut w = self.call(format!("autoscaling:CompleteLifecycleAction {}/{} {instance_id} CONTINUE", hook.group, hook.hook));
        pending_action(&w, hook, instance_id, "complete lifecycle action (autoscaling:CompleteLifecycleAction)")?;
        // CONTINUE lets the termination go on: Terminating:Wait → Terminating:Proceed (lifecycle docs).
        if let Some((_, s)) = w.asg.get_mut(instance_id) {
            *s = s.replace(":Wait", ":Proceed");
        }
        Ok(())
    }
}

/// Heartbeats and completions need an action that is waiting
/// ("ValidationError: No active Lifecycle Action found with instance ID …").
fn pending_action(w: &World, hook: &WaitingHook, instance_id: &str, step: &'static str) -> Result<()> {
    match w.asg.get(instance_id) {
        Some((group, s)) if *group == hook.group && s.ends_with(":Wait") => Ok(()),
        _ => Err(Error::failed(step, instance_id, format!("ValidationError: No active Lifecycle Action found with instance ID {instance_id}"))),
    }
}

#[async_trait]
impl Supervisor for Backend {
    async fn verified_live(&self, ip: &str, ca_hash: &str) -> Result<bool> {
        let mut w = self.w();
        // Trusted only when the CA it serves hashes to the token's (k3s agents' own check).
        let live = w.supervisors.get(ip).is_some_and(|served| served == ca_hash);
        w.log.push(format!("supervisor:verified_live {ip} => {live}"));
        Ok(live)
    }

    async fn ca_hash(&self, ip: &str) -> Result<Option<String>> {
        let w = self.call(format!("supervisor:GET https://{ip}/cacerts"));
        Ok(w.supervisors.get(ip).cloned())
    }
}

#[async_trait]
impl Probes for Backend {
    async fn http(&self, url: &str, expect: u16) -> std::result::Result<(), String> {
        let mut w = self.w();
        let status = w.probes.get(url).copied();
        w.log.push(format!("probe:GET {url} => {}", status.map_or("no answer".into(), |s| s.to_string())));
        // The same words as the real probe (effects/probes.rs).
        match status {
            Some(s) if s == expect => Ok(()),
            Some(s) => Err(format!("answered {s} (expected {expect})")),
            None => Err("no answer: connection refused".into()),
        }
    }
}

#[async_trait]
impl Snapshots for Backend {
    async fn newest(&self, store: &SnapshotStore, _skip: &[String], _token_hash: &str) -> Result<Newest> {
        self.w().log.push(format!("s3:ListObjectsV2 {}", store.url()));
        Ok(Newest::default())
    }
}
