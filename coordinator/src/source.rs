//! The desired state's inputs from SSM: region spec, cluster specs, endpoints.
//! SSM itself is the shared crate's (`k3s_asg_aws::ssm`); this module picks the
//! specs out of what it reads.

use crate::Error;
use async_trait::async_trait;
use k3s_asg_aws::params::Prefix;
use k3s_asg_aws::spec::{ClusterSpec, EndpointSpec, RegionSpec};
use k3s_asg_aws::ssm::SpecParameters;
use std::collections::BTreeMap;

pub use k3s_asg_aws::ssm::Ssm;

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

/// The real source: SSM, read through [`SpecParameters`].
#[async_trait]
impl SpecSource for Ssm {
    async fn load(&self, prefix: &Prefix, region: &str) -> Result<Specs, Error> {
        let region_name = prefix.region(region);
        let region_json = self.region_spec(&region_name).await?;
        let region_spec = RegionSpec::parse(&region_name, &region_json).map_err(Error::spec)?;
        let clusters_path = format!("{}/clusters", prefix.as_str());
        let mut clusters = BTreeMap::new();
        let mut left_out = Vec::new();
        for (name, value) in self.specs_under(&clusters_path).await? {
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
        for (name, value) in self.specs_under(&endpoints_path).await? {
            let Some(ep) = name.strip_prefix(&format!("{endpoints_path}/")) else {
                continue;
            };
            endpoints.insert(ep.to_string(), EndpointSpec::parse(&name, &value).map_err(Error::spec)?);
        }
        Ok(Specs { region: region_spec, clusters, endpoints, left_out })
    }
}
