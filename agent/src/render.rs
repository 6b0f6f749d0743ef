//! Files rendered as values first; `join` writes them. Golden-tested.

use crate::vocab::Mode;
use k3s_asg_aws::node_template::NodeTemplate;
use k3s_asg_aws::spec::{is_list_key, ClusterSpec, SnapshotSpec};
use k3s_asg_aws::tags::Role;
use serde_json::Value;
use std::collections::BTreeMap;

pub const CONFIG_PATH: &str = "/etc/rancher/k3s/config.yaml";
pub const KUBECONFIG_PATH: &str = "/etc/rancher/k3s/k3s.yaml";
pub const SERVER_TOKEN_PATH: &str = "/var/lib/rancher/k3s/server/token";
/// k3s's embedded etcd datastore: wiped when a server must join instead of the cluster it began.
pub const SERVER_DB_PATH: &str = "/var/lib/rancher/k3s/server/db";
pub const DRAIN_MANIFEST_PATH: &str = "/var/lib/rancher/k3s/server/manifests/k3s-asg-drain.yaml";
pub const DRAIN_KUBECONFIG_PATH: &str = "/var/lib/k3s-asg/drain.kubeconfig";
pub const DRAIN_ACCOUNT: &str = "k3s-asg-drain";

pub fn unit_name(role: Role) -> &'static str {
    match role {
        Role::ControlPlane => "k3s",
        Role::Node => "k3s-agent",
    }
}

pub fn unit_path(role: Role) -> String {
    format!("/etc/systemd/system/{}.service", unit_name(role))
}

/// What the k3s config is made from.
pub struct ConfigInputs<'a> {
    pub role: Role,
    pub mode: Mode,
    pub instance_id: &'a str,
    pub node_ip: &'a str,
    pub region: &'a str,
    pub zone: &'a str,
    pub token: &'a str,
    /// `https://IP:6443` of a live server; `None` for cluster-init.
    pub server_url: Option<&'a str>,
    pub spec: &'a ClusterSpec,
    /// IMDS `instance-type` (the `node.kubernetes.io/instance-type` label).
    pub instance_type: Option<&'a str>,
    /// The Cluster Autoscaler's node template of the instance's group.
    pub template: &'a NodeTemplate,
    /// A server's cluster uses the agent token as its node password (it began with one):
    /// `agent-token` is configured. Never set for a cluster that began without one: k3s keeps
    /// the node password in its bootstrap data, and a server that changes it locally is
    /// refused at its next start (k3s-io/k3s `pkg/cluster/bootstrap.go` `ReconcileBootstrapData`).
    pub agent_token: bool,
}

/// Renders `/etc/rancher/k3s/config.yaml`.
///
/// Merge rule: the agent sets the identity keys (`node-name`, `node-ip`,
/// `token`, `agent-token` on servers, `server`/`cluster-init`) and the spec may not set them; for list
/// keys (`tls-san`, `node-label`, `disable`, `*-arg`, ...) the spec's entries
/// are appended after the agent's; every other key comes from the spec.
/// Values are written as JSON scalars, which YAML reads unchanged.
pub fn render_config(i: &ConfigInputs<'_>) -> String {
    let mut out = String::from("# Written by k3s-asg-agent on every join; edit the cluster spec in SSM instead.\n");
    let q = |s: &str| serde_json::to_string(s).expect("strings serialise");
    out.push_str(&format!("node-name: {}\n", q(i.instance_id)));
    out.push_str(&format!("node-ip: {}\n", q(i.node_ip)));
    out.push_str(&format!("token: {}\n", q(i.token)));
    if i.role.is_server() && i.agent_token {
        // Nodes join with this (published as `agent-token`), never with the server token.
        out.push_str(&format!("agent-token: {}\n", q(&crate::token::agent_password(crate::token::password_of(i.token)))));
    }
    match (i.mode, i.server_url) {
        (Mode::ClusterInit, _) | (Mode::Join, None) => out.push_str("cluster-init: true\n"),
        (Mode::Join, Some(url)) => out.push_str(&format!("server: {}\n", q(url))),
    }
    let extra = match i.role {
        Role::ControlPlane => &i.spec.k3s.server,
        Role::Node => &i.spec.k3s.agent,
    };
    // AWS node identity: the providerID the Cluster Autoscaler's AWS provider matches
    // (aws:///<zone>/<instance-id>), the zone, region and instance-type labels, and the group's
    // node-template labels and taints. k3s's own cloud controller is off on servers (it would
    // set k3s://<node>); with it off, k3s does not give kubelet --cloud-provider=external, so
    // no Node waits for an uninitialized taint to be lifted.
    let mut labels = vec![format!("topology.kubernetes.io/region={}", i.region), format!("topology.kubernetes.io/zone={}", i.zone)];
    if let Some(t) = i.instance_type {
        labels.push(format!("node.kubernetes.io/instance-type={t}"));
    }
    labels.extend(i.template.labels.iter().cloned());
    let mut lists: BTreeMap<String, Vec<String>> = BTreeMap::new();
    lists.insert("node-label".into(), labels);
    lists.insert("kubelet-arg".into(), vec![format!("provider-id=aws:///{}/{}", i.zone, i.instance_id)]);
    if !i.template.taints.is_empty() {
        lists.insert("node-taint".into(), i.template.taints.clone());
    }
    if i.role.is_server() {
        lists.insert("tls-san".into(), vec![i.spec.api.hostname.clone()]);
    }
    let mut scalars: BTreeMap<String, String> = BTreeMap::new();
    if i.role.is_server() {
        scalars.insert("disable-cloud-controller".into(), "true".into());
    }
    for (key, value) in extra {
        if is_list_key(key) {
            let entry = lists.entry(key.clone()).or_default();
            let items: Vec<String> = match value {
                Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
                Value::String(s) => vec![s.clone()],
                _ => vec![],
            };
            // The group's node template wins over the cluster-wide spec for a label or taint key:
            // the node that joins is the node the autoscaler predicted.
            let templated = |item: &str| match key.as_str() {
                "node-label" => i.template.labels.iter().any(|l| label_key(l) == label_key(item)),
                "node-taint" => i.template.taints.iter().any(|t| taint_key(t) == taint_key(item)),
                _ => false,
            };
            for item in items {
                if !entry.contains(&item) && !templated(&item) {
                    entry.push(item);
                }
            }
        } else {
            scalars.insert(key.clone(), value.to_string());
        }
    }
    if let (Role::ControlPlane, Some(snap)) = (i.role, &i.spec.snapshots) {
        for (key, value) in snapshot_keys(snap, i.region) {
            scalars.insert(key.into(), value);
        }
    }
    let mut keys: Vec<&String> = lists.keys().chain(scalars.keys()).collect();
    keys.sort();
    for key in keys {
        if let Some(items) = lists.get(key) {
            out.push_str(&format!("{key}:\n"));
            for item in items {
                out.push_str(&format!("  - {}\n", q(item)));
            }
        } else {
            out.push_str(&format!("{key}: {}\n", scalars[key]));
        }
    }
    out
}

/// `key` of a `key=value` label.
fn label_key(label: &str) -> &str {
    label.split_once('=').map_or(label, |(k, _)| k)
}

/// `key` and effect of a `key=value:Effect` or `key:Effect` taint.
fn taint_key(taint: &str) -> (&str, &str) {
    let (rest, effect) = taint.rsplit_once(':').unwrap_or((taint, ""));
    (label_key(rest), effect)
}

/// A scalar string key of a rendered config.yaml (`token`, `server`), as `render_config` wrote it.
/// The address in a `server:` URL (`https://10.0.1.5:6443` → `10.0.1.5`).
pub fn server_address(url: &str) -> Option<&str> {
    url.strip_prefix("https://")?.split(':').next().filter(|h| !h.is_empty())
}

pub fn configured(config: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}: ");
    config.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| serde_json::from_str(v).ok())
}

/// k3s's own etcd-snapshot keys for the spec's `snapshots` section (k3s uploads to S3 with the
/// instance's role and prunes to the retention, locally and in S3), as config.yaml values.
pub fn snapshot_keys(snap: &SnapshotSpec, instance_region: &str) -> Vec<(&'static str, String)> {
    let q = |s: &str| serde_json::to_string(s).expect("strings serialise");
    vec![
        ("etcd-s3", "true".into()),
        ("etcd-s3-bucket", q(&snap.bucket)),
        ("etcd-s3-folder", q(&snap.folder)),
        ("etcd-s3-region", q(snap.region.as_deref().unwrap_or(instance_region))),
        ("etcd-s3-retention", snap.retention.to_string()),
        ("etcd-snapshot-retention", snap.retention.to_string()),
        ("etcd-snapshot-schedule-cron", q(&snap.schedule)),
    ]
}

/// The systemd unit, equivalent to what k3s's installer writes.
pub fn render_unit(role: Role) -> String {
    let (kind, ty, guard) = match role {
        Role::ControlPlane => ("server", "notify", TOMBSTONE_GUARD),
        Role::Node => ("agent", "exec", ""),
    };
    let name = unit_name(role);
    format!(
        "\
# Written by k3s-asg-agent (equivalent to the unit k3s's installer writes).
[Unit]
Description=Lightweight Kubernetes
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type={ty}
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-/etc/systemd/system/{name}.service.env
KillMode=process
Delegate=yes
User=root
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
{guard}ExecStart=/usr/local/bin/k3s {kind}
"
    )
}

/// A server whose etcd member was removed (k3s wrote its tombstone, then exited) is not started
/// again by systemd's `Restart=always`: restarted, k3s would move its datastore aside and join
/// the cluster as a new member, or, with `cluster-init` and no `server`, start a second cluster
/// with the same CA and token (k3s-io/k3s `pkg/etcd/etcd.go`). The agent decides instead: it
/// backs the datastore up and joins the live cluster (`join`, which `run` goes back to).
const TOMBSTONE_GUARD: &str = "\
# k3s-asg: a removed etcd member (k3s's tombstone) is not restarted here; k3s-asg-agent rejoins it.
ExecStartPre=/bin/sh -c 'if [ -e /var/lib/rancher/k3s/server/db/etcd/tombstone ]; then echo k3s-asg: etcd member removed, k3s-asg-agent rejoins this server >&2; exit 1; fi'
";

/// The least-privilege identity worker nodes drain themselves with, installed
/// through k3s's auto-deploy manifests directory.
pub fn render_drain_manifest() -> String {
    format!(
        "\
# Written by k3s-asg-agent: the identity nodes use to cordon, drain and delete themselves.
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {DRAIN_ACCOUNT}
  namespace: kube-system
---
apiVersion: v1
kind: Secret
metadata:
  name: {DRAIN_ACCOUNT}
  namespace: kube-system
  annotations:
    kubernetes.io/service-account.name: {DRAIN_ACCOUNT}
type: kubernetes.io/service-account-token
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {DRAIN_ACCOUNT}
rules:
  - apiGroups: [\"\"]
    resources: [\"nodes\"]
    verbs: [\"get\", \"list\", \"patch\", \"delete\"]
  - apiGroups: [\"\"]
    resources: [\"pods\"]
    verbs: [\"get\", \"list\"]
  - apiGroups: [\"\"]
    resources: [\"pods/eviction\"]
    verbs: [\"create\"]
  - apiGroups: [\"apps\"]
    resources: [\"daemonsets\", \"statefulsets\", \"replicasets\"]
    verbs: [\"get\"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {DRAIN_ACCOUNT}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {DRAIN_ACCOUNT}
subjects:
  - kind: ServiceAccount
    name: {DRAIN_ACCOUNT}
    namespace: kube-system
"
    )
}

/// The admin kubeconfig k3s wrote, pointed at the API hostname instead of loopback.
pub fn admin_kubeconfig(k3s_yaml: &str, api_hostname: &str) -> String {
    k3s_yaml
        .lines()
        .map(|l| match l.trim_start().strip_prefix("server:") {
            Some(_) => {
                let indent = &l[..l.len() - l.trim_start().len()];
                format!("{indent}server: https://{api_hostname}:6443")
            }
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// A kubeconfig for the drain account: the cluster CA from k3s.yaml, a bearer token.
pub fn drain_kubeconfig(k3s_yaml: &str, api_hostname: &str, token: &str) -> Option<String> {
    let ca = k3s_yaml.lines().find_map(|l| l.trim().strip_prefix("certificate-authority-data:"))?.trim();
    Some(format!(
        "\
apiVersion: v1
kind: Config
clusters:
  - name: k3s-asg
    cluster:
      server: https://{api_hostname}:6443
      certificate-authority-data: {ca}
users:
  - name: {DRAIN_ACCOUNT}
    user:
      token: {token}
contexts:
  - name: {DRAIN_ACCOUNT}
    context:
      cluster: k3s-asg
      user: {DRAIN_ACCOUNT}
current-context: {DRAIN_ACCOUNT}
"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn golden(name: &str, actual: &str) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata").join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1 to create it)", path.display()));
        assert_eq!(actual, expected, "{} differs from the rendered text", path.display());
    }

    static TEMPLATE: std::sync::LazyLock<NodeTemplate> =
        std::sync::LazyLock::new(|| NodeTemplate { labels: vec!["pool=arm".into()], taints: vec!["arch=arm64:NoSchedule".into()] });

    fn spec() -> ClusterSpec {
        ClusterSpec::parse(
            "/k3s-asg/clusters/alpha/config",
            r#"{"api":{"hostname":"api.alpha.us-east-1.example.com","hosted_zone_id":"Z0123"},
                "k3s":{"server":{"disable":["servicelb","traefik"],"tls-san":["k8s.example.com"],"write-kubeconfig-mode":"0600","etcd-expose-metrics":true},
                       "agent":{"node-label":["pool=general"],"kubelet-arg":"max-pods=200"}},
                "snapshots":{"bucket":"alpha-etcd-snapshots","folder":"clusters/alpha","schedule":"0 */4 * * *","retention":12}}"#,
        )
        .unwrap()
    }

    fn inputs<'a>(spec: &'a ClusterSpec, role: Role, mode: Mode, server: Option<&'a str>) -> ConfigInputs<'a> {
        ConfigInputs {
            role,
            mode,
            instance_id: "i-0123456789abcdef0",
            node_ip: "10.0.1.17",
            region: "us-east-1",
            zone: "us-east-1a",
            token: "K10aaaa::server:pw",
            server_url: server,
            spec,
            instance_type: Some("m7g.large"),
            template: &TEMPLATE,
            agent_token: true,
        }
    }

    #[test]
    fn a_server_of_a_cluster_begun_without_an_agent_token_keeps_the_server_password_for_nodes() {
        let spec = spec();
        let with = render_config(&inputs(&spec, Role::ControlPlane, Mode::Join, Some("https://10.0.1.5:6443")));
        assert!(with.contains("agent-token: "), "{with}");
        let legacy = render_config(&ConfigInputs { agent_token: false, ..inputs(&spec, Role::ControlPlane, Mode::Join, Some("https://10.0.1.5:6443")) });
        assert!(!legacy.contains("agent-token"), "{legacy}");
        assert_eq!(legacy.lines().count() + 1, with.lines().count(), "only that line differs");
    }

    #[test]
    fn configured_keys_read_back() {
        let s = spec();
        let text = render_config(&inputs(&s, Role::Node, Mode::Join, Some("https://10.0.1.5:6443")));
        assert_eq!(configured(&text, "token").as_deref(), Some("K10aaaa::server:pw"));
        assert_eq!(configured(&text, "server").as_deref(), Some("https://10.0.1.5:6443"));
        assert_eq!(configured(&text, "cluster-init"), None);
        assert_eq!(server_address("https://10.0.1.5:6443"), Some("10.0.1.5"));
        assert_eq!(server_address("10.0.1.5:6443"), None);
    }

    #[test]
    fn config_cluster_init() {
        let s = spec();
        golden("config-server-init.yaml", &render_config(&inputs(&s, Role::ControlPlane, Mode::ClusterInit, None)));
    }

    #[test]
    fn config_server_join() {
        let s = spec();
        golden("config-server-join.yaml", &render_config(&inputs(&s, Role::ControlPlane, Mode::Join, Some("https://10.0.1.5:6443"))));
    }

    #[test]
    fn config_server_outside_a_tagged_group() {
        let s = spec();
        let empty = NodeTemplate::default();
        let mut i = inputs(&s, Role::ControlPlane, Mode::Join, Some("https://10.0.1.5:6443"));
        i.template = &empty;
        golden("config-server-join-no-group.yaml", &render_config(&i));
    }

    #[test]
    fn config_agent_outside_a_tagged_group() {
        let s = spec();
        let empty = NodeTemplate::default();
        let mut i = inputs(&s, Role::Node, Mode::Join, Some("https://10.0.1.5:6443"));
        i.template = &empty;
        i.instance_type = None;
        golden("config-agent-no-group.yaml", &render_config(&i));
    }

    #[test]
    fn config_agent() {
        let s = spec();
        golden("config-agent.yaml", &render_config(&inputs(&s, Role::Node, Mode::Join, Some("https://10.0.1.5:6443"))));
    }

    #[test]
    fn units_and_manifest() {
        golden("k3s.service", &render_unit(Role::ControlPlane));
        golden("k3s-agent.service", &render_unit(Role::Node));
        golden("k3s-asg-drain.yaml", &render_drain_manifest());
    }

    #[test]
    fn kubeconfigs() {
        let k3s_yaml =
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Q0E=\n    server: https://127.0.0.1:6443\n  name: default\n";
        let admin = admin_kubeconfig(k3s_yaml, "api.alpha.example.com");
        assert!(admin.contains("    server: https://api.alpha.example.com:6443\n"), "{admin}");
        assert!(!admin.contains("127.0.0.1"));
        let drain = drain_kubeconfig(k3s_yaml, "api.alpha.example.com", "tok").unwrap();
        golden("drain.kubeconfig", &drain);
        assert!(drain_kubeconfig("apiVersion: v1\n", "x", "t").is_none());
    }
}
