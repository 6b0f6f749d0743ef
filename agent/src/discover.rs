//! Discovery, once for join, leave and run: who this instance is (IMDS), its
//! cluster and role (instance tags), the cluster's parameter names, and the
//! parameters and spec it needs.

use crate::config::AgentConfig;
use crate::effects::parameters::Param;
use crate::effects::Effects;
use crate::error::{Error, Result};
use k3s_asg_aws::imds::{Identity, IDENTITY_PATHS};
use k3s_asg_aws::names::check_cluster_name;
use k3s_asg_aws::spec::ClusterSpec;
use k3s_asg_aws::tags::Role;
use std::collections::BTreeMap;

/// The cluster's SSM parameter names.
#[derive(Debug, Clone)]
pub struct Names {
    pub config: String,
    pub token: String,
    pub admin: String,
    pub drain: String,
}

impl Names {
    pub fn new(cfg: &AgentConfig, cluster: &str) -> Names {
        Names {
            config: cfg.prefix.cluster_config(cluster),
            token: cfg.prefix.cluster_token(cluster),
            admin: cfg.prefix.admin_kubeconfig(cluster),
            drain: cfg.prefix.drain_kubeconfig(cluster),
        }
    }
}

/// What discovery is for: it decides which parameters are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Spec, token, drain kubeconfig, and (control plane) the admin kubeconfig; secrets must be
    /// SecureStrings.
    Join,
    /// Spec and drain kubeconfig.
    Leave,
}

/// Everything discovered about this instance and its cluster.
#[derive(Debug)]
pub struct Discovery {
    pub id: Identity,
    pub cluster: String,
    pub role: Role,
    pub names: Names,
    /// The parameters read (absent ones left out).
    pub params: BTreeMap<String, Param>,
    pub spec: ClusterSpec,
}

impl Discovery {
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.get(name)
    }
}

pub async fn discover(cfg: &AgentConfig, fx: &Effects, purpose: Purpose) -> Result<Discovery> {
    let id = identity(fx).await?;
    let (cluster, role) = cluster_and_role(cfg, fx, &id.instance_id).await?;
    let names = Names::new(cfg, &cluster);
    let wanted = match purpose {
        Purpose::Join if role.is_server() => vec![names.config.clone(), names.token.clone(), names.drain.clone(), names.admin.clone()],
        Purpose::Join => vec![names.config.clone(), names.token.clone(), names.drain.clone()],
        Purpose::Leave => vec![names.config.clone(), names.drain.clone()],
    };
    let params = fx.parameters.get(&wanted).await?;
    let spec = cluster_spec(&params, &names.config)?;
    if purpose == Purpose::Join {
        for secret in [&names.token, &names.admin, &names.drain] {
            if params.get(secret).is_some_and(|p| !p.secure) {
                return Err(Error::bad_input(
                    "read parameters",
                    secret,
                    "holds a secret but is not a SecureString; delete it (agents create it as a SecureString) or re-create it with --type SecureString",
                ));
            }
        }
    }
    Ok(Discovery { id, cluster, role, names, params, spec })
}

/// Who and where this instance is, from IMDS. Everything here is input the agent cannot
/// do without: an IMDS that does not answer, a 404 or a value that makes no sense is
/// bad input (exit 2) naming the metadata path; systemd restarts the agent.
pub async fn identity(fx: &Effects) -> Result<Identity> {
    let mut values = Vec::new();
    for path in IDENTITY_PATHS {
        values.push(crate::effects::metadata::required(fx.metadata.as_ref(), path).await?);
    }
    k3s_asg_aws::imds::check_identity(values)
        .map_err(|e| Error::bad_input("read instance metadata", format!("/latest/meta-data/{}", e.path), e.problem))
}

/// Cluster and role from the instance tags: IMDS when instance metadata tags
/// are on, else `ec2:DescribeTags`.
pub async fn cluster_and_role(cfg: &AgentConfig, fx: &Effects, instance_id: &str) -> Result<(String, Role)> {
    let keys = &cfg.tag_keys;
    let tags: BTreeMap<String, String> = match fx.metadata.get("tags/instance").await? {
        Some(listing) => {
            let mut tags = BTreeMap::new();
            let present = k3s_asg_aws::imds::tag_keys(&listing);
            for key in [&keys.cluster, &keys.role] {
                if present.contains(&key.as_str()) {
                    if let Some(v) = fx.metadata.get(&format!("tags/instance/{key}")).await? {
                        tags.insert(key.clone(), v);
                    }
                }
            }
            tags
        }
        None => {
            tracing::info!("instance metadata tags are off; reading tags through ec2:DescribeTags");
            fx.instances.tags(instance_id).await?
        }
    };
    let get = |key: &String| {
        tags.get(key)
            .map(|v| v.trim().to_string())
            .ok_or_else(|| Error::bad_input("read instance tags", format!("{instance_id} tag {key:?}"), "the tag is missing"))
    };
    let cluster = get(&keys.cluster)?;
    check_cluster_name(&cluster).map_err(|why| Error::bad_input("read instance tags", format!("{instance_id} tag {:?}", keys.cluster), why))?;
    let role: Role =
        get(&keys.role)?.parse().map_err(|why: String| Error::bad_input("read instance tags", format!("{instance_id} tag {:?}", keys.role), why))?;
    Ok((cluster, role))
}

/// The cluster spec from the parameters read; exit-2 errors name the parameter and field.
pub fn cluster_spec(params: &BTreeMap<String, Param>, name: &str) -> Result<ClusterSpec> {
    let param = params.get(name).ok_or_else(|| Error::bad_input("read cluster spec", name, "the parameter does not exist"))?;
    ClusterSpec::parse(name, param.value.expose())
        .map_err(|e| Error::bad_input("read cluster spec", &e.parameter, format!("field `{}`: {}", e.field, e.problem)))
}
