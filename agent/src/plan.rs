//! Pure decisions of join and leave: given what was observed, what to do.
//! Imports nothing effectful: the values it decides over are the shared
//! crate's plain models (`records`, `targets`) and the agent's own state.

use crate::token;
pub use crate::vocab::Mode;
use k3s_asg_aws::names::is_instance_id;
use k3s_asg_aws::records::{RecordChange, RecordSet};
use k3s_asg_aws::spec::{ClusterSpec, TargetGroupSpec};
use k3s_asg_aws::tags::Role;
use k3s_asg_aws::targets::Member;
use std::collections::BTreeSet;

/// Decides the mode. What the state file recorded wins (a restarted agent never
/// flips an initialised server into a joiner or back); otherwise the election
/// token names the creator.
pub fn decide_mode(role: Role, recorded: Option<Mode>, token: &str, instance_id: &str) -> Mode {
    if !role.is_server() {
        return Mode::Join;
    }
    if let Some(mode) = recorded {
        return mode;
    }
    if token::election_creator(token).as_deref() == Some(instance_id) {
        Mode::ClusterInit
    } else {
        Mode::Join
    }
}

/// Instance ids named by the records, other than `me`: the ones to check for liveness.
pub fn other_instances(observed: &[RecordSet], me: &str) -> Vec<String> {
    observed
        .iter()
        .filter_map(|r| r.set_identifier.as_deref())
        .filter(|id| *id != me && is_instance_id(id))
        .map(str::to_string)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Upsert our own record when it differs; delete records of instances that are
/// not live. Records whose identifier is not an instance id are not ours to touch.
pub fn api_record_changes(observed: &[RecordSet], mine: &RecordSet, live: &BTreeSet<String>) -> Vec<RecordChange> {
    let mut changes = Vec::new();
    if !observed.iter().any(|r| r == mine) {
        changes.push(RecordChange::Upsert { purpose: "own API record".into(), record: mine.clone() });
    }
    for r in observed {
        let Some(id) = r.set_identifier.as_deref() else { continue };
        if r.set_identifier != mine.set_identifier && is_instance_id(id) && !live.contains(id) {
            changes.push(RecordChange::Delete { purpose: "API record of an instance that is not running".into(), record: r.clone() });
        }
    }
    changes
}

/// Deletes of this instance's own API records (leave).
pub fn own_record_deletes(observed: &[RecordSet], me: &str) -> Vec<RecordChange> {
    observed
        .iter()
        .filter(|r| r.set_identifier.as_deref() == Some(me))
        .map(|r| RecordChange::Delete { purpose: "own API record (leaving)".into(), record: r.clone() })
        .collect()
}

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
            !members.iter().any(|m| m.id == instance_id && m.port == tg.port && !m.state.is_draining())
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
    use super::*;
    use k3s_asg_aws::records::RecordData;
    use k3s_asg_aws::targets::TargetState;

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
    }

    const ME: &str = "i-0000000000000000a";
    const OTHER: &str = "i-0000000000000000b";
    const DEAD: &str = "i-0000000000000000c";

    #[test]
    fn mode_from_token_and_state() {
        let mine = token::new_election_token(ME);
        let theirs = token::new_election_token(OTHER);
        assert_eq!(decide_mode(Role::ControlPlane, None, mine.expose(), ME), Mode::ClusterInit);
        assert_eq!(decide_mode(Role::ControlPlane, None, theirs.expose(), ME), Mode::Join);
        assert_eq!(decide_mode(Role::Node, None, mine.expose(), ME), Mode::Join);
        // After the token became secure, the state file remembers.
        let secure = format!("K10{}::server:pw", "a".repeat(64));
        assert_eq!(decide_mode(Role::ControlPlane, Some(Mode::ClusterInit), &secure, ME), Mode::ClusterInit);
        assert_eq!(decide_mode(Role::ControlPlane, Some(Mode::Join), mine.expose(), ME), Mode::Join);
        assert_eq!(decide_mode(Role::Node, Some(Mode::ClusterInit), mine.expose(), ME), Mode::Join);
    }

    fn rec(id: &str, ip: &str) -> RecordSet {
        RecordSet::api("Z1", "api.example.com", id, ip, 30)
    }

    #[test]
    fn records_upsert_self_and_prune_dead_only() {
        let mut foreign = rec("manual", "9.9.9.9");
        foreign.data = RecordData::Values { ttl: 60, values: vec!["9.9.9.9".into()], multivalue: true };
        let observed = vec![rec(OTHER, "127.0.0.2"), rec(DEAD, "127.0.0.3"), foreign];
        let live: BTreeSet<String> = [OTHER.to_string()].into();
        let mine = rec(ME, "127.0.0.1");
        let changes = api_record_changes(&observed, &mine, &live);
        assert_eq!(
            changes,
            vec![
                RecordChange::Upsert { purpose: "own API record".into(), record: mine.clone() },
                RecordChange::Delete { purpose: "API record of an instance that is not running".into(), record: rec(DEAD, "127.0.0.3") },
            ]
        );
        assert_eq!(other_instances(&observed, ME), vec![OTHER.to_string(), DEAD.to_string()]);
        // Converged: nothing to do.
        let observed = vec![rec(OTHER, "127.0.0.2"), mine.clone()];
        assert!(api_record_changes(&observed, &mine, &live).is_empty());
        // A stale value of our own is upserted.
        let observed = vec![rec(ME, "127.0.0.9")];
        assert_eq!(api_record_changes(&observed, &mine, &live).len(), 1);
        // Leaving deletes exactly our own.
        let observed = vec![rec(OTHER, "127.0.0.2"), rec(ME, "127.0.0.1")];
        assert_eq!(own_record_deletes(&observed, ME).iter().map(|c| c.record().clone()).collect::<Vec<_>>(), vec![rec(ME, "127.0.0.1")]);
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
        let a = vec![Member { id: ME.into(), port: 80, state: TargetState::Healthy }];
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
        let draining = vec![Member { id: ME.into(), port: 80, state: TargetState::Draining }];
        assert_eq!(missing_registrations(&spec, Role::Node, ME, |_| Some(draining.as_slice())).len(), 1);
    }
}
