//! The API record, one home (DESIGN.md "Control-plane API DNS"): one `MultiValueAnswer` A
//! record per control-plane instance under the API hostname, `SetIdentifier` = instance id.
//! Each server owns exactly its own record and prunes those of instances that no longer run.
//!
//! [`changes`] and [`own_deletes`] decide (pure); [`publish`] and [`remove`] perform, written
//! like a finalizer: a record already right is not written again, one already gone counts as
//! removed (`Zones::delete_each`), [`remove`] is correct when [`publish`] never ran, and either
//! can be cut off anywhere and run again. Join publishes, converge moves it to a renamed
//! `api.hostname` (publish under the new name, then [`finish_rename`]: remove under the old and
//! point the kubeconfigs at the new), leave removes it.

use crate::discover::Names;
use crate::effects::Effects;
use crate::error::{Error, Result};
use crate::state::State;
use k3s_asg_aws::names::is_instance_id;
use k3s_asg_aws::records::{RecordChange, RecordSet};
use k3s_asg_aws::spec::{AddressKind, ApiSpec};
use std::collections::BTreeSet;

/// Where the API record is: (hostname, hosted zone id).
pub type ApiName = (String, String);

/// Whether `name` is where `api` puts the API record (hostnames compared as Route53 does).
pub fn is_api_name(api: &ApiSpec, (host, zone): &ApiName) -> bool {
    k3s_asg_aws::names::fqdn(host) == k3s_asg_aws::names::fqdn(&api.hostname) && *zone == api.hosted_zone_id
}

/// Every instance's record under `hostname` in `zone`.
pub async fn read(fx: &Effects, zone: &str, hostname: &str) -> Result<Vec<RecordSet>> {
    fx.zones.records_named(zone, hostname, "A").await
}

/// The address this server publishes: its private address (`local_ipv4`, or IMDS's where the
/// caller has none), or its public one where `api.address` is "public". One rule wherever it is
/// published: an instance without that address is bad input naming the metadata path (a join
/// stops with exit 2; `run` logs it and tries again), never a record with another address.
pub async fn address(fx: &Effects, api: &ApiSpec, local_ipv4: Option<&str>) -> Result<String> {
    let (path, kind) = match api.address {
        AddressKind::Private => match local_ipv4 {
            Some(ip) => return Ok(ip.to_string()),
            None => ("local-ipv4", "private"),
        },
        AddressKind::Public => ("public-ipv4", "public"),
    };
    fx.metadata.get(path).await?.ok_or_else(|| {
        Error::bad_input(
            "publish API record",
            format!("/latest/meta-data/{path}"),
            format!("api.address is \"{kind}\" but the instance has no {kind} address"),
        )
    })
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
pub fn changes(observed: &[RecordSet], mine: &RecordSet, live: &BTreeSet<String>) -> Vec<RecordChange> {
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

/// Deletes of this instance's own API records (leave, or the old name after a rename).
pub fn own_deletes(observed: &[RecordSet], me: &str) -> Vec<RecordChange> {
    observed
        .iter()
        .filter(|r| r.set_identifier.as_deref() == Some(me))
        .map(|r| RecordChange::Delete { purpose: "own API record (leaving)".into(), record: r.clone() })
        .collect()
}

/// Publishes this server's record with `address` under the spec's name, removes the records of
/// instances that no longer run, and records the name and record in `st` (the caller saves).
pub async fn publish(fx: &Effects, api: &ApiSpec, me: &str, address: &str, st: &mut State) -> Result<()> {
    let observed = read(fx, &api.hosted_zone_id, &api.hostname).await?;
    let mine = RecordSet::api(&api.hosted_zone_id, &api.hostname, me, address, api.ttl);
    let others = other_instances(&observed, me);
    let live = if others.is_empty() { Default::default() } else { fx.instances.live(&others).await? };
    let changes = changes(&observed, &mine, &live);
    for c in &changes {
        tracing::info!(record = %c.record().label(), action = c.action(), purpose = c.purpose(), "API record change");
    }
    // The own record in a request of its own: a stale record that another agent or the
    // coordinator deletes first must not fail it (Route53 refuses a batch whole).
    let (own, stale): (Vec<_>, Vec<_>) = changes.into_iter().partition(|c| matches!(c, RecordChange::Upsert { .. }));
    if !own.is_empty() {
        fx.zones.change(&api.hosted_zone_id, &own).await?;
    }
    fx.zones.delete_each(&api.hosted_zone_id, &stale).await?;
    st.api_hostname = Some(api.hostname.clone());
    st.api_zone_id = Some(api.hosted_zone_id.clone());
    st.api_record = Some(format!("{} A {address} (set {me})", api.hostname));
    Ok(())
}

/// Removes this server's own record under each of `names` (each delete alone; one already gone
/// is done).
pub async fn remove(fx: &Effects, names: &[ApiName], me: &str) -> Result<()> {
    for (hostname, zone) in names {
        let records = read(fx, zone, hostname).await?;
        fx.zones.delete_each(zone, &own_deletes(&records, me)).await?;
    }
    Ok(())
}

/// Removes this server's record under the name it published before a rename, and points the
/// published kubeconfigs at the new name; then forgets the old name.
pub async fn finish_rename(fx: &Effects, st: &mut State, me: &str, names: &Names) -> Result<()> {
    let (Some((old_host, old_zone)), Some(new_host)) = (st.api_previous.clone(), st.api_hostname.clone()) else {
        return Ok(());
    };
    remove(fx, &[(old_host.clone(), old_zone)], me).await?;
    tracing::info!(hostname = %old_host, "removed this server's record under the old API name");
    crate::kubeconfigs::repoint(fx, names, &old_host, &new_host).await?;
    st.api_previous = None;
    st.save(&fx.fs)
}

/// API records for unit tests (here and in `live`).
#[cfg(test)]
pub(crate) mod fixtures {
    use k3s_asg_aws::records::RecordSet;

    pub const ME: &str = "i-0000000000000000a";
    pub const OTHER: &str = "i-0000000000000000b";
    pub const DEAD: &str = "i-0000000000000000c";

    /// One instance's API record.
    pub fn rec(id: &str, ip: &str) -> RecordSet {
        RecordSet::api("Z1", "api.example.com", id, ip, 30)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k3s_asg_aws::records::RecordData;

    use fixtures::{rec, DEAD, ME, OTHER};

    #[test]
    fn records_upsert_self_and_prune_dead_only() {
        let mut foreign = rec("manual", "9.9.9.9");
        foreign.data = RecordData::Values { ttl: 60, values: vec!["9.9.9.9".into()], multivalue: true };
        let observed = vec![rec(OTHER, "127.0.0.2"), rec(DEAD, "127.0.0.3"), foreign];
        let live: BTreeSet<String> = [OTHER.to_string()].into();
        let mine = rec(ME, "127.0.0.1");
        assert_eq!(
            changes(&observed, &mine, &live),
            vec![
                RecordChange::Upsert { purpose: "own API record".into(), record: mine.clone() },
                RecordChange::Delete { purpose: "API record of an instance that is not running".into(), record: rec(DEAD, "127.0.0.3") },
            ]
        );
        assert_eq!(other_instances(&observed, ME), vec![OTHER.to_string(), DEAD.to_string()]);
        // Converged: nothing to do.
        let observed = vec![rec(OTHER, "127.0.0.2"), mine.clone()];
        assert!(changes(&observed, &mine, &live).is_empty());
        // A stale value of our own is upserted.
        let observed = vec![rec(ME, "127.0.0.9")];
        assert_eq!(changes(&observed, &mine, &live).len(), 1);
        // Leaving deletes exactly our own.
        let observed = vec![rec(OTHER, "127.0.0.2"), rec(ME, "127.0.0.1")];
        assert_eq!(own_deletes(&observed, ME).iter().map(|c| c.record().clone()).collect::<Vec<_>>(), vec![rec(ME, "127.0.0.1")]);
    }

    #[test]
    fn names_compare_as_route53_does() {
        let api = ApiSpec { hostname: "api.a.example.com".into(), hosted_zone_id: "Z1".into(), ttl: 30, address: Default::default() };
        assert!(is_api_name(&api, &("api.a.example.com.".into(), "Z1".into())));
        assert!(!is_api_name(&api, &("api.a.example.com".into(), "Z2".into())));
        assert!(!is_api_name(&api, &("api2.a.example.com".into(), "Z1".into())));
    }
}
