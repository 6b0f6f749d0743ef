//! Route53's change-batch semantics, which moto lacks: a batch is applied
//! whole or not at all; a `DELETE` must match the current record set exactly
//! (TTL, values, alias target, routing fields); a `CREATE` of an existing set
//! fails. The recording proxy checks each `ChangeResourceRecordSets` against
//! the zone's records with [`check`] before moto sees it, and answers
//! `InvalidChangeBatch` as Route53 does when the batch would fail. moto also deletes
//! loosely, every set with the `SetIdentifier` whatever its name: after a batch with deletes
//! the proxy puts back what Route53 would have kept ([`check`]'s resulting zone).

use roxmltree::{Document, Node};

/// A record set as Route53 compares them: names lower case without the trailing dot, values
/// in order-free form.
#[derive(Debug, Clone)]
pub struct Rrset {
    pub name: String,
    pub rtype: String,
    pub set_identifier: Option<String>,
    pub ttl: Option<String>,
    pub values: Vec<String>,
    /// (DNS name, hosted zone id) of an alias.
    pub alias: Option<(String, String)>,
    pub region: Option<String>,
    pub weight: Option<String>,
    pub failover: Option<String>,
    pub multivalue: bool,
    /// The `<ResourceRecordSet>` element as listed (to put it back), not compared.
    pub raw: String,
}

impl PartialEq for Rrset {
    fn eq(&self, o: &Self) -> bool {
        (
            &self.name,
            &self.rtype,
            &self.set_identifier,
            &self.ttl,
            &self.values,
            &self.alias,
            &self.region,
            &self.weight,
            &self.failover,
            self.multivalue,
        ) == (&o.name, &o.rtype, &o.set_identifier, &o.ttl, &o.values, &o.alias, &o.region, &o.weight, &o.failover, o.multivalue)
    }
}

impl Eq for Rrset {}

impl Rrset {
    pub fn key(&self) -> (&str, &str, Option<&str>) {
        (&self.name, &self.rtype, self.set_identifier.as_deref())
    }

    fn describe(&self) -> String {
        match &self.set_identifier {
            Some(id) => format!("[name='{}.', type='{}', set-identifier='{id}']", self.name, self.rtype),
            None => format!("[name='{}.', type='{}']", self.name, self.rtype),
        }
    }
}

fn child<'a>(n: Node<'a, 'a>, tag: &str) -> Option<Node<'a, 'a>> {
    n.children().find(|c| c.has_tag_name(tag))
}

fn text(n: Node, tag: &str) -> Option<String> {
    child(n, tag).and_then(|c| c.text()).map(|t| t.trim().to_string())
}

/// Route53 escapes `*` and other octets as `\NNN` in names it returns.
fn name(raw: &str) -> String {
    raw.trim_end_matches('.').replace("\\052", "*").to_ascii_lowercase()
}

fn rrset(n: Node, source: &str) -> Rrset {
    let mut values: Vec<String> = child(n, "ResourceRecords")
        .map(|rr| rr.children().filter(|c| c.has_tag_name("ResourceRecord")).filter_map(|c| text(c, "Value")).collect())
        .unwrap_or_default();
    values.sort();
    Rrset {
        name: name(&text(n, "Name").unwrap_or_default()),
        rtype: text(n, "Type").unwrap_or_default(),
        set_identifier: text(n, "SetIdentifier"),
        ttl: text(n, "TTL"),
        values,
        alias: child(n, "AliasTarget").map(|a| (name(&text(a, "DNSName").unwrap_or_default()), text(a, "HostedZoneId").unwrap_or_default())),
        region: text(n, "Region"),
        weight: text(n, "Weight"),
        failover: text(n, "Failover"),
        multivalue: text(n, "MultiValueAnswer").is_some_and(|v| v == "true"),
        raw: source[n.range()].to_string(),
    }
}

/// Where a truncated listing goes on: (name, type, identifier).
pub type NextPage = Option<(String, String, Option<String>)>;

/// The record sets of a `ListResourceRecordSets` answer, and the next page's start.
pub fn parse_listing(xml: &str) -> Result<(Vec<Rrset>, NextPage), String> {
    let doc = Document::parse(xml).map_err(|e| e.to_string())?;
    let root = doc.root_element();
    let sets = child(root, "ResourceRecordSets")
        .map(|s| s.children().filter(|c| c.has_tag_name("ResourceRecordSet")).map(|c| rrset(c, xml)).collect())
        .unwrap_or_default();
    let next = match (text(root, "IsTruncated").as_deref(), text(root, "NextRecordName"), text(root, "NextRecordType")) {
        (Some("true"), Some(n), Some(t)) => Some((n, t, text(root, "NextRecordIdentifier"))),
        _ => None,
    };
    Ok((sets, next))
}

/// A `ChangeResourceRecordSetsRequest` that upserts these sets as they were listed.
pub fn upsert_body(sets: &[&Rrset]) -> String {
    let changes: String = sets.iter().map(|s| format!("<Change><Action>UPSERT</Action>{}</Change>", s.raw)).collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ChangeResourceRecordSetsRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><ChangeBatch><Changes>{changes}</Changes></ChangeBatch></ChangeResourceRecordSetsRequest>"
    )
}

/// The (action, record set) changes of a `ChangeResourceRecordSetsRequest` body.
pub fn parse_changes(xml: &str) -> Result<Vec<(String, Rrset)>, String> {
    let doc = Document::parse(xml).map_err(|e| e.to_string())?;
    let batch = child(doc.root_element(), "ChangeBatch").ok_or("no ChangeBatch")?;
    let changes = child(batch, "Changes").ok_or("no Changes")?;
    Ok(changes
        .children()
        .filter(|c| c.has_tag_name("Change"))
        .map(|c| (text(c, "Action").unwrap_or_default(), child(c, "ResourceRecordSet").map(|r| rrset(r, xml)).unwrap_or_else(|| rrset(c, xml))))
        .collect())
}

/// Whether the batch would apply against `current`, change by change as Route53 checks it: the
/// zone as Route53 would hold it afterwards, or Route53's messages for every change that fails.
pub fn check(current: &[Rrset], changes: &[(String, Rrset)]) -> Result<Vec<Rrset>, Vec<String>> {
    let mut zone: Vec<Rrset> = current.to_vec();
    let mut problems = Vec::new();
    for (action, set) in changes {
        let at = zone.iter().position(|r| r.key() == set.key());
        match (action.as_str(), at) {
            ("CREATE", Some(_)) => problems.push(format!("Tried to create resource record set {} but it already exists", set.describe())),
            ("CREATE", None) | ("UPSERT", None) => zone.push(set.clone()),
            ("UPSERT", Some(i)) => zone[i] = set.clone(),
            ("DELETE", None) => problems.push(format!("Tried to delete resource record set {} but it was not found", set.describe())),
            ("DELETE", Some(i)) if zone[i] != *set => problems
                .push(format!("Tried to delete resource record set {} but the values provided do not match the current values", set.describe())),
            ("DELETE", Some(i)) => {
                zone.remove(i);
            }
            (other, _) => problems.push(format!("Invalid action {other}")),
        }
    }
    if problems.is_empty() {
        Ok(zone)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(name: &str, id: &str, value: &str) -> Rrset {
        Rrset {
            name: name.into(),
            rtype: "A".into(),
            set_identifier: Some(id.into()),
            ttl: Some("30".into()),
            values: vec![value.into()],
            alias: None,
            region: None,
            weight: None,
            failover: None,
            multivalue: true,
            raw: String::new(),
        }
    }

    fn change(action: &str, r: &Rrset) -> (String, Rrset) {
        (action.to_string(), r.clone())
    }

    #[test]
    fn delete_must_match_exactly_and_exist() {
        let zone = vec![a("api.x", "i-1", "10.0.0.1")];
        assert!(check(&zone, &[change("DELETE", &a("api.x", "i-1", "10.0.0.1"))]).is_ok());
        let wrong = check(&zone, &[change("DELETE", &a("api.x", "i-1", "10.0.0.9"))]).unwrap_err();
        assert!(wrong[0].contains("do not match"), "{wrong:?}");
        let gone = check(&zone, &[change("DELETE", &a("api.x", "i-2", "10.0.0.2"))]).unwrap_err();
        assert!(gone[0].contains("set-identifier='i-2'] but it was not found"), "{gone:?}");
    }

    #[test]
    fn a_batch_is_judged_in_order_and_whole() {
        let zone = vec![a("api.x", "i-1", "10.0.0.1")];
        // The upsert is fine, the second delete fails: the whole batch fails.
        let batch = [
            change("UPSERT", &a("api.x", "i-3", "10.0.0.3")),
            change("DELETE", &a("api.x", "i-1", "10.0.0.1")),
            change("DELETE", &a("api.x", "i-1", "10.0.0.1")),
        ];
        assert_eq!(check(&zone, &batch).unwrap_err().len(), 1);
        // A create of what an earlier change of the batch created fails too.
        let batch = [change("CREATE", &a("api.x", "i-3", "10.0.0.3")), change("CREATE", &a("api.x", "i-3", "10.0.0.3"))];
        assert!(check(&zone, &batch).unwrap_err()[0].contains("already exists"));
        assert!(check(&zone, &[change("UPSERT", &a("api.x", "i-1", "10.0.0.7"))]).is_ok());
    }

    #[test]
    fn parses_what_the_sdk_sends_and_moto_lists() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?><ChangeResourceRecordSetsRequest xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ChangeBatch><Comment>k3s-asg</Comment><Changes><Change><Action>DELETE</Action><ResourceRecordSet><Name>API.x.</Name><Type>A</Type><SetIdentifier>i-1</SetIdentifier><MultiValueAnswer>true</MultiValueAnswer><TTL>30</TTL><ResourceRecords><ResourceRecord><Value>10.0.0.1</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></Change></Changes></ChangeBatch></ChangeResourceRecordSetsRequest>"#;
        let changes = parse_changes(body).unwrap();
        assert_eq!(changes, vec![change("DELETE", &a("api.x", "i-1", "10.0.0.1"))]);
        let listing = r#"<ListResourceRecordSetsResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ResourceRecordSets><ResourceRecordSet><Name>api.x.</Name><Type>A</Type><SetIdentifier>i-1</SetIdentifier><MultiValueAnswer>true</MultiValueAnswer><TTL>30</TTL><ResourceRecords><ResourceRecord><Value>10.0.0.1</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></ResourceRecordSets><IsTruncated>true</IsTruncated><NextRecordName>b.x.</NextRecordName><NextRecordType>A</NextRecordType><MaxItems>1</MaxItems></ListResourceRecordSetsResponse>"#;
        let (sets, next) = parse_listing(listing).unwrap();
        assert_eq!(sets, vec![a("api.x", "i-1", "10.0.0.1")]);
        assert_eq!(next, Some(("b.x.".into(), "A".into(), None)));
    }
}
