//! EC2 look-ups both programs make.

use aws_sdk_ec2::types::Filter;
use std::collections::BTreeSet;

/// The subset of `ids` whose state is pending or running (200 ids a call;
/// unknown ids are simply absent, never an error). The error names the ids asked for.
pub async fn live(client: &aws_sdk_ec2::Client, ids: &[String]) -> Result<BTreeSet<String>, (String, String)> {
    let mut out = BTreeSet::new();
    for chunk in ids.chunks(200) {
        let resp = client
            .describe_instances()
            .filters(Filter::builder().name("instance-id").set_values(Some(chunk.to_vec())).build())
            .filters(Filter::builder().name("instance-state-name").values("pending").values("running").build())
            .send()
            .await
            .map_err(|e| (chunk.join(","), crate::sdk_error_text(&e)))?;
        out.extend(resp.reservations().iter().flat_map(|r| r.instances()).filter_map(|i| i.instance_id().map(str::to_string)));
    }
    Ok(out)
}
