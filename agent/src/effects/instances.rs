//! EC2: instance tags (when IMDS tags are off) and which instances still run.

use crate::error::{Error, Result};
use async_trait::async_trait;
use aws_sdk_ec2::types::Filter;
use std::collections::{BTreeMap, BTreeSet};

#[async_trait]
pub trait Instances: Send + Sync {
    async fn tags(&self, instance_id: &str) -> Result<BTreeMap<String, String>>;
    /// The subset of `ids` whose state is pending or running.
    async fn live(&self, ids: &[String]) -> Result<BTreeSet<String>>;
}

pub struct Ec2(pub aws_sdk_ec2::Client);

#[async_trait]
impl Instances for Ec2 {
    async fn tags(&self, instance_id: &str) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        let mut pages = self.0.describe_tags().filters(Filter::builder().name("resource-id").values(instance_id).build()).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Error::sdk("read instance tags (ec2:DescribeTags)", instance_id, &e))?;
            for tag in page.tags() {
                if let (Some(k), Some(v)) = (tag.key(), tag.value()) {
                    out.insert(k.to_string(), v.to_string());
                }
            }
        }
        Ok(out)
    }

    async fn live(&self, ids: &[String]) -> Result<BTreeSet<String>> {
        k3s_asg_aws::instances::live(&self.0, ids).await.map_err(|(ids, why)| Error::failed("check instances (ec2:DescribeInstances)", ids, why))
    }
}
