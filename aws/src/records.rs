//! Route53 record sets as plain values, shared by both programs: the agent's
//! MultiValueAnswer API records and the coordinator's latency aliases and
//! ownership TXT records are all a [`RecordSet`]; every change is a
//! [`RecordChange`]; [`batches`] splits changes by Route53's per-request limits.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AliasTarget {
    pub dns_name: String,
    pub hosted_zone_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum RecordData {
    Alias(AliasTarget),
    Txt {
        ttl: u32,
        values: Vec<String>,
    },
    /// Plain A records (the agents' MultiValueAnswer API records).
    Values {
        ttl: u32,
        values: Vec<String>,
        multivalue: bool,
    },
    Other,
}

/// One record set in a zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordSet {
    pub zone_id: String,
    /// Fully qualified, lower case, trailing dot.
    pub name: String,
    pub rtype: String,
    pub set_identifier: Option<String>,
    pub region: Option<String>,
    pub data: RecordData,
}

impl RecordSet {
    /// A control-plane instance's API record: `A`, MultiValueAnswer, `SetIdentifier` = instance id.
    pub fn api(zone_id: &str, hostname: &str, instance_id: &str, address: &str, ttl: u32) -> RecordSet {
        RecordSet {
            zone_id: zone_id.to_string(),
            name: crate::names::fqdn(hostname),
            rtype: "A".into(),
            set_identifier: Some(instance_id.to_string()),
            region: None,
            data: RecordData::Values { ttl, values: vec![address.to_string()], multivalue: true },
        }
    }

    /// The values of a TXT or plain record (none for an alias).
    pub fn values(&self) -> &[String] {
        match &self.data {
            RecordData::Txt { values, .. } | RecordData::Values { values, .. } => values,
            RecordData::Alias(_) | RecordData::Other => &[],
        }
    }

    /// `name` and, when it has one, the set identifier: how an operator finds the record.
    pub fn label(&self) -> String {
        match &self.set_identifier {
            Some(id) => format!("{} {} (set {id})", self.name, self.rtype),
            None => format!("{} {}", self.name, self.rtype),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RecordChange {
    Upsert { purpose: String, record: RecordSet },
    Delete { purpose: String, record: RecordSet },
}

impl RecordChange {
    pub fn record(&self) -> &RecordSet {
        match self {
            RecordChange::Upsert { record, .. } | RecordChange::Delete { record, .. } => record,
        }
    }

    /// Why the change is made, for logs and plans.
    pub fn purpose(&self) -> &str {
        match self {
            RecordChange::Upsert { purpose, .. } | RecordChange::Delete { purpose, .. } => purpose,
        }
    }

    /// `UPSERT` or `DELETE`, as Route53 names the action.
    pub fn action(&self) -> &'static str {
        match self {
            RecordChange::Upsert { .. } => "UPSERT",
            RecordChange::Delete { .. } => "DELETE",
        }
    }
}

/// Route53's per-request limits: 1000 changes, 1000 `ResourceRecord` values and 32,000 characters
/// of values, where an `UPSERT` counts its values twice.
pub const MAX_CHANGES: usize = 1000;
pub const MAX_VALUES: usize = 1000;
pub const MAX_CHARS: usize = 32_000;

/// (values, characters) a change counts against a batch's limits.
fn weight(c: &RecordChange) -> (usize, usize) {
    let values = c.record().values();
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

    #[test]
    fn api_records_count_their_values() {
        let api = RecordSet::api("Z", "API.example.com", "i-0123456789abcdef0", "10.0.0.1", 30);
        assert_eq!(api.name, "api.example.com.");
        assert_eq!(api.values(), ["10.0.0.1".to_string()]);
        assert_eq!(api.label(), "api.example.com. A (set i-0123456789abcdef0)");
        let ups: Vec<RecordChange> = (0..600).map(|_| RecordChange::Upsert { purpose: String::new(), record: api.clone() }).collect();
        assert_eq!(sizes(&ups), vec![500, 100]);
    }
}
