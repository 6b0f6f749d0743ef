//! What several of the coordinator's modules share: the zone's records, the calls that wrote.

use aws_sdk_route53::types::ResourceRecordSet;
use k3s_asg_testbed::world::World;

pub(crate) async fn records(w: &World) -> Vec<ResourceRecordSet> {
    w.route53.list_resource_record_sets().hosted_zone_id(w.zone_id()).send().await.unwrap().resource_record_sets().to_vec()
}

pub(crate) fn writes(w: &World) -> Vec<String> {
    w.recorder.calls().into_iter().filter(|c| c.is_mutating()).map(|c| c.operation).collect()
}
