//! A boot storm: many servers and nodes of one cluster join at once while AWS throttles
//! (Route53 at its account limit, a share of every other call), for the storm test and the
//! benchmark.

use crate::world::World;
use std::time::Duration;

pub struct Storm {
    /// Exit codes of the joins that did not exit 0, with the end of their log.
    pub failed: Vec<(i32, String)>,
    pub wall: Duration,
    /// Route53 requests sent (throttled ones included), and how many were throttled.
    pub route53_sent: usize,
    pub route53_throttled: usize,
    /// Route53 requests sent per second, from the first to the last.
    pub route53_per_s: f64,
    /// The most Route53 requests sent in any one second.
    pub route53_peak: usize,
    /// Calls of the other services throttled.
    pub others_throttled: usize,
    pub calls: usize,
}

/// Boots `servers` control-plane instances and `nodes` workers of cluster `alpha` at once, each
/// with `join`, under the throttling given.
pub async fn boot(w: &World, servers: usize, nodes: usize, route53_per_s: f64, others: f64) -> anyhow::Result<Storm> {
    let mut all = Vec::new();
    for _ in 0..servers {
        all.push(w.launch("alpha", "control-plane").await?);
    }
    for _ in 0..nodes {
        all.push(w.launch("alpha", "node").await?);
    }
    w.recorder.clear();
    w.recorder.throttle(Some(route53_per_s), others);
    let t = std::time::Instant::now();
    let runs = crate::join_all(all.iter().map(|i| w.agent(i, &["join"])).collect()).await;
    let wall = t.elapsed();
    w.recorder.throttle(None, 0.0);
    let mut failed = Vec::new();
    for r in runs {
        let r = r?;
        if r.code != 0 {
            let tail: Vec<&str> = r.stderr.lines().rev().take(5).collect();
            failed.push((r.code, tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
        }
    }
    let calls = w.recorder.calls();
    let route53: Vec<&crate::recorder::Call> = calls.iter().filter(|c| c.service == "route53").collect();
    let (first, last) = (route53.iter().map(|c| c.at_ms).min().unwrap_or(0), route53.iter().map(|c| c.at_ms).max().unwrap_or(0));
    let span_s = ((last - first) as f64 / 1000.0).max(1.0);
    let mut per_second = std::collections::BTreeMap::new();
    for c in &route53 {
        *per_second.entry(c.at_ms / 1000).or_insert(0usize) += 1;
    }
    Ok(Storm {
        failed,
        wall,
        route53_sent: route53.len(),
        route53_throttled: route53.iter().filter(|c| c.status == 400).count(),
        route53_per_s: route53.len() as f64 / span_s,
        route53_peak: per_second.values().copied().max().unwrap_or(0),
        others_throttled: calls.iter().filter(|c| c.service != "route53" && c.status == 400).count(),
        calls: calls.len(),
    })
}
