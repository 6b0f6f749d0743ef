//! Route53: the control plane's MultiValueAnswer API records.

use crate::error::{Error, Result};
use crate::plan::{ApiRecord, RecordChange};
use async_trait::async_trait;
use aws_sdk_route53::types::{Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType};
use k3s_asg_aws::names::fqdn;

#[async_trait]
pub trait Dns: Send + Sync {
    /// Every `A` record set named exactly `name` in `zone`.
    async fn a_records(&self, zone: &str, name: &str) -> Result<Vec<ApiRecord>>;
    /// Applies the changes in one batch.
    async fn change(&self, zone: &str, changes: &[RecordChange]) -> Result<()>;
}

pub struct Route53(pub aws_sdk_route53::Client);

#[async_trait]
impl Dns for Route53 {
    async fn a_records(&self, zone: &str, name: &str) -> Result<Vec<ApiRecord>> {
        let want = fqdn(name);
        let mut out = Vec::new();
        let mut start: Option<(String, RrType, Option<String>)> = Some((want.clone(), RrType::A, None));
        while let Some((sname, stype, sid)) = start.take() {
            let resp = self
                .0
                .list_resource_record_sets()
                .hosted_zone_id(zone)
                .start_record_name(sname)
                .start_record_type(stype)
                .set_start_record_identifier(sid)
                .send()
                .await
                .map_err(|e| Error::sdk("list API records (route53:ListResourceRecordSets)", format!("{zone} {want}"), &e))?;
            let mut past = false;
            for rs in resp.resource_record_sets() {
                if fqdn(rs.name()) != want || rs.r#type() != &RrType::A {
                    past = true;
                    break;
                }
                out.push(ApiRecord {
                    set_identifier: rs.set_identifier().unwrap_or_default().to_string(),
                    values: rs.resource_records().iter().map(|r| r.value().to_string()).collect(),
                    ttl: rs.ttl().unwrap_or_default() as u32,
                    multivalue: rs.multi_value_answer().unwrap_or(false),
                });
            }
            if !past && resp.is_truncated() {
                if let (Some(n), Some(t)) = (resp.next_record_name(), resp.next_record_type()) {
                    start = Some((n.to_string(), t.clone(), resp.next_record_identifier().map(str::to_string)));
                }
            }
        }
        Ok(out)
    }

    async fn change(&self, zone: &str, changes: &[RecordChange]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut batch = ChangeBatch::builder().comment("k3s-asg-agent: control-plane API records");
        let mut names = Vec::new();
        for change in changes {
            let (action, name, rec) = match change {
                RecordChange::Upsert { name, record } => (ChangeAction::Upsert, name, record),
                RecordChange::Delete { name, record } => (ChangeAction::Delete, name, record),
            };
            names.push(format!("{} {}", action.as_str(), rec.set_identifier));
            let mut set = ResourceRecordSet::builder()
                .name(fqdn(name))
                .r#type(RrType::A)
                .set_identifier(&rec.set_identifier)
                .multi_value_answer(rec.multivalue)
                .ttl(rec.ttl as i64);
            for v in &rec.values {
                set = set.resource_records(ResourceRecord::builder().value(v).build().expect("value is set"));
            }
            let set = set.build().map_err(|e| Error::failed("build record set", name, e.to_string()))?;
            batch = batch.changes(Change::builder().action(action).resource_record_set(set).build().expect("fields set"));
        }
        let batch = batch.build().map_err(|e| Error::failed("build change batch", zone, e.to_string()))?;
        self.0
            .change_resource_record_sets()
            .hosted_zone_id(zone)
            .change_batch(batch)
            .send()
            .await
            .map_err(|e| Error::sdk("change API records (route53:ChangeResourceRecordSets)", format!("{zone}: {}", names.join(", ")), &e))?;
        Ok(())
    }
}
