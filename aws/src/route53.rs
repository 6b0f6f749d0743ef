//! Route53, spoken to in this one place of the workspace: zone names, record
//! listing (a whole zone, or the sets of one name and type) and change batches
//! split by Route53's per-request limits ([`crate::records::batches`]).

use crate::error::Error;
use crate::names::fqdn;
use crate::records::{AliasTarget, RecordChange, RecordData, RecordSet};
use async_trait::async_trait;
use aws_sdk_route53::types::{
    AliasTarget as R53Alias, Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, ResourceRecordSetRegion, RrType,
};

#[async_trait]
pub trait Zones: Send + Sync {
    /// The zone's domain name (lower case, no trailing dot); `None` when there is no such zone.
    async fn name(&self, zone_id: &str) -> Result<Option<String>, Error>;
    /// Every record set of the zone.
    async fn records(&self, zone_id: &str) -> Result<Vec<RecordSet>, Error>;
    /// The record sets named exactly `name` of type `rtype` (one short listing, not the zone).
    async fn records_named(&self, zone_id: &str, name: &str, rtype: &str) -> Result<Vec<RecordSet>, Error>;
    /// Applies the changes, in order, in as few requests as Route53's limits allow. Route53
    /// applies a request whole or not at all, and refuses it whole when a `DELETE` does not
    /// match the current record set exactly: changes that others may race belong in
    /// [`Zones::delete_each`].
    async fn change(&self, zone_id: &str, changes: &[RecordChange]) -> Result<(), Error>;

    /// Sends each delete in a request of its own, so one that races another writer cannot take
    /// the others (or a caller's own record) down with it. A record set already gone (another
    /// agent or the coordinator deleted it first) counts as deleted; one changed since it was
    /// read is left to whoever changed it. Any other failure is returned.
    async fn delete_each(&self, zone_id: &str, deletes: &[RecordChange]) -> Result<(), Error> {
        for d in deletes {
            let Err(e) = self.change(zone_id, std::slice::from_ref(d)).await else { continue };
            let r = d.record();
            let now = self.records_named(zone_id, &r.name, &r.rtype).await?;
            match now.iter().find(|x| x.set_identifier == r.set_identifier) {
                None => tracing::info!(record = %r.label(), "already deleted by another writer"),
                Some(x) if x != r => tracing::info!(record = %r.label(), "changed by another writer since it was read; left alone"),
                Some(_) => return Err(e),
            }
        }
        Ok(())
    }
}

pub struct Route53(pub aws_sdk_route53::Client);

fn to_set(r: &RecordSet) -> Result<ResourceRecordSet, Error> {
    let bad = |e: aws_sdk_route53::error::BuildError| Error::failed("build record set", r.label(), e.to_string());
    let mut b = ResourceRecordSet::builder().name(&r.name).r#type(RrType::from(r.rtype.as_str())).set_set_identifier(r.set_identifier.clone());
    if let Some(region) = &r.region {
        b = b.region(ResourceRecordSetRegion::from(region.as_str()));
    }
    let values = |mut b: aws_sdk_route53::types::builders::ResourceRecordSetBuilder, ttl: u32, values: &[String]| {
        b = b.ttl(ttl as i64);
        for v in values {
            b = b.resource_records(ResourceRecord::builder().value(v).build().map_err(bad)?);
        }
        Ok::<_, Error>(b)
    };
    b = match &r.data {
        RecordData::Alias(a) => b.alias_target(
            R53Alias::builder().hosted_zone_id(&a.hosted_zone_id).dns_name(&a.dns_name).evaluate_target_health(true).build().map_err(bad)?,
        ),
        RecordData::Txt { ttl, values: v } => values(b, *ttl, v)?,
        RecordData::Values { ttl, values: v, multivalue } => values(if *multivalue { b.multi_value_answer(true) } else { b }, *ttl, v)?,
        RecordData::Other => return Err(Error::failed("build record set", r.label(), "not a record set k3s-asg writes")),
    };
    b.build().map_err(bad)
}

fn from_set(zone_id: &str, rs: &ResourceRecordSet) -> RecordSet {
    let values = || rs.resource_records().iter().map(|r| r.value().to_string()).collect();
    let ttl = rs.ttl().unwrap_or_default() as u32;
    let data = if let Some(a) = rs.alias_target() {
        RecordData::Alias(AliasTarget { dns_name: fqdn(a.dns_name()), hosted_zone_id: a.hosted_zone_id().to_string() })
    } else if rs.r#type() == &RrType::Txt {
        RecordData::Txt { ttl, values: values() }
    } else if rs.r#type() == &RrType::A {
        RecordData::Values { ttl, values: values(), multivalue: rs.multi_value_answer().unwrap_or(false) }
    } else {
        RecordData::Other
    };
    RecordSet {
        zone_id: zone_id.to_string(),
        name: fqdn(rs.name()),
        rtype: rs.r#type().as_str().to_string(),
        set_identifier: rs.set_identifier().map(str::to_string),
        region: rs.region().map(|r| r.as_str().to_string()),
        data,
    }
}

impl Route53 {
    /// Lists from `start` (or the zone's beginning) while `keep` holds.
    async fn list(
        &self,
        zone_id: &str,
        mut start: Option<(String, RrType, Option<String>)>,
        keep: impl Fn(&RecordSet) -> bool,
    ) -> Result<Vec<RecordSet>, Error> {
        let mut out = Vec::new();
        let resource = match &start {
            Some((name, t, _)) => format!("{zone_id} {name} {}", t.as_str()),
            None => zone_id.to_string(),
        };
        loop {
            let mut req = self.0.list_resource_record_sets().hosted_zone_id(zone_id).max_items(300);
            if let Some((n, t, id)) = start.take() {
                req = req.start_record_name(n).start_record_type(t).set_start_record_identifier(id);
            }
            let resp = req.send().await.map_err(|e| Error::sdk("read records (route53:ListResourceRecordSets)", &resource, e))?;
            for rs in resp.resource_record_sets() {
                let set = from_set(zone_id, rs);
                if !keep(&set) {
                    return Ok(out);
                }
                out.push(set);
            }
            match (resp.is_truncated(), resp.next_record_name(), resp.next_record_type()) {
                (true, Some(n), Some(t)) => start = Some((n.to_string(), t.clone(), resp.next_record_identifier().map(str::to_string))),
                _ => return Ok(out),
            }
        }
    }
}

#[async_trait]
impl Zones for Route53 {
    async fn name(&self, zone_id: &str) -> Result<Option<String>, Error> {
        match self.0.get_hosted_zone().id(zone_id).send().await {
            Ok(resp) => Ok(resp.hosted_zone().map(|z| z.name().trim_end_matches('.').to_ascii_lowercase())),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_hosted_zone() || s.is_invalid_input()) => Ok(None),
            Err(e) => Err(Error::sdk("read hosted zone (route53:GetHostedZone)", zone_id, e)),
        }
    }

    async fn records(&self, zone_id: &str) -> Result<Vec<RecordSet>, Error> {
        self.list(zone_id, None, |_| true).await
    }

    async fn records_named(&self, zone_id: &str, name: &str, rtype: &str) -> Result<Vec<RecordSet>, Error> {
        let want = fqdn(name);
        let start = Some((want.clone(), RrType::from(rtype), None));
        self.list(zone_id, start, |r| r.name == want && r.rtype == rtype).await
    }

    async fn change(&self, zone_id: &str, changes: &[RecordChange]) -> Result<(), Error> {
        for chunk in crate::records::batches(changes) {
            let mut batch = ChangeBatch::builder().comment("k3s-asg");
            for c in chunk {
                let action = match c {
                    RecordChange::Upsert { .. } => ChangeAction::Upsert,
                    RecordChange::Delete { .. } => ChangeAction::Delete,
                };
                batch = batch.changes(Change::builder().action(action).resource_record_set(to_set(c.record())?).build().expect("fields set"));
            }
            let batch = batch.build().map_err(|e| Error::failed("build change batch", zone_id, e.to_string()))?;
            let what: Vec<String> = chunk.iter().take(5).map(|c| format!("{} {}", c.action(), c.record().label())).collect();
            let more = if chunk.len() > 5 { format!(" and {} more", chunk.len() - 5) } else { String::new() };
            self.0
                .change_resource_record_sets()
                .hosted_zone_id(zone_id)
                .change_batch(batch)
                .send()
                .await
                .map_err(|e| Error::sdk("change records (route53:ChangeResourceRecordSets)", format!("{zone_id}: {}{more}", what.join(", ")), e))?;
        }
        Ok(())
    }
}
