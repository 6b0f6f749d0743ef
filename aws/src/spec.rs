//! The cluster spec kept in `{prefix}/clusters/{cluster}/config` (DESIGN.md).
//!
//! Parsing is strict: unknown fields are refused (a typo must not silently
//! become a default), and every error names the parameter and the field path.

use crate::names::check_hostname;
use crate::tags::Role;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter {parameter}: field `{field}`: {problem}")]
pub struct SpecError {
    pub parameter: String,
    pub field: String,
    pub problem: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub api: ApiSpec,
    #[serde(default)]
    pub target_groups: Vec<TargetGroupSpec>,
    #[serde(default)]
    pub readiness: Vec<ProbeSpec>,
    #[serde(default)]
    pub k3s: K3sSpec,
    #[serde(default)]
    pub drain: DrainSpec,
    /// etcd snapshots to S3 (control plane): the cluster's way back from losing every server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<SnapshotSpec>,
}

/// Where and how often k3s snapshots etcd to S3 (k3s does the uploads and the pruning).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSpec {
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing `/`): one per cluster.
    pub folder: String,
    /// The bucket's region; the instance's own region when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Cron schedule of k3s's scheduled snapshots (five fields).
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// Snapshots kept (locally and in S3).
    #[serde(default = "default_retention")]
    pub retention: u32,
}

fn default_schedule() -> String {
    "0 */6 * * *".into()
}
fn default_retention() -> u32 {
    28
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSpec {
    pub hostname: String,
    pub hosted_zone_id: String,
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    #[serde(default)]
    pub address: AddressKind,
}

fn default_ttl() -> u32 {
    30
}

/// Which address of a control-plane instance its API record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressKind {
    #[default]
    Private,
    Public,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetGroupSpec {
    pub arn: String,
    pub port: u16,
    #[serde(default = "all_roles")]
    pub roles: Vec<Role>,
    #[serde(default)]
    pub ingress: bool,
}

fn all_roles() -> Vec<Role> {
    vec![Role::ControlPlane, Role::Node]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec {
    /// `http://` or `https://` URL; `{node_ip}` is replaced by the instance's address.
    pub http: String,
    #[serde(default = "default_status")]
    pub expect_status: u16,
    /// Roles whose instances must pass this probe before they take traffic (default: both; a
    /// tainted control plane that runs no ingress: `["node"]`).
    #[serde(default = "all_roles")]
    pub roles: Vec<Role>,
}

fn default_status() -> u16 {
    200
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K3sSpec {
    /// Extra `k3s server` flags (config.yaml keys) for control-plane instances.
    #[serde(default)]
    pub server: Map<String, Value>,
    /// Extra `k3s agent` flags for node instances.
    #[serde(default)]
    pub agent: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainSpec {
    #[serde(default = "default_drain_timeout")]
    pub timeout_s: u64,
    #[serde(default = "default_grace")]
    pub grace_period_s: u64,
}

impl Default for DrainSpec {
    fn default() -> Self {
        DrainSpec { timeout_s: default_drain_timeout(), grace_period_s: default_grace() }
    }
}

fn default_drain_timeout() -> u64 {
    360
}
fn default_grace() -> u64 {
    180
}

/// Keys the agent sets itself; a spec that sets them is refused. `cluster-reset*` would reset
/// etcd on every start of every server; the agent runs it once, for a recovery.
pub const AGENT_OWNED_KEYS: &[&str] = &[
    "node-name",
    "node-ip",
    "token",
    "token-file",
    "server",
    "cluster-init",
    "cluster-reset",
    "cluster-reset-restore-path",
    "disable-cloud-controller",
    "agent-token",
    "agent-token-file",
    "data-dir",
    "config",
];

/// Keys the agent renders from the spec's `snapshots` section, and S3 settings that would send
/// snapshots where the agent's own listing (for a recovery) does not look, or put S3 keys into
/// the spec: set `snapshots` instead. Transport settings (`etcd-s3-timeout`, `-proxy`,
/// `-endpoint-ca`, ...) stay the spec's.
pub fn is_snapshot_key(key: &str) -> bool {
    matches!(
        key,
        "etcd-s3"
            | "etcd-s3-bucket"
            | "etcd-s3-folder"
            | "etcd-s3-region"
            | "etcd-s3-retention"
            | "etcd-s3-endpoint"
            | "etcd-s3-access-key"
            | "etcd-s3-secret-key"
            | "etcd-s3-session-token"
            | "etcd-s3-config-secret"
            | "etcd-snapshot-schedule-cron"
            | "etcd-snapshot-retention"
            | "etcd-disable-snapshots"
    )
}

fn flags(role: Role) -> &'static [(&'static str, bool)] {
    match role {
        Role::ControlPlane => crate::k3s_flags::SERVER,
        Role::Node => crate::k3s_flags::AGENT,
    }
}

/// Whether `key` is a config.yaml key of `k3s server` (control plane) or `k3s agent` (node),
/// as k3s's own CLI definitions say (`k3s_flags`, generated).
pub fn is_k3s_flag(role: Role, key: &str) -> bool {
    flags(role).iter().any(|(k, _)| *k == key)
}

/// Whether `key` takes a list (its spec entries are appended to the agent's own).
pub fn is_list_key(key: &str) -> bool {
    crate::k3s_flags::SERVER.iter().chain(crate::k3s_flags::AGENT).any(|(k, list)| *k == key && *list)
}

/// Parses JSON strictly, naming the field path of any error.
fn parse_json<T: serde::de::DeserializeOwned>(parameter: &str, json: &str) -> Result<T, SpecError> {
    let document = |problem: String| SpecError { parameter: parameter.to_string(), field: "(document)".into(), problem };
    let value: Value = serde_json::from_str(json).map_err(|e| document(format!("not JSON: {e}")))?;
    if !value.is_object() {
        return Err(document("must be a JSON object".into()));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        // "." is the document itself; "" is a key that is the empty string (found by fuzz/specs).
        let field = if field == "." || field.is_empty() { "(document)".to_string() } else { field };
        SpecError { parameter: parameter.to_string(), field, problem: e.into_inner().to_string() }
    })
}

fn located(parameter: &str) -> impl Fn((String, String)) -> SpecError + '_ {
    move |(field, problem)| SpecError { parameter: parameter.to_string(), field, problem }
}

/// A shared endpoint served by several clusters (`{prefix}/endpoints/{name}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    pub hostname: String,
    pub hosted_zone_id: String,
    /// cluster name → weight (0–999).
    pub clusters: std::collections::BTreeMap<String, u32>,
    #[serde(default = "default_listener_port")]
    pub listener_port: u16,
    #[serde(default)]
    pub health: Option<HealthSpec>,
    #[serde(default)]
    pub restricted_cidrs: Vec<String>,
    #[serde(default)]
    pub stickiness_s: u32,
}

fn default_listener_port() -> u16 {
    443
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    pub path: String,
    #[serde(default = "default_status")]
    pub expect_status: u16,
}

/// A region's shared ALB (`{prefix}/regions/{region}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSpec {
    pub alb_arn: String,
    pub listener_arns: Vec<String>,
    pub zone: String,
    #[serde(default = "default_rules_quota")]
    pub rules_quota: u32,
}

fn default_rules_quota() -> u32 {
    100
}

/// ALB limits the coordinator enforces itself (moto does not).
pub const MAX_TARGET_GROUPS_PER_FORWARD: usize = 5;

fn check_cidr(c: &str) -> bool {
    let Some((ip, len)) = c.split_once('/') else {
        return false;
    };
    match (ip.parse::<std::net::IpAddr>(), len.parse::<u8>()) {
        (Ok(std::net::IpAddr::V4(_)), Ok(l)) => l <= 32,
        (Ok(std::net::IpAddr::V6(_)), Ok(l)) => l <= 128,
        _ => false,
    }
}

/// Each `key=value` of a `node-label` entry (a string or a list of them) passes the kubelet's
/// own label rule (`node_template::kubelet_refuses`): a label it refuses crash-loops the node.
fn check_node_labels(field: &str, value: &Value) -> Result<(), (String, String)> {
    let entries: Vec<&str> = match value {
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        Value::String(s) => vec![s.as_str()],
        _ => vec![],
    };
    for (i, entry) in entries.iter().enumerate() {
        let key = entry.split_once('=').map_or(*entry, |(k, _)| k);
        if let Some(why) = crate::node_template::kubelet_refuses(key) {
            let at = if matches!(value, Value::Array(_)) { format!("{field}[{i}]") } else { field.to_string() };
            return Err((at, format!("label {key:?}: {why}")));
        }
    }
    Ok(())
}

impl EndpointSpec {
    pub fn parse(parameter: &str, json: &str) -> Result<EndpointSpec, SpecError> {
        let spec: EndpointSpec = parse_json(parameter, json)?;
        spec.validate().map_err(located(parameter))?;
        Ok(spec)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        check_hostname(&self.hostname).map_err(|p| ("hostname".into(), p))?;
        if self.hosted_zone_id.is_empty() || !self.hosted_zone_id.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
            return Err(("hosted_zone_id".into(), format!("{:?} is not a Route53 hosted zone id", self.hosted_zone_id)));
        }
        if self.clusters.is_empty() {
            return Err(("clusters".into(), "must name at least one cluster".into()));
        }
        if self.clusters.len() > MAX_TARGET_GROUPS_PER_FORWARD {
            return Err((
                "clusters".into(),
                format!("{} clusters, but an ALB forward action takes at most {MAX_TARGET_GROUPS_PER_FORWARD} target groups", self.clusters.len()),
            ));
        }
        for (name, weight) in &self.clusters {
            crate::names::check_cluster_name(name).map_err(|p| (format!("clusters.{name}"), p))?;
            if *weight > 999 {
                return Err((format!("clusters.{name}"), format!("weight {weight} is above 999")));
            }
        }
        for (i, c) in self.restricted_cidrs.iter().enumerate() {
            if !check_cidr(c) {
                return Err((format!("restricted_cidrs[{i}]"), format!("{c:?} is not a CIDR block")));
            }
        }
        if self.restricted_cidrs.len() > 4 {
            return Err(("restricted_cidrs".into(), "an ALB source-ip condition takes at most 4 values here".into()));
        }
        if self.stickiness_s > 604_800 {
            return Err(("stickiness_s".into(), "must be at most 604800 (7 days)".into()));
        }
        if let Some(h) = &self.health {
            if !h.path.starts_with('/') {
                return Err(("health.path".into(), format!("{:?} must start with '/'", h.path)));
            }
        }
        Ok(())
    }
}

impl RegionSpec {
    pub fn parse(parameter: &str, json: &str) -> Result<RegionSpec, SpecError> {
        let spec: RegionSpec = parse_json(parameter, json)?;
        if !spec.alb_arn.contains(":loadbalancer/app/") {
            return Err(located(parameter)(("alb_arn".into(), format!("{:?} is not an application load balancer ARN", spec.alb_arn))));
        }
        if spec.listener_arns.is_empty() {
            return Err(located(parameter)(("listener_arns".into(), "must list at least one listener".into())));
        }
        for (i, l) in spec.listener_arns.iter().enumerate() {
            if !l.contains(":listener/app/") {
                return Err(located(parameter)((format!("listener_arns[{i}]"), format!("{l:?} is not an ALB listener ARN"))));
            }
        }
        check_hostname(&spec.zone).map_err(|p| located(parameter)(("zone".into(), p)))?;
        Ok(spec)
    }
}

impl SnapshotSpec {
    fn validate(&self) -> Result<(), (String, String)> {
        let b = &self.bucket;
        let bucket_ok = (3..=63).contains(&b.len())
            && b.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
            && b.as_bytes()[0].is_ascii_alphanumeric()
            && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric();
        if !bucket_ok {
            return Err(("snapshots.bucket".into(), format!("{b:?} is not an S3 bucket name (3-63 of a-z, 0-9, '.', '-')")));
        }
        let f = &self.folder;
        if f.is_empty() || f.starts_with('/') || f.ends_with('/') || f.contains("//") || f.len() > 512 || f.chars().any(char::is_control) {
            return Err(("snapshots.folder".into(), format!("{f:?} must be a key prefix without a leading or trailing '/'")));
        }
        if let Some(r) = &self.region {
            if !crate::names::is_region(r) {
                return Err(("snapshots.region".into(), format!("{r:?} is not an AWS region name")));
            }
        }
        let fields: Vec<&str> = self.schedule.split_whitespace().collect();
        let cron_ok = fields.len() == 5 && fields.iter().all(|f| f.bytes().all(|c| c.is_ascii_alphanumeric() || b"*/,-".contains(&c)));
        if !cron_ok {
            return Err(("snapshots.schedule".into(), format!("{:?} is not a five-field cron schedule", self.schedule)));
        }
        if self.retention == 0 || self.retention > 1000 {
            return Err(("snapshots.retention".into(), format!("{} is not between 1 and 1000", self.retention)));
        }
        Ok(())
    }
}

impl ClusterSpec {
    /// Parses and validates the JSON held in `parameter`.
    pub fn parse(parameter: &str, json: &str) -> Result<ClusterSpec, SpecError> {
        let spec: ClusterSpec = parse_json(parameter, json)?;
        spec.validate().map_err(located(parameter))?;
        Ok(spec)
    }

    /// The cluster's ingress target group, if it has one.
    pub fn ingress(&self) -> Option<&TargetGroupSpec> {
        self.target_groups.iter().find(|tg| tg.ingress)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        check_hostname(&self.api.hostname).map_err(|p| ("api.hostname".into(), p))?;
        let zone = &self.api.hosted_zone_id;
        if zone.is_empty() || !zone.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
            return Err(("api.hosted_zone_id".into(), format!("{zone:?} is not a Route53 hosted zone id")));
        }
        if self.api.ttl > 172_800 {
            return Err(("api.ttl".into(), format!("{} is above Route53's limit of 172800 seconds", self.api.ttl)));
        }
        for (i, tg) in self.target_groups.iter().enumerate() {
            if !(tg.arn.starts_with("arn:") && tg.arn.contains(":elasticloadbalancing:") && tg.arn.contains(":targetgroup/")) {
                return Err((format!("target_groups[{i}].arn"), format!("{:?} is not a target group ARN", tg.arn)));
            }
            if tg.port == 0 {
                return Err((format!("target_groups[{i}].port"), "must be between 1 and 65535".into()));
            }
            if tg.roles.is_empty() {
                return Err((format!("target_groups[{i}].roles"), "must list at least one role".into()));
            }
        }
        let ingress = self.target_groups.iter().filter(|tg| tg.ingress).count();
        if ingress > 1 {
            return Err(("target_groups".into(), format!("{ingress} groups are marked ingress; at most one may be")));
        }
        for (i, probe) in self.readiness.iter().enumerate() {
            if !(probe.http.starts_with("http://") || probe.http.starts_with("https://")) {
                return Err((format!("readiness[{i}].http"), format!("{:?} is not an http:// or https:// URL", probe.http)));
            }
            if !(100..=599).contains(&probe.expect_status) {
                return Err((format!("readiness[{i}].expect_status"), format!("{} is not an HTTP status", probe.expect_status)));
            }
            if probe.roles.is_empty() {
                return Err((format!("readiness[{i}].roles"), "must list at least one role".into()));
            }
        }
        for (side, role, map) in [("server", Role::ControlPlane, &self.k3s.server), ("agent", Role::Node, &self.k3s.agent)] {
            for (key, value) in map {
                let field = format!("k3s.{side}.{key}");
                if AGENT_OWNED_KEYS.contains(&key.as_str()) {
                    return Err((field, "is set by the agent itself and may not be given in the spec".into()));
                }
                if role.is_server() && is_snapshot_key(key) {
                    return Err((field, "is set by the agent from the spec's `snapshots` section; configure snapshots there".into()));
                }
                if !is_k3s_flag(role, key) {
                    return Err((field, format!("is not a flag of `k3s {side}`")));
                }
                if is_list_key(key) {
                    let ok = match value {
                        Value::Array(items) => items.iter().all(|v| v.is_string()),
                        Value::String(_) => true,
                        _ => false,
                    };
                    if !ok {
                        return Err((field, "must be a string or a list of strings".into()));
                    }
                    if key == "node-label" {
                        check_node_labels(&field, value)?;
                    }
                } else if !(value.is_string() || value.is_boolean() || value.is_number()) {
                    return Err((field, "must be a string, number or boolean".into()));
                }
            }
        }
        if let Some(s) = &self.snapshots {
            s.validate()?;
        }
        if self.drain.timeout_s == 0 || self.drain.timeout_s > 3600 {
            return Err(("drain.timeout_s".into(), format!("{} is not between 1 and 3600 seconds", self.drain.timeout_s)));
        }
        Ok(())
    }

    /// Target groups an instance of `role` belongs in.
    pub fn target_groups_for(&self, role: Role) -> impl Iterator<Item = &TargetGroupSpec> {
        self.target_groups.iter().filter(move |tg| tg.roles.contains(&role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/k3s-asg/clusters/alpha/config";

    fn example() -> &'static str {
        r#"{
          "api": { "hostname": "api.alpha.us-east-1.example.com", "hosted_zone_id": "Z0123", "ttl": 30, "address": "private" },
          "target_groups": [
            { "arn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/alpha-ingress/0123456789abcdef",
              "port": 80, "roles": ["node", "control-plane"], "ingress": true }
          ],
          "readiness": [ { "http": "http://127.0.0.1:80/ping", "expect_status": 200 } ],
          "k3s": { "server": { "disable": ["servicelb"] }, "agent": {} },
          "drain": { "timeout_s": 360, "grace_period_s": 180 }
        }"#
    }

    #[test]
    fn an_empty_key_is_named_as_the_document() {
        let e = EndpointSpec::parse("/p", r#"{"hostname":"a.example.com","":1}"#).unwrap_err();
        assert_eq!(e.field, "(document)");
        assert!(e.problem.contains("unknown field"), "{e:?}");
    }

    #[test]
    fn design_example_parses() {
        let spec = ClusterSpec::parse(P, example()).unwrap();
        assert_eq!(spec.api.ttl, 30);
        assert_eq!(spec.target_groups_for(Role::Node).count(), 1);
        assert_eq!(spec.k3s.server["disable"], serde_json::json!(["servicelb"]));
    }

    #[test]
    fn defaults_fill_in() {
        let spec = ClusterSpec::parse(P, r#"{"api":{"hostname":"api.a.example.com","hosted_zone_id":"Z1"}}"#).unwrap();
        assert_eq!(spec.api.ttl, 30);
        assert_eq!(spec.api.address, AddressKind::Private);
        assert_eq!(spec.drain, DrainSpec::default());
        assert!(spec.target_groups.is_empty());
    }

    fn err(json: &str) -> SpecError {
        ClusterSpec::parse(P, json).unwrap_err()
    }

    fn with(extra: &str) -> Result<ClusterSpec, SpecError> {
        ClusterSpec::parse(P, &format!(r#"{{"api":{{"hostname":"api.a.example.com","hosted_zone_id":"Z1"}}{extra}}}"#))
    }

    #[test]
    fn k3s_keys_come_from_k3s() {
        // Real keys the hand-written list missed are known now; list keys come from *SliceFlag.
        assert!(with(r#","k3s":{"server":{"etcd-s3-timeout":"5m","helm-controller-arg":["a"],"write-kubeconfig-name":"x"}}"#).is_ok());
        assert!(is_list_key("helm-controller-arg") && is_list_key("node-label") && !is_list_key("etcd-s3-timeout"));
        // Keys that would break a managed server are the agent's.
        for key in ["cluster-reset", "cluster-reset-restore-path", "agent-token-file"] {
            let e = with(&format!(r#","k3s":{{"server":{{"{key}":true}}}}"#)).unwrap_err();
            assert_eq!(e.field, format!("k3s.server.{key}"));
            assert!(e.problem.contains("set by the agent"), "{e}");
        }
        // Snapshot settings live in `snapshots`.
        let e = with(r#","k3s":{"server":{"etcd-s3-retention":5}}"#).unwrap_err();
        assert!(e.problem.contains("`snapshots`"), "{e}");
        // A server key is not an agent key.
        assert!(with(r#","k3s":{"agent":{"etcd-expose-metrics":true}}"#).unwrap_err().problem.contains("not a flag of `k3s agent`"));
    }

    #[test]
    fn node_labels_the_kubelet_refuses_are_bad_input() {
        let e = with(r#","k3s":{"agent":{"node-label":["pool=web","node-role.kubernetes.io/worker=true"]}}"#).unwrap_err();
        assert_eq!(e.field, "k3s.agent.node-label[1]");
        assert!(e.problem.contains("node-role.kubernetes.io/worker") && e.problem.contains("kubelet refuses"), "{e}");
        let e = with(r#","k3s":{"server":{"node-label":"kubernetes.io/role=master"}}"#).unwrap_err();
        assert_eq!(e.field, "k3s.server.node-label");
        // Labels the kubelet may set on its own Node pass.
        assert!(with(r#","k3s":{"agent":{"node-label":["pool=web","node.kubernetes.io/lifecycle=spot","topology.kubernetes.io/zone=a"]}}"#).is_ok());
    }

    #[test]
    fn snapshots_section() {
        let s = with(r#","snapshots":{"bucket":"my-snaps","folder":"alpha"}"#).unwrap().snapshots.unwrap();
        assert_eq!((s.schedule.as_str(), s.retention, s.region), ("0 */6 * * *", 28, None));
        for (json, field) in [
            (r#"{"bucket":"My_Bucket","folder":"a"}"#, "snapshots.bucket"),
            (r#"{"bucket":"ok-bucket","folder":"/a/"}"#, "snapshots.folder"),
            (r#"{"bucket":"ok-bucket","folder":"a","region":"mars"}"#, "snapshots.region"),
            (r#"{"bucket":"ok-bucket","folder":"a","schedule":"hourly"}"#, "snapshots.schedule"),
            (r#"{"bucket":"ok-bucket","folder":"a","retention":0}"#, "snapshots.retention"),
            (r#"{"bucket":"ok-bucket","folder":"a","bukket":"x"}"#, "snapshots"),
        ] {
            let e = with(&format!(r#","snapshots":{json}"#)).unwrap_err();
            assert!(e.field.starts_with(field), "{json}: {e}");
        }
    }

    #[test]
    fn errors_name_parameter_and_field() {
        let e = err(r#"{"api":{"hostname":"api.a.example.com","hosted_zone_id":"Z1","ttl":"x"}}"#);
        assert_eq!(e.field, "api.ttl");
        assert!(e.to_string().starts_with("parameter /k3s-asg/clusters/alpha/config: field `api.ttl`"), "{e}");

        let e = err(
            r#"{"api":{"hostname":"api.a.example.com","hosted_zone_id":"Z1"},"target_groups":[{"arn":"arn:aws:elasticloadbalancing:r:1:targetgroup/x/y","port":"80"}]}"#,
        );
        assert_eq!(e.field, "target_groups[0].port");

        let e = err(r#"{"api":{"hostname":"nope","hosted_zone_id":"Z1"}}"#);
        assert_eq!(e.field, "api.hostname");

        let e = err(r#"{"api":{"hostname":"api.a.example.com","hosted_zone_id":"Z1","hostnme":"x"}}"#);
        assert!(e.problem.contains("unknown field `hostnme`"), "{e}");

        let e = err(r#"{"api":{"hostname":"api.a.example.com","hosted_zone_id":"Z1"},"k3s":{"server":{"token":"x"}}}"#);
        assert_eq!(e.field, "k3s.server.token");

        let e = err(r#"{"api":{"hostname":"api.a.example.com","hosted_zone_id":"Z1"},"k3s":{"agent":{"cluster-cidr":"10.0.0.0/16"}}}"#);
        assert_eq!(e.field, "k3s.agent.cluster-cidr");
        assert!(e.problem.contains("not a flag of `k3s agent`"));

        let e = err(r#"{"api":{"hostname":"api.a.example.com","hosted_zone_id":"Z1"},"readiness":[{"http":"ftp://x"}]}"#);
        assert_eq!(e.field, "readiness[0].http");

        let e = err("not json");
        assert_eq!(e.field, "(document)");

        let e = err(r#"{"api":{"hostname":"api.a.example.com","hosted_zone_id":"Z1"},"target_groups":[{"arn":"x","port":80}]}"#);
        assert_eq!(e.field, "target_groups[0].arn");
    }

    #[test]
    fn endpoint_and_region_specs() {
        let e = EndpointSpec::parse(
            "/k3s-asg/endpoints/blog",
            r#"{ "hostname": "blog.example.com", "hosted_zone_id": "Z0123", "clusters": { "alpha": 1, "bravo": 1 },
                 "listener_port": 443, "health": { "path": "/healthz", "expect_status": 200 }, "restricted_cidrs": [], "stickiness_s": 0 }"#,
        )
        .unwrap();
        assert_eq!(e.clusters.len(), 2);
        let six = r#"{"hostname":"b.example.com","hosted_zone_id":"Z1","clusters":{"a":1,"b":1,"c":1,"d":1,"e":1,"f":1}}"#;
        assert_eq!(EndpointSpec::parse("p", six).unwrap_err().field, "clusters");
        let cidr = r#"{"hostname":"b.example.com","hosted_zone_id":"Z1","clusters":{"a":1},"restricted_cidrs":["10.0.0.0/33"]}"#;
        assert_eq!(EndpointSpec::parse("p", cidr).unwrap_err().field, "restricted_cidrs[0]");
        let r = RegionSpec::parse(
            "/k3s-asg/regions/us-east-1",
            r#"{"alb_arn":"arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/shared/1","listener_arns":["arn:aws:elasticloadbalancing:us-east-1:1:listener/app/shared/1/2"],"zone":"example.com"}"#,
        )
        .unwrap();
        assert_eq!(r.rules_quota, 100);
        let bad = r#"{"alb_arn":"arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/shared/1","listener_arns":["nope"],"zone":"example.com"}"#;
        assert_eq!(RegionSpec::parse("p", bad).unwrap_err().field, "listener_arns[0]");
    }
}
