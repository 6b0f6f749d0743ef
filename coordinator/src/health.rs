//! Service-aware health (the ALB cannot send a Host header in its own checks):
//! probe each cluster's healthy ingress targets with `Host: {hostname}`; a
//! cluster that fails gets weight 0 until it passes again; if every cluster
//! fails, the configured weights stay (fail open) and the plan says so.

use async_trait::async_trait;
use std::collections::BTreeMap;
use std::time::Duration;

#[async_trait]
pub trait HostProbe: Send + Sync {
    /// GET `http://{address}:{port}{path}` with `Host: {host}`; true when it answers `expect`.
    async fn probe(&self, address: &str, port: u16, path: &str, host: &str, expect: u16) -> bool;
}

pub struct HttpHostProbe;

#[async_trait]
impl HostProbe for HttpHostProbe {
    async fn probe(&self, address: &str, port: u16, path: &str, host: &str, expect: u16) -> bool {
        let Ok(client) = reqwest::Client::builder().timeout(Duration::from_secs(3)).build() else {
            return false;
        };
        match client.get(format!("http://{address}:{port}{path}")).header("host", host).send().await {
            Ok(r) => r.status().as_u16() == expect,
            Err(_) => false,
        }
    }
}

/// Weights after health: failing clusters get 0, unless all fail (fail open).
/// Returns the weights and, when something was overridden, why.
pub fn effective_weights(
    endpoint: &str,
    configured: &BTreeMap<String, u32>,
    passing: &BTreeMap<String, bool>,
) -> (BTreeMap<String, u32>, Option<String>) {
    let failing: Vec<&String> = configured.keys().filter(|c| passing.get(*c) == Some(&false)).collect();
    if failing.is_empty() {
        return (configured.clone(), None);
    }
    if failing.len() == configured.len() {
        return (
            configured.clone(),
            Some(format!("endpoint {endpoint}: every cluster fails its health check; keeping the configured weights (fail open)")),
        );
    }
    let weights = configured.iter().map(|(c, w)| (c.clone(), if failing.contains(&c) { 0 } else { *w })).collect();
    let names: Vec<&str> = failing.iter().map(|s| s.as_str()).collect();
    (weights, Some(format!("endpoint {endpoint}: weight 0 for failing cluster(s) {}", names.join(", "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m<T: Clone>(v: &[(&str, T)]) -> BTreeMap<String, T> {
        v.iter().map(|(k, x)| (k.to_string(), x.clone())).collect()
    }

    #[test]
    fn failing_clusters_get_zero_and_all_failing_fails_open() {
        let configured = m(&[("alpha", 1), ("bravo", 3)]);
        let (w, note) = effective_weights("blog", &configured, &m(&[("alpha", true), ("bravo", true)]));
        assert_eq!(w, configured);
        assert!(note.is_none());
        let (w, note) = effective_weights("blog", &configured, &m(&[("alpha", true), ("bravo", false)]));
        assert_eq!(w, m(&[("alpha", 1), ("bravo", 0)]));
        assert!(note.unwrap().contains("bravo"));
        let (w, note) = effective_weights("blog", &configured, &m(&[("alpha", false), ("bravo", false)]));
        assert_eq!(w, configured);
        assert!(note.unwrap().contains("fail open"));
        // Unknown health (nothing probed) changes nothing.
        assert_eq!(effective_weights("blog", &configured, &BTreeMap::new()).0, configured);
    }
}
