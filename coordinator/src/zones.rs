//! Route53: the endpoint zones' latency records.

use crate::model::{AliasTarget, RecordChange, RecordData, RecordSet};
use crate::Error;
use async_trait::async_trait;
use aws_sdk_route53::types::{
    AliasTarget as R53Alias, Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, ResourceRecordSetRegion, RrType,
};
use k3s_asg_aws::names::fqdn;

#[async_trait]
pub trait Zones: Send + Sync {
    /// The zone's domain name (lower case, no trailing dot); `None` when there is no such zone.
    async fn name(&self, zone_id: &str) -> Result<Option<String>, Error>;
    async fn records(&self, zone_id: &str) -> Result<Vec<RecordSet>, Error>;
    /// Applies changes in as few batches as the API allows (1000 changes each).
    async fn change(&self, zone_id: &str, changes: &[RecordChange]) -> Result<(), Error>;
}

pub struct Route53(pub aws_sdk_route53::Client);

fn to_set(r: &RecordSet) -> Result<ResourceRecordSet, Error> {
    let mut b = ResourceRecordSet::builder().name(&r.name).r#type(RrType::from(r.rtype.as_str())).set_set_identifier(r.set_identifier.clone());
    if let Some(region) = &r.region {
        b = b.region(ResourceRecordSetRegion::from(region.as_str()));
    }
    match &r.data {
        RecordData::Alias(a) => {
            b = b.alias_target(
                R53Alias::builder()
                    .hosted_zone_id(&a.hosted_zone_id)
                    .dns_name(&a.dns_name)
                    .evaluate_target_health(true)
                    .build()
                    .map_err(|e| Error::failed("build alias", &r.name, e.to_string()))?,
            )
        }
        RecordData::Txt { ttl, values } => {
            b = b.ttl(*ttl as i64);
            for v in values {
                b = b
                    .resource_records(ResourceRecord::builder().value(v).build().map_err(|e| Error::failed("build record", &r.name, e.to_string()))?);
            }
        }
        RecordData::Values { ttl, values, multivalue } => {
            b = b.ttl(*ttl as i64);
            if *multivalue {
                b = b.multi_value_answer(true);
            }
            for v in values {
                b = b
                    .resource_records(ResourceRecord::builder().value(v).build().map_err(|e| Error::failed("build record", &r.name, e.to_string()))?);
            }
        }
        RecordData::Other => return Err(Error::failed("build record", &r.name, "not a record set the coordinator writes")),
    }
    b.build().map_err(|e| Error::failed("build record set", &r.name, e.to_string()))
}

#[async_trait]
impl Zones for Route53 {
    async fn name(&self, zone_id: &str) -> Result<Option<String>, Error> {
        match self.0.get_hosted_zone().id(zone_id).send().await {
            Ok(resp) => Ok(resp.hosted_zone().map(|z| z.name().trim_end_matches('.').to_ascii_lowercase())),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_hosted_zone() || s.is_invalid_input()) => Ok(None),
            Err(e) => Err(Error::sdk("read hosted zone (route53:GetHostedZone)", zone_id, &e)),
        }
    }

    async fn records(&self, zone_id: &str) -> Result<Vec<RecordSet>, Error> {
        let mut out = Vec::new();
        let mut start: Option<(String, RrType, Option<String>)> = None;
        loop {
            let mut req = self.0.list_resource_record_sets().hosted_zone_id(zone_id).max_items(300);
            if let Some((n, t, id)) = start.take() {
                req = req.start_record_name(n).start_record_type(t).set_start_record_identifier(id);
            }
            let resp = req.send().await.map_err(|e| Error::sdk("read records (route53:ListResourceRecordSets)", zone_id, &e))?;
            for rs in resp.resource_record_sets() {
                let data = if let Some(a) = rs.alias_target() {
                    RecordData::Alias(AliasTarget { dns_name: fqdn(a.dns_name()), hosted_zone_id: a.hosted_zone_id().to_string() })
                } else if rs.r#type() == &RrType::Txt {
                    RecordData::Txt {
                        ttl: rs.ttl().unwrap_or_default() as u32,
                        values: rs.resource_records().iter().map(|r| r.value().to_string()).collect(),
                    }
                } else if rs.r#type() == &RrType::A {
                    RecordData::Values {
                        ttl: rs.ttl().unwrap_or_default() as u32,
                        values: rs.resource_records().iter().map(|r| r.value().to_string()).collect(),
                        multivalue: rs.multi_value_answer().unwrap_or(false),
                    }
                } else {
                    RecordData::Other
                };
                out.push(RecordSet {
                    zone_id: zone_id.to_string(),
                    name: fqdn(rs.name()),
                    rtype: rs.r#type().as_str().to_string(),
                    set_identifier: rs.set_identifier().map(str::to_string),
                    region: rs.region().map(|r| r.as_str().to_string()),
                    data,
                });
            }
            match (resp.is_truncated(), resp.next_record_name(), resp.next_record_type()) {
                (true, Some(n), Some(t)) => start = Some((n.to_string(), t.clone(), resp.next_record_identifier().map(str::to_string))),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn change(&self, zone_id: &str, changes: &[RecordChange]) -> Result<(), Error> {
        for chunk in batches(changes) {
            let mut batch = ChangeBatch::builder().comment("k3s-asg-coordinator");
            for c in chunk {
                let action = match c {
                    RecordChange::Upsert { .. } => ChangeAction::Upsert,
                    RecordChange::Delete { .. } => ChangeAction::Delete,
                };
                batch = batch.changes(Change::builder().action(action).resource_record_set(to_set(c.record())?).build().expect("fields set"));
            }
            let batch = batch.build().map_err(|e| Error::failed("build change batch", zone_id, e.to_string()))?;
            self.0
                .change_resource_record_sets()
                .hosted_zone_id(zone_id)
                .change_batch(batch)
                .send()
                .await
                .map_err(|e| Error::sdk("change records (route53:ChangeResourceRecordSets)", zone_id, &e))?;
        }
        Ok(())
    }
}

/// Route53's per-request limits: 1000 changes, 1000 `ResourceRecord` values and 32,000 characters
/// of values, where an `UPSERT` counts its values twice.
const MAX_CHANGES: usize = 1000;
const MAX_VALUES: usize = 1000;
const MAX_CHARS: usize = 32_000;

/// (values, characters) a change counts against a batch's limits.
fn weight(c: &RecordChange) -> (usize, usize) {
    let values: Vec<&String> = match &c.record().data {
        RecordData::Alias(_) | RecordData::Other => vec![],
        RecordData::Txt { values, .. } | RecordData::Values { values, .. } => values.iter().collect(),
    };
    let factor = if matches!(c, RecordChange::Upsert { .. }) { 2 } else { 1 };
    (values.len() * factor, values.iter().map(|v| v.len()).sum::<usize>() * factor)
}

/// Splits changes, in order, into as few requests as Route53's limits allow.
pub fn batches(changes: &[RecordChange]) -> Vec<&[RecordChange]> {
    let mut out = Vec::new();
    let (mut start, mut values, mut chars) = (0, 0, 0);
    for (i, c) in changes.iter().enumerate() {
        let (v, ch) = weight(c);
        if i > start && (i - start == MAX_CHANGES || values + v > MAX_VALUES || chars + ch > MAX_CHARS) {
            out.push(&changes[start..i]);
            (start, values, chars) = (i, 0, 0);
        }
        values += v;
        chars += ch;
    }
    if start < changes.len() {
        out.push(&changes[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(upsert: bool, data: RecordData) -> RecordChange {
        let record = RecordSet { zone_id: "Z".into(), name: "a.example.com.".into(), rtype: "A".into(), set_identifier: None, region: None, data };
        if upsert {
            RecordChange::Upsert { purpose: String::new(), record }
        } else {
            RecordChange::Delete { purpose: String::new(), record }
        }
    }

    fn sizes(changes: &[RecordChange]) -> Vec<usize> {
        batches(changes).iter().map(|b| b.len()).collect()
    }

    #[test]
    fn aliases_go_a_thousand_at_a_time() {
        let alias = || change(true, RecordData::Alias(AliasTarget { dns_name: "lb.".into(), hosted_zone_id: "Z2".into() }));
        assert_eq!(sizes(&(0..400).map(|_| alias()).collect::<Vec<_>>()), vec![400]);
        assert_eq!(sizes(&(0..2500).map(|_| alias()).collect::<Vec<_>>()), vec![1000, 1000, 500]);
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn upserted_values_count_twice() {
        let txt = |upsert| change(upsert, RecordData::Txt { ttl: 300, values: vec!["\"heritage=k3s-asg\"".into()] });
        // 500 UPSERTs of one value = 1000 counted values: one batch; 501 need two.
        assert_eq!(sizes(&(0..500).map(|_| txt(true)).collect::<Vec<_>>()), vec![500]);
        assert_eq!(sizes(&(0..501).map(|_| txt(true)).collect::<Vec<_>>()), vec![500, 1]);
        assert_eq!(sizes(&(0..1000).map(|_| txt(false)).collect::<Vec<_>>()), vec![1000]);
    }

    #[test]
    fn characters_are_limited_too() {
        let long = || change(true, RecordData::Txt { ttl: 300, values: vec!["x".repeat(255)] });
        // 510 characters counted per UPSERT: 62 fit in 32,000.
        assert_eq!(sizes(&(0..100).map(|_| long()).collect::<Vec<_>>()), vec![62, 38]);
    }
}
