//! What a long-running coordinator (`run`, Lambda) keeps between reconciles so
//! that a steady-state reconcile costs a handful of reads:
//!
//! - the specs from SSM and the ALB's identity and listeners, reloaded after
//!   `refresh`, after any failed reconcile, and at once when a Parameter Store
//!   change event arrives (Lambda);
//! - the `k3s-asg:owner` tag of every rule ARN seen (rule ARNs are never reused
//!   and the tag is written at creation), so `DescribeTags` is only sent for
//!   rules not seen before; cleared on every reload.
//!
//! What AWS holds — the rules, their conditions and actions, the records — is
//! read on every reconcile; only inputs that change by an operator's hand are kept.
//! One-shot commands (`plan`, `apply`) use [`Warm::cold`], which keeps nothing.

use crate::model::AliasTarget;
use crate::source::Specs;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct Loaded {
    pub specs: Specs,
    pub alias: AliasTarget,
    /// listener ARN → port, for every listener of the ALB.
    pub listeners: BTreeMap<String, u16>,
    /// hosted zone id → its domain (None: no such zone), for every endpoint's zone.
    pub zone_names: BTreeMap<String, Option<String>>,
}

pub struct Warm {
    refresh: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    loaded: Option<(Instant, Loaded)>,
    /// rule ARN → its owner tag (None: the rule has none).
    owners: HashMap<String, Option<String>>,
}

impl Warm {
    /// Keeps what it loads for `refresh`.
    pub fn new(refresh: Duration) -> Self {
        Warm { refresh, inner: Mutex::new(Inner::default()) }
    }

    /// Keeps nothing: every reconcile reads everything.
    pub fn cold() -> Self {
        Self::new(Duration::ZERO)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The loaded inputs, when they are younger than `refresh`.
    pub fn loaded(&self) -> Option<(Duration, Loaded)> {
        let inner = self.lock();
        let (at, loaded) = inner.loaded.as_ref()?;
        let age = at.elapsed();
        (age < self.refresh).then(|| (age, loaded.clone()))
    }

    /// Records freshly loaded inputs; forgets every cached owner tag.
    pub fn store(&self, loaded: Loaded) {
        let mut inner = self.lock();
        inner.owners.clear();
        if !self.refresh.is_zero() {
            inner.loaded = Some((Instant::now(), loaded));
        }
    }

    /// Forgets everything; the next reconcile reads all inputs again.
    pub fn invalidate(&self, why: &str) {
        let mut inner = self.lock();
        if inner.loaded.is_some() || !inner.owners.is_empty() {
            tracing::info!(reason = why, "forgetting cached specs and rule owners");
        }
        *inner = Inner::default();
    }

    /// Splits `arns` into known owners and the ARNs whose tags must be read.
    pub fn owners(&self, arns: &[String]) -> (BTreeMap<String, Option<String>>, Vec<String>) {
        let inner = self.lock();
        let mut known = BTreeMap::new();
        let mut unknown = Vec::new();
        for arn in arns {
            match inner.owners.get(arn) {
                Some(o) => {
                    known.insert(arn.clone(), o.clone());
                }
                None => unknown.push(arn.clone()),
            }
        }
        (known, unknown)
    }

    /// Remembers the owner of rules this coordinator just created.
    pub fn add_owners(&self, created: impl IntoIterator<Item = (String, Option<String>)>) {
        if !self.refresh.is_zero() {
            self.lock().owners.extend(created);
        }
    }

    /// Remembers owner tags read or written; keeps only `current` ARNs (rules that still exist) plus these.
    pub fn remember_owners(&self, current: &[String], learned: impl IntoIterator<Item = (String, Option<String>)>) {
        if self.refresh.is_zero() {
            return;
        }
        let mut inner = self.lock();
        let keep: std::collections::HashSet<&String> = current.iter().collect();
        inner.owners.retain(|arn, _| keep.contains(arn));
        inner.owners.extend(learned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k3s_asg_aws::spec::RegionSpec;

    fn loaded() -> Loaded {
        let region = RegionSpec::parse(
            "/p/regions/r",
            r#"{"alb_arn":"arn:aws:elasticloadbalancing:r:1:loadbalancer/app/a/1","listener_arns":["arn:aws:elasticloadbalancing:r:1:listener/app/a/1/2"],"zone":"example.com"}"#,
        )
        .unwrap();
        Loaded {
            specs: Specs { region, clusters: BTreeMap::new(), endpoints: BTreeMap::new(), left_out: vec![] },
            alias: AliasTarget { dns_name: "a.".into(), hosted_zone_id: "Z".into() },
            listeners: BTreeMap::new(),
            zone_names: BTreeMap::new(),
        }
    }

    #[test]
    fn cold_keeps_nothing() {
        let w = Warm::cold();
        w.store(loaded());
        assert!(w.loaded().is_none());
        w.remember_owners(&["a".into()], [("a".to_string(), Some("me".to_string()))]);
        assert_eq!(w.owners(&["a".into()]).1, vec!["a".to_string()]);
    }

    #[test]
    fn warm_keeps_until_invalidated() {
        let w = Warm::new(Duration::from_secs(300));
        w.store(loaded());
        assert!(w.loaded().is_some());
        w.remember_owners(&["a".into(), "b".into()], [("a".to_string(), Some("me".to_string())), ("b".to_string(), None)]);
        let (known, unknown) = w.owners(&["a".into(), "b".into(), "c".into()]);
        assert_eq!(known.len(), 2);
        assert_eq!(known["b"], None);
        assert_eq!(unknown, vec!["c".to_string()]);
        // A rule that is gone is forgotten.
        w.remember_owners(&["b".into()], []);
        assert_eq!(w.owners(&["a".into()]).1, vec!["a".to_string()]);
        w.invalidate("test");
        assert!(w.loaded().is_none());
        assert_eq!(w.owners(&["b".into()]).1.len(), 1);
    }

    #[test]
    fn a_reload_forgets_owner_tags() {
        let w = Warm::new(Duration::from_secs(300));
        w.remember_owners(&["a".into()], [("a".to_string(), Some("me".to_string()))]);
        w.store(loaded());
        assert_eq!(w.owners(&["a".into()]).1.len(), 1);
    }
}
