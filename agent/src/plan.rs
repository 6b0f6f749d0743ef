//! Pure decisions of the join path: given what was observed, what to do.

use crate::effects::target_groups::Member;
use crate::token;
use k3s_asg_aws::names::is_instance_id;
use k3s_asg_aws::spec::{ClusterSpec, TargetGroupSpec};
use k3s_asg_aws::tags::Role;
use std::collections::BTreeSet;

/// How this server starts: the one that created the token initialises the
/// cluster, every other instance joins a live server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    ClusterInit,
    Join,
}

/// Decides the mode. A config already on disk wins (a restarted agent never
/// flips an initialised server into a joiner or back); otherwise the election
/// token names the creator.
pub fn decide_mode(role: Role, existing_config: Option<&str>, token: &str, instance_id: &str) -> Mode {
    if !role.is_server() {
        return Mode::Join;
    }
    if let Some(cfg) = existing_config {
        if cfg.lines().any(|l| l.trim() == "cluster-init: true") {
            return Mode::ClusterInit;
        }
        if cfg.lines().any(|l| l.starts_with("server:")) {
            return Mode::Join;
        }
    }
    if token::election_creator(token).as_deref() == Some(instance_id) {
        Mode::ClusterInit
    } else {
        Mode::Join
    }
}

/// The `server:` URL of an existing config, if any.
pub fn existing_server(existing_config: Option<&str>) -> Option<String> {
    existing_config?.lines().find_map(|l| l.strip_prefix("server:")).map(|v| v.trim().trim_matches('"').to_string())
}

/// One A record set under the API hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRecord {
    pub set_identifier: String,
    pub values: Vec<String>,
    pub ttl: u32,
    pub multivalue: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordChange {
    Upsert { name: String, record: ApiRecord },
    Delete { name: String, record: ApiRecord },
}

/// The record this instance should own.
pub fn own_record(instance_id: &str, address: &str, ttl: u32) -> ApiRecord {
    ApiRecord { set_identifier: instance_id.to_string(), values: vec![address.to_string()], ttl, multivalue: true }
}

/// Instance ids named by the records, other than `me`: the ones to check for liveness.
pub fn other_instances(observed: &[ApiRecord], me: &str) -> Vec<String> {
    observed.iter().map(|r| r.set_identifier.clone()).filter(|id| id != me && is_instance_id(id)).collect::<BTreeSet<_>>().into_iter().collect()
}

/// Upsert our own record when it differs; delete records of instances that are
/// not live. Records whose identifier is not an instance id are not ours to touch.
pub fn api_record_changes(hostname: &str, observed: &[ApiRecord], mine: &ApiRecord, live: &BTreeSet<String>) -> Vec<RecordChange> {
    let mut changes = Vec::new();
    if !observed.iter().any(|r| r == mine) {
        changes.push(RecordChange::Upsert { name: hostname.to_string(), record: mine.clone() });
    }
    for r in observed {
        if r.set_identifier != mine.set_identifier && is_instance_id(&r.set_identifier) && !live.contains(&r.set_identifier) {
            changes.push(RecordChange::Delete { name: hostname.to_string(), record: r.clone() });
        }
    }
    changes
}

/// Addresses of servers to try joining, the one already configured first.
pub fn join_candidates(observed: &[ApiRecord], me: &str, configured: Option<&str>) -> Vec<String> {
    let mut ips: Vec<String> =
        observed.iter().filter(|r| r.set_identifier != me).flat_map(|r| r.values.iter().cloned()).collect::<BTreeSet<_>>().into_iter().collect();
    if let Some(conf) = configured {
        if let Some(pos) = ips.iter().position(|ip| conf.contains(&format!("//{ip}:"))) {
            let ip = ips.remove(pos);
            ips.insert(0, ip);
        }
    }
    ips
}

/// Target groups this instance is not yet registered in (a draining or absent
/// target counts as not registered).
pub fn missing_registrations<'a>(
    spec: &'a ClusterSpec,
    role: Role,
    instance_id: &str,
    members_of: impl Fn(&str) -> Option<&'a [Member]>,
) -> Vec<&'a TargetGroupSpec> {
    spec.target_groups_for(role)
        .filter(|tg| {
            let members = members_of(&tg.arn).unwrap_or(&[]);
            !members.iter().any(|m| m.id == instance_id && m.port == tg.port && m.state != "draining")
        })
        .collect()
}

/// Parses `name Ready-status` lines.
pub fn parse_node_readiness(text: &str) -> Vec<(String, bool)> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next()?;
            Some((name.to_string(), parts.next() == Some("True")))
        })
        .collect()
}

/// Quorum guard: may this server remove its etcd member now? Only if the
/// healthy members left afterwards still form a quorum of the membership left
/// afterwards (the last server may always go).
pub fn may_remove_member(members: &[(String, bool)], me: &str) -> Result<(), String> {
    let others: Vec<&(String, bool)> = members.iter().filter(|(n, _)| n != me).collect();
    if others.is_empty() {
        return Ok(());
    }
    let healthy = others.iter().filter(|(_, ready)| *ready).count();
    let quorum = others.len() / 2 + 1;
    if healthy >= quorum {
        Ok(())
    } else {
        Err(format!("removing this member would leave {healthy} healthy of {} control-plane members (quorum {quorum})", others.len()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn quorum_guard() {
        let m = |v: &[(&str, bool)]| v.iter().map(|(n, r)| (n.to_string(), *r)).collect::<Vec<_>>();
        assert!(may_remove_member(&m(&[("a", true), ("b", true), ("c", true)]), "a").is_ok());
        // Two of three terminating at once: b is already down.
        let e = may_remove_member(&m(&[("a", true), ("b", false), ("c", true)]), "a").unwrap_err();
        assert!(e.contains("1 healthy of 2"), "{e}");
        assert!(may_remove_member(&m(&[("a", true)]), "a").is_ok(), "the last server may go");
        assert!(may_remove_member(&m(&[("a", true), ("b", true)]), "a").is_ok());
        assert!(may_remove_member(&m(&[("a", true), ("b", true), ("c", true), ("d", false), ("e", true)]), "a").is_ok());
        assert_eq!(parse_node_readiness("i-1 True\ni-2 False\n\ni-3\n"), m(&[("i-1", true), ("i-2", false), ("i-3", false)]));
    }

    use super::*;

    const ME: &str = "i-0000000000000000a";
    const OTHER: &str = "i-0000000000000000b";
    const DEAD: &str = "i-0000000000000000c";

    #[test]
    fn mode_from_token_and_disk() {
        let mine = token::new_election_token(ME);
        let theirs = token::new_election_token(OTHER);
        assert_eq!(decide_mode(Role::ControlPlane, None, mine.expose(), ME), Mode::ClusterInit);
        assert_eq!(decide_mode(Role::ControlPlane, None, theirs.expose(), ME), Mode::Join);
        assert_eq!(decide_mode(Role::Node, None, mine.expose(), ME), Mode::Join);
        // After the token became secure, the disk remembers.
        let secure = format!("K10{}::server:pw", "a".repeat(64));
        assert_eq!(decide_mode(Role::ControlPlane, Some("cluster-init: true\n"), &secure, ME), Mode::ClusterInit);
        assert_eq!(decide_mode(Role::ControlPlane, Some("server: \"https://1.2.3.4:6443\"\n"), mine.expose(), ME), Mode::Join);
        assert_eq!(existing_server(Some("a: 1\nserver: \"https://1.2.3.4:6443\"\n")).as_deref(), Some("https://1.2.3.4:6443"));
    }

    fn rec(id: &str, ip: &str) -> ApiRecord {
        own_record(id, ip, 30)
    }

    #[test]
    fn records_upsert_self_and_prune_dead_only() {
        let foreign = ApiRecord { set_identifier: "manual".into(), values: vec!["9.9.9.9".into()], ttl: 60, multivalue: true };
        let observed = vec![rec(OTHER, "127.0.0.2"), rec(DEAD, "127.0.0.3"), foreign];
        let live: BTreeSet<String> = [OTHER.to_string()].into();
        let mine = rec(ME, "127.0.0.1");
        let changes = api_record_changes("api.example.com", &observed, &mine, &live);
        assert_eq!(
            changes,
            vec![
                RecordChange::Upsert { name: "api.example.com".into(), record: mine.clone() },
                RecordChange::Delete { name: "api.example.com".into(), record: rec(DEAD, "127.0.0.3") },
            ]
        );
        assert_eq!(other_instances(&observed, ME), vec![OTHER.to_string(), DEAD.to_string()]);
        // Converged: nothing to do.
        let observed = vec![rec(OTHER, "127.0.0.2"), mine.clone()];
        assert!(api_record_changes("api.example.com", &observed, &mine, &live).is_empty());
        // A stale value of our own is upserted.
        let observed = vec![rec(ME, "127.0.0.9")];
        assert_eq!(api_record_changes("api.example.com", &observed, &mine, &live).len(), 1);
    }

    #[test]
    fn candidates_prefer_configured() {
        let observed = vec![rec(OTHER, "127.0.0.2"), rec(DEAD, "127.0.0.3"), rec(ME, "127.0.0.1")];
        assert_eq!(join_candidates(&observed, ME, None), vec!["127.0.0.2", "127.0.0.3"]);
        assert_eq!(join_candidates(&observed, ME, Some("https://127.0.0.3:6443")), vec!["127.0.0.3", "127.0.0.2"]);
    }

    #[test]
    fn registrations() {
        let spec = ClusterSpec::parse(
            "p",
            r#"{"api":{"hostname":"api.a.example.com","hosted_zone_id":"Z1"},
                "target_groups":[
                  {"arn":"arn:aws:elasticloadbalancing:r:1:targetgroup/a/1","port":80},
                  {"arn":"arn:aws:elasticloadbalancing:r:1:targetgroup/b/2","port":6443,"roles":["control-plane"]}]}"#,
        )
        .unwrap();
        let a = vec![Member { id: ME.into(), port: 80, state: "healthy".into() }];
        let members = |arn: &str| {
            if arn.ends_with("a/1") {
                Some(a.as_slice())
            } else {
                None
            }
        };
        let missing = missing_registrations(&spec, Role::ControlPlane, ME, members);
        assert_eq!(missing.len(), 1);
        assert!(missing[0].arn.ends_with("b/2"));
        assert!(missing_registrations(&spec, Role::Node, ME, members).is_empty());
        let draining = vec![Member { id: ME.into(), port: 80, state: "draining".into() }];
        assert_eq!(missing_registrations(&spec, Role::Node, ME, |_| Some(draining.as_slice())).len(), 1);
    }
}
