//! The readable `plan` listing.

use crate::model::{Plan, RecordChange, RecordData, RuleChange, RuleSpec};

fn rule(spec: &RuleSpec) -> String {
    let fwd: Vec<String> = spec.forward.iter().map(|(arn, w)| format!("{}={w}", arn.rsplit(':').next().unwrap_or(arn))).collect();
    let mut s = format!("host {} → forward [{}]", spec.host, fwd.join(", "));
    if !spec.source_ips.is_empty() {
        s.push_str(&format!(" from {}", spec.source_ips.join(",")));
    }
    if spec.stickiness_s > 0 {
        s.push_str(&format!(" sticky {}s", spec.stickiness_s));
    }
    s
}

pub fn text(p: &Plan) -> String {
    let mut out = String::new();
    for c in &p.rules {
        out.push_str(&match c {
            RuleChange::Create { purpose, priority, spec, .. } => format!("+ rule   {} (priority {priority})   [{purpose}]\n", rule(spec)),
            RuleChange::Modify { purpose, to, arn, .. } => format!("~ rule   {}   [{purpose}] {arn}\n", rule(to)),
            RuleChange::Delete { hosts, arn, .. } => {
                format!("- rule   host {}   {arn}\n", hosts.join(","))
            }
            RuleChange::Reprioritize { host, from, to, arn, .. } => format!("~ order  host {host}: priority {from} → {to}   {arn}\n"),
        });
    }
    for c in p.records.iter().chain(&p.api_garbage) {
        let (sign, purpose, r) = match c {
            RecordChange::Upsert { purpose, record } => ("+", purpose, record),
            RecordChange::Delete { purpose, record } => ("-", purpose, record),
        };
        let what = match &r.data {
            RecordData::Alias(a) => format!("alias {}", a.dns_name),
            RecordData::Txt { values, .. } | RecordData::Values { values, .. } => values.join(" "),
            RecordData::Other => String::new(),
        };
        out.push_str(&format!("{sign} record {} {} ({}) {what}   [{purpose}]\n", r.name, r.rtype, r.set_identifier.as_deref().unwrap_or("-")));
    }
    for n in &p.notes {
        out.push_str(&format!("* note: {n}\n"));
    }
    for c in &p.conflicts {
        out.push_str(&format!("! conflict: {c}\n"));
    }
    for l in &p.left_out {
        out.push_str(&format!("! left out: {l}\n"));
    }
    for r in &p.refused {
        out.push_str(&format!("! refused: {r}\n"));
    }
    if p.is_empty() && p.conflicts.is_empty() {
        out.push_str("no changes: the region matches the desired state\n");
    }
    out
}
