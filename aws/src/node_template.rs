//! The Cluster Autoscaler's scale-from-zero template, from an Auto Scaling group's tags
//! (`k8s.io/cluster-autoscaler/node-template/label/<key>` = value and
//! `.../taint/<key>` = `value:Effect`), as the k3s `node-label` / `node-taint` entries an
//! instance of the group joins with: the node the autoscaler predicted is the node that joins.

use std::collections::BTreeMap;

pub const LABEL_PREFIX: &str = "k8s.io/cluster-autoscaler/node-template/label/";
pub const TAINT_PREFIX: &str = "k8s.io/cluster-autoscaler/node-template/taint/";
/// The tag an instance of an Auto Scaling group carries with its group's name.
pub const GROUP_NAME_TAG: &str = "aws:autoscaling:groupName";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeTemplate {
    /// `key=value`, sorted by key.
    pub labels: Vec<String>,
    /// `key=value:Effect` (or `key:Effect`), sorted by key.
    pub taints: Vec<String>,
}

/// A bad template tag: the tag key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub tag: String,
    pub problem: String,
}

/// Reads the template from a group's tags; other tags are ignored.
pub fn from_tags(tags: &BTreeMap<String, String>) -> Result<NodeTemplate, TemplateError> {
    let mut t = NodeTemplate::default();
    for (tag, value) in tags {
        let bad = |problem: String| TemplateError { tag: tag.clone(), problem };
        if let Some(key) = tag.strip_prefix(LABEL_PREFIX) {
            check_key(key).map_err(|p| bad(format!("label key {key:?}: {p}")))?;
            check_value(value).map_err(|p| bad(format!("label value {value:?}: {p}")))?;
            if let Some(why) = kubelet_refuses(key) {
                return Err(bad(format!("label key {key:?}: {why}")));
            }
            t.labels.push(format!("{key}={value}"));
        } else if let Some(key) = tag.strip_prefix(TAINT_PREFIX) {
            check_key(key).map_err(|p| bad(format!("taint key {key:?}: {p}")))?;
            let (v, effect) = value
                .rsplit_once(':')
                .ok_or_else(|| bad(format!("taint {value:?} has no effect: write value:NoSchedule, value:PreferNoSchedule or value:NoExecute")))?;
            if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
                return Err(bad(format!("taint effect {effect:?} is not NoSchedule, PreferNoSchedule or NoExecute")));
            }
            check_value(v).map_err(|p| bad(format!("taint value {v:?}: {p}")))?;
            t.taints.push(if v.is_empty() { format!("{key}:{effect}") } else { format!("{key}={v}:{effect}") });
        }
    }
    Ok(t)
}

/// The `kubernetes.io` / `k8s.io` labels a kubelet may set on its own Node (`--node-labels`,
/// k3s's `node-label`): any under the `kubelet.kubernetes.io` or `node.kubernetes.io` namespaces
/// (or a subdomain of them), and these. Source: kubernetes/kubernetes
/// `pkg/kubelet/apis/well_known_labels.go` (`kubeletLabels`, `kubeletLabelNamespaces`) with the
/// `k8s.io/api/core/v1` constants they name, as the kubelet's own refusal lists them.
const KUBELET_LABELS: &[&str] = &[
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "beta.kubernetes.io/os",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "kubernetes.io/arch",
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
];
const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

/// Why the kubelet refuses to start with label `key` (`None`: it accepts it). The kubelet
/// (`cmd/kubelet/app/options/options.go`, `ValidateKubeletFlags`) refuses every label in the
/// `kubernetes.io` or `k8s.io` namespaces (or their subdomains) that is not one a kubelet may
/// set on its own Node: the NodeRestriction admission plugin, which k3s always enables, would
/// refuse it. `node-role.kubernetes.io/worker` is the common one.
pub fn kubelet_refuses(key: &str) -> Option<String> {
    let namespace = key.split_once('/').map(|(ns, _)| ns)?;
    let under = |domain: &str| namespace == domain || namespace.ends_with(&format!(".{domain}"));
    if !(under("kubernetes.io") || under("k8s.io")) {
        return None;
    }
    if KUBELET_LABELS.contains(&key) || KUBELET_LABEL_NAMESPACES.iter().any(|ns| under(ns)) {
        return None;
    }
    Some(format!(
        "the kubelet refuses to start with this 'kubernetes.io'/'k8s.io' label (only the {} prefixes and {} may be self-set \
         under NodeRestriction); set it after the node joined (kubectl label) or use a label outside those namespaces",
        KUBELET_LABEL_NAMESPACES.join(" and "),
        KUBELET_LABELS.join(", ")
    ))
}

/// A Kubernetes label key: an optional DNS-subdomain prefix and `/`, then a name of at most
/// 63 characters of alphanumerics, `-`, `_`, `.`, beginning and ending alphanumeric.
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !ok {
            return Err(format!("prefix {p:?} is not a lower-case DNS subdomain"));
        }
    }
    if name.is_empty() {
        return Err("the name part is empty".into());
    }
    check_value(name)
}

/// A label value (or key name): at most 63 characters of alphanumerics, `-`, `_`, `.`,
/// beginning and ending alphanumeric; empty is allowed for values.
fn check_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    let b = v.as_bytes();
    let ok = v.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err("must be at most 63 characters of a-z, A-Z, 0-9, '-', '_', '.', beginning and ending with a letter or digit".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(v: &[(&str, &str)]) -> BTreeMap<String, String> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn labels_and_taints_from_the_autoscalers_tags() {
        let t = from_tags(&tags(&[
            ("k8s.io/cluster-autoscaler/node-template/label/pool", "gpu"),
            ("k8s.io/cluster-autoscaler/node-template/label/nvidia.com/gpu.present", "true"),
            ("k8s.io/cluster-autoscaler/node-template/taint/dedicated", "gpu:NoSchedule"),
            ("k8s.io/cluster-autoscaler/node-template/taint/spot", ":PreferNoSchedule"),
            ("k8s.io/cluster-autoscaler/enabled", "true"),
            ("Name", "whatever / goes"),
        ]))
        .unwrap();
        assert_eq!(t.labels, vec!["nvidia.com/gpu.present=true", "pool=gpu"]);
        assert_eq!(t.taints, vec!["dedicated=gpu:NoSchedule", "spot:PreferNoSchedule"]);
    }

    #[test]
    fn bad_tags_are_named() {
        for (tag, value, says) in [
            ("k8s.io/cluster-autoscaler/node-template/taint/dedicated", "gpu", "no effect"),
            ("k8s.io/cluster-autoscaler/node-template/taint/dedicated", "gpu:Sometimes", "not NoSchedule"),
            ("k8s.io/cluster-autoscaler/node-template/label/-bad", "x", "label key"),
            ("k8s.io/cluster-autoscaler/node-template/label/Bad.Prefix/x", "x", "DNS subdomain"),
            ("k8s.io/cluster-autoscaler/node-template/label/pool", "has space", "label value"),
            ("k8s.io/cluster-autoscaler/node-template/label/", "x", "empty"),
            ("k8s.io/cluster-autoscaler/node-template/label/node-role.kubernetes.io/worker", "", "kubelet refuses"),
        ] {
            let e = from_tags(&tags(&[(tag, value)])).unwrap_err();
            assert_eq!(e.tag, tag);
            assert!(e.problem.contains(says), "{tag}={value}: {}", e.problem);
        }
    }

    #[test]
    fn the_kubelets_own_label_rule() {
        for refused in ["node-role.kubernetes.io/worker", "kubernetes.io/role", "app.kubernetes.io/name", "k8s.io/x", "x.k8s.io/y"] {
            assert!(kubelet_refuses(refused).is_some(), "{refused}");
        }
        for accepted in [
            "pool",
            "nvidia.com/gpu.present",
            "node.kubernetes.io/instance-type",
            "node.kubernetes.io/lifecycle",
            "a.node.kubernetes.io/x",
            "kubelet.kubernetes.io/x",
            "topology.kubernetes.io/zone",
            "kubernetes.io/os",
            "notkubernetes.io/x",
        ] {
            assert_eq!(kubelet_refuses(accepted), None, "{accepted}");
        }
    }
}
