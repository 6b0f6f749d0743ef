//! A boot storm stays within AWS's budgets (issue 18): 3 servers and 20 nodes join at once
//! while Route53 allows 5 requests a second (its account limit) and 20 % of every other call is
//! throttled. A throttled call inside a join is one more reason to wait, never an exit.

use k3s_asg_testbed::world::World;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boot_storm_under_throttling_converges_with_no_agent_exit() {
    let mut w = World::new().await.unwrap();
    w.create_cluster("alpha").await.unwrap();
    let tg = w.clusters["alpha"].target_group_arn.clone();
    let storm = k3s_asg_testbed::storm::boot(&w, 3, 20, 5.0, 0.2).await.unwrap();
    if std::env::var_os("STORM_DEBUG").is_some() {
        let calls = w.recorder.calls();
        let r53: Vec<_> = calls.iter().filter(|c| c.service == "route53").collect();
        let t0 = r53.iter().map(|c| c.at_ms).min().unwrap_or(0);
        let mut hist = std::collections::BTreeMap::new();
        for c in &r53 {
            *hist.entry(((c.at_ms - t0) / 1000, c.operation.clone(), c.status)).or_insert(0) += 1;
        }
        eprintln!("{hist:#?}");
    }
    assert!(storm.failed.is_empty(), "joins that exited: {:#?}", storm.failed);
    assert_eq!(w.members(&tg).await.unwrap().len(), 23, "every instance registered");
    assert_eq!(w.api_records("alpha").await.unwrap().len(), 3, "every server published its record");
    assert!(storm.others_throttled > 0 && storm.route53_sent > 0, "the throttling was real");
    println!(
        "boot storm: {} s, {} AWS calls, Route53 {} sent ({} throttled, {:.1}/s, peak {}/s), {} other calls throttled",
        storm.wall.as_secs(),
        storm.calls,
        storm.route53_sent,
        storm.route53_throttled,
        storm.route53_per_s,
        storm.route53_peak,
        storm.others_throttled
    );
    k3s_asg_testbed::reliability::held(
        "AWS faults",
        "a boot storm: 3 servers and 20 nodes join at once, Route53 throttled at 5 requests/s account-wide, 20 % of every other call throttled",
        1,
        "every join exits 0 (a throttled call after the SDK's retries is one more reason to wait, within the join timeout); all 23 registered, 3 API records",
    );
}
