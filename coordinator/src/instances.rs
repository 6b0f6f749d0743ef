//! EC2: which instances named by API records still run.

use crate::Error;
use async_trait::async_trait;
use aws_sdk_ec2::types::Filter;
use std::collections::BTreeSet;

#[async_trait]
pub trait Instances: Send + Sync {
    /// The subset of `ids` that is pending or running.
    async fn live(&self, ids: &[String]) -> Result<BTreeSet<String>, Error>;
    /// Private addresses of the given instances.
    async fn addresses(&self, ids: &[String]) -> Result<std::collections::BTreeMap<String, String>, Error>;
}

pub struct Ec2(pub aws_sdk_ec2::Client);

#[async_trait]
impl Instances for Ec2 {
    async fn live(&self, ids: &[String]) -> Result<BTreeSet<String>, Error> {
        k3s_asg_aws::instances::live(&self.0, ids).await.map_err(|(ids, why)| Error::failed("check instances (ec2:DescribeInstances)", ids, why))
    }

    async fn addresses(&self, ids: &[String]) -> Result<std::collections::BTreeMap<String, String>, Error> {
        let mut out = std::collections::BTreeMap::new();
        for chunk in ids.chunks(200) {
            let resp = self
                .0
                .describe_instances()
                .filters(Filter::builder().name("instance-id").set_values(Some(chunk.to_vec())).build())
                .send()
                .await
                .map_err(|e| Error::sdk("read instance addresses (ec2:DescribeInstances)", chunk.join(","), &e))?;
            for i in resp.reservations().iter().flat_map(|r| r.instances()) {
                if let (Some(id), Some(ip)) = (i.instance_id(), i.private_ip_address()) {
                    out.insert(id.to_string(), ip.to_string());
                }
            }
        }
        Ok(out)
    }
}
