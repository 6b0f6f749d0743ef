//! EC2, spoken to in this one place of the workspace: instance tags (when IMDS
//! tags are off), which instances still run, and their private addresses.

use crate::error::Error;
use async_trait::async_trait;
use aws_sdk_ec2::types::Filter;
use std::collections::{BTreeMap, BTreeSet};

/// DescribeInstances takes at most this many ids in a filter value list.
const IDS_PER_CALL: usize = 200;

/// What the programs need to know of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    pub id: String,
    /// EC2's state name: `pending`, `running`, `shutting-down`, `terminated`, `stopping`, `stopped`.
    pub state: String,
    pub private_ip: Option<String>,
}

impl InstanceInfo {
    /// Pending or running: it may still serve (or come up).
    pub fn is_live(&self) -> bool {
        matches!(self.state.as_str(), "pending" | "running")
    }
}

#[async_trait]
pub trait Instances: Send + Sync {
    /// Every tag of the instance.
    async fn tags(&self, instance_id: &str) -> Result<BTreeMap<String, String>, Error>;
    /// The subset of `ids` whose state is pending or running (unknown ids are simply absent).
    async fn live(&self, ids: &[String]) -> Result<BTreeSet<String>, Error>;
    /// Private addresses of the given instances.
    async fn addresses(&self, ids: &[String]) -> Result<BTreeMap<String, String>, Error>;
    /// The given instances, in any state (unknown ids are absent).
    async fn describe(&self, ids: &[String]) -> Result<Vec<InstanceInfo>, Error>;
    /// Pending and running instances carrying every tag of `tags` (key, value).
    async fn live_tagged(&self, tags: &[(String, String)]) -> Result<Vec<InstanceInfo>, Error>;
}

fn info(i: &aws_sdk_ec2::types::Instance) -> Option<InstanceInfo> {
    Some(InstanceInfo {
        id: i.instance_id()?.to_string(),
        state: i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()).unwrap_or_default(),
        private_ip: i.private_ip_address().map(str::to_string),
    })
}

pub struct Ec2(pub aws_sdk_ec2::Client);

impl Ec2 {
    async fn describe(&self, step: &'static str, ids: &[String], states: &[&str]) -> Result<Vec<aws_sdk_ec2::types::Instance>, Error> {
        let mut out = Vec::new();
        for chunk in ids.chunks(IDS_PER_CALL) {
            let mut req = self.0.describe_instances().filters(Filter::builder().name("instance-id").set_values(Some(chunk.to_vec())).build());
            if !states.is_empty() {
                req = req
                    .filters(Filter::builder().name("instance-state-name").set_values(Some(states.iter().map(|s| s.to_string()).collect())).build());
            }
            let resp = req.send().await.map_err(|e| Error::sdk(step, chunk.join(","), e))?;
            out.extend(resp.reservations().iter().flat_map(|r| r.instances()).cloned());
        }
        Ok(out)
    }
}

#[async_trait]
impl Instances for Ec2 {
    async fn tags(&self, instance_id: &str) -> Result<BTreeMap<String, String>, Error> {
        let mut out = BTreeMap::new();
        let mut pages = self.0.describe_tags().filters(Filter::builder().name("resource-id").values(instance_id).build()).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Error::sdk("read instance tags (ec2:DescribeTags)", instance_id, e))?;
            for tag in page.tags() {
                if let (Some(k), Some(v)) = (tag.key(), tag.value()) {
                    out.insert(k.to_string(), v.to_string());
                }
            }
        }
        Ok(out)
    }

    async fn live(&self, ids: &[String]) -> Result<BTreeSet<String>, Error> {
        let found = self.describe("check instances (ec2:DescribeInstances)", ids, &["pending", "running"]).await?;
        Ok(found.iter().filter_map(|i| i.instance_id().map(str::to_string)).collect())
    }

    async fn addresses(&self, ids: &[String]) -> Result<BTreeMap<String, String>, Error> {
        let found = self.describe("read instance addresses (ec2:DescribeInstances)", ids, &[]).await?;
        Ok(found.iter().filter_map(|i| Some((i.instance_id()?.to_string(), i.private_ip_address()?.to_string()))).collect())
    }

    async fn describe(&self, ids: &[String]) -> Result<Vec<InstanceInfo>, Error> {
        let found = self.describe("check instances (ec2:DescribeInstances)", ids, &[]).await?;
        Ok(found.iter().filter_map(info).collect())
    }

    async fn live_tagged(&self, tags: &[(String, String)]) -> Result<Vec<InstanceInfo>, Error> {
        let what: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut req = self.0.describe_instances().filters(Filter::builder().name("instance-state-name").values("pending").values("running").build());
        for (k, v) in tags {
            req = req.filters(Filter::builder().name(format!("tag:{k}")).values(v).build());
        }
        let mut out = Vec::new();
        let mut pages = req.into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Error::sdk("find instances by tag (ec2:DescribeInstances)", what.join(","), e))?;
            out.extend(page.reservations().iter().flat_map(|r| r.instances()).filter_map(info));
        }
        Ok(out)
    }
}
