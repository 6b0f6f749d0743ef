//! Which servers of the cluster are live, one home: the addresses to try (the API records',
//! and EC2's control-plane instances of the cluster), probed on the k3s supervisor port. A
//! server proves it belongs to this cluster only by the CA hash in the secure token
//! (`/cacerts`, as k3s agents check); "answers" alone says a k3s runs there, of any cluster.
//! Join, recovery and the guards in `run` all ask here.

use crate::config::AgentConfig;
use crate::effects::Effects;
use crate::error::Result;
use k3s_asg_aws::records::RecordSet;
use k3s_asg_aws::spec::ApiSpec;
use k3s_asg_aws::tags::Role;
use std::collections::BTreeSet;

/// Addresses of servers to try joining, the one already configured first.
pub fn join_candidates(observed: &[RecordSet], me: &str, configured: Option<&str>) -> Vec<String> {
    let mut ips: Vec<String> = observed
        .iter()
        .filter(|r| r.set_identifier.as_deref() != Some(me))
        .flat_map(|r| r.values().iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if let Some(conf) = configured {
        if let Some(pos) = ips.iter().position(|ip| conf.contains(&format!("//{ip}:"))) {
            let ip = ips.remove(pos);
            ips.insert(0, ip);
        }
    }
    ips
}

/// Other servers of this cluster on which a k3s supervisor answers: the API records' addresses
/// and EC2's live control-plane instances of the cluster.
pub async fn answering(cfg: &AgentConfig, fx: &Effects, cluster: &str, api: &ApiSpec, me: &str) -> Result<Vec<String>> {
    let mut addresses = std::collections::BTreeMap::new();
    // Route53 busy (its budget is the account's): EC2's control-plane instances below still
    // show every server that could be live.
    let records = match crate::api_record::read(fx, &api.hosted_zone_id, &api.hostname).await {
        Ok(r) => r,
        Err(e) if e.transient => {
            tracing::debug!(error = %e, "Route53 is busy; looking for live servers through EC2 only");
            vec![]
        }
        Err(e) => return Err(e),
    };
    for r in records {
        if r.set_identifier.as_deref() != Some(me) {
            for ip in r.values() {
                addresses.insert(ip.clone(), r.set_identifier.clone().unwrap_or_default());
            }
        }
    }
    let tags = [(cfg.tag_keys.cluster.clone(), cluster.to_string()), (cfg.tag_keys.role.clone(), Role::ControlPlane.to_string())];
    for i in fx.instances.live_tagged(&tags).await? {
        if let (Some(ip), false) = (i.private_ip, i.id == me) {
            addresses.insert(ip, i.id);
        }
    }
    let mut live = Vec::new();
    for (ip, id) in addresses {
        if fx.supervisor.ca_hash(&ip).await?.is_some() {
            live.push(if id.is_empty() { ip } else { format!("{id}@{ip}") });
        }
    }
    Ok(live)
}

/// The first of `candidates` (other than `skip`) that proves the cluster CA `ca_hash`.
pub async fn first_verified(fx: &Effects, candidates: &[String], skip: Option<&str>, ca_hash: &str) -> Result<Option<String>> {
    for ip in candidates.iter().filter(|ip| Some(ip.as_str()) != skip) {
        if fx.supervisor.verified_live(ip, ca_hash).await? {
            return Ok(Some(ip.clone()));
        }
    }
    Ok(None)
}

/// A server behind the API name (other than `me`) that answers with another CA than `own_ca`:
/// (its address, its record's set identifier).
pub async fn other_cluster_behind_api(fx: &Effects, api: &ApiSpec, me: &str, own_ca: &str) -> Result<Option<(String, String)>> {
    for r in crate::api_record::read(fx, &api.hosted_zone_id, &api.hostname).await? {
        if r.set_identifier.as_deref() == Some(me) {
            continue;
        }
        for ip in r.values() {
            if fx.supervisor.ca_hash(ip).await?.is_some_and(|hash| hash != own_ca) {
                return Ok(Some((ip.clone(), r.set_identifier.clone().unwrap_or_else(|| "?".into()))));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::api_record::fixtures::{rec, DEAD, ME, OTHER};

    #[test]
    fn candidates_prefer_configured() {
        let observed = vec![rec(OTHER, "127.0.0.2"), rec(DEAD, "127.0.0.3"), rec(ME, "127.0.0.1")];
        assert_eq!(join_candidates(&observed, ME, None), vec!["127.0.0.2", "127.0.0.3"]);
        assert_eq!(join_candidates(&observed, ME, Some("https://127.0.0.3:6443")), vec!["127.0.0.3", "127.0.0.2"]);
    }
}
