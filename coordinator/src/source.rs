//! The desired state's inputs from SSM: region spec, cluster specs, endpoints.

use crate::Error;
use async_trait::async_trait;
use k3s_asg_aws::params::Prefix;
use k3s_asg_aws::spec::{ClusterSpec, EndpointSpec, RegionSpec};
use std::collections::BTreeMap;

#[derive(Clone)]
pub struct Specs {
    pub region: RegionSpec,
    pub clusters: BTreeMap<String, ClusterSpec>,
    pub endpoints: BTreeMap<String, EndpointSpec>,
    /// Parameters left out, and why: a cluster whose name the agent would refuse (bad input,
    /// reported with the plan; nothing is applied for it, the rest is).
    pub left_out: Vec<String>,
}

#[async_trait]
pub trait SpecSource: Send + Sync {
    async fn load(&self, prefix: &Prefix, region: &str) -> Result<Specs, Error>;
}

pub struct Ssm(pub aws_sdk_ssm::Client);

impl Ssm {
    /// Every parameter under `path`, name → value.
    async fn by_path(&self, path: &str) -> Result<BTreeMap<String, String>, Error> {
        let mut out = BTreeMap::new();
        let mut pages = self.0.get_parameters_by_path().path(path).recursive(true).with_decryption(false).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Error::sdk("read specs (ssm:GetParametersByPath)", path, e))?;
            for p in page.parameters() {
                if let (Some(n), Some(v)) = (p.name(), p.value()) {
                    out.insert(n.to_string(), v.to_string());
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl SpecSource for Ssm {
    async fn load(&self, prefix: &Prefix, region: &str) -> Result<Specs, Error> {
        let region_name = prefix.region(region);
        let region_json = self
            .0
            .get_parameter()
            .name(&region_name)
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(s) if s.is_parameter_not_found() => Error::bad_input("read region spec", &region_name, "the parameter does not exist"),
                _ => Error::sdk("read region spec (ssm:GetParameter)", &region_name, e),
            })?
            .parameter()
            .and_then(|p| p.value())
            .unwrap_or_default()
            .to_string();
        let region_spec = RegionSpec::parse(&region_name, &region_json).map_err(Error::spec)?;
        let clusters_path = format!("{}/clusters", prefix.as_str());
        let mut clusters = BTreeMap::new();
        let mut left_out = Vec::new();
        for (name, value) in self.by_path(&clusters_path).await? {
            let Some(cluster) = name.strip_prefix(&format!("{clusters_path}/")).and_then(|r| r.strip_suffix("/config")) else {
                continue;
            };
            if cluster.contains('/') {
                continue;
            }
            // The agent's own rule: a name it would refuse (`Alpha` beside `alpha`) would otherwise
            // be lower-cased into another cluster's rule and flip it on every apply.
            if let Err(why) = k3s_asg_aws::names::check_cluster_name(cluster) {
                tracing::error!(parameter = %name, "{why}; the cluster is left out of the plan");
                left_out.push(format!("{name}: {why} (agents refuse it); nothing is applied for it"));
                continue;
            }
            clusters.insert(cluster.to_string(), ClusterSpec::parse(&name, &value).map_err(Error::spec)?);
        }
        let endpoints_path = format!("{}/endpoints", prefix.as_str());
        let mut endpoints = BTreeMap::new();
        for (name, value) in self.by_path(&endpoints_path).await? {
            let Some(ep) = name.strip_prefix(&format!("{endpoints_path}/")) else {
                continue;
            };
            endpoints.insert(ep.to_string(), EndpointSpec::parse(&name, &value).map_err(Error::spec)?);
        }
        Ok(Specs { region: region_spec, clusters, endpoints, left_out })
    }
}
