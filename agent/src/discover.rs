//! Discovery, once for join, leave and run: who this instance is (IMDS), its
//! cluster and role (instance tags), the cluster's parameter names, and the
//! parameters and spec it needs.

use crate::config::AgentConfig;
use crate::effects::parameters::Param;
use crate::effects::snapshots::SnapshotStore;
use crate::effects::Effects;
use crate::error::{Error, Result};
use k3s_asg_aws::imds::{Identity, IDENTITY_PATHS};
use k3s_asg_aws::names::check_cluster_name;
use k3s_asg_aws::node_template::{NodeTemplate, GROUP_NAME_TAG};
use k3s_asg_aws::spec::ClusterSpec;
use k3s_asg_aws::tags::Role;
use std::collections::BTreeMap;

/// The cluster's SSM parameter names.
#[derive(Debug, Clone)]
pub struct Names {
    pub config: String,
    pub token: String,
    pub agent_token: String,
    pub admin: String,
    pub drain: String,
}

impl Names {
    pub fn new(cfg: &AgentConfig, cluster: &str) -> Names {
        Names {
            config: cfg.prefix.cluster_config(cluster),
            token: cfg.prefix.cluster_token(cluster),
            agent_token: cfg.prefix.agent_token(cluster),
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
    /// The Auto Scaling group the instance belongs to (its `aws:autoscaling:groupName` tag).
    pub group: Option<String>,
    /// IMDS `instance-type`, when IMDS tells.
    pub instance_type: Option<String>,
    /// The Cluster Autoscaler's node template from the group's tags (join only).
    pub template: NodeTemplate,
    /// Leave only: why the spec could not be read, when `spec` is what the state file recorded.
    pub spec_error: Option<String>,
}

impl Discovery {
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.get(name)
    }

    /// The parameter this instance joins with: the server token for a server; for a node the
    /// agent token, or the server token read as a fallback (`server_token_fallback`).
    pub fn join_token_name(&self) -> &str {
        if self.role.is_server() || (!self.params.contains_key(&self.names.agent_token) && self.params.contains_key(&self.names.token)) {
            &self.names.token
        } else {
            &self.names.agent_token
        }
    }

    /// Where the cluster's snapshots are, if its spec has them (the bucket's region defaults to
    /// the instance's).
    pub fn snapshot_store(&self) -> Option<SnapshotStore> {
        self.spec.snapshots.as_ref().map(|s| SnapshotStore {
            bucket: s.bucket.clone(),
            folder: s.folder.clone(),
            region: s.region.clone().unwrap_or_else(|| self.id.region.clone()),
        })
    }
}

/// A cluster that has no agent token yet (it began before agents published one; the next
/// server join publishes it): a node falls back to the server token where its instance role
/// still lets it read it (the shared policy of earlier releases). A refusal is no error: the
/// node waits for the agent token.
pub async fn server_token_fallback(fx: &Effects, names: &Names, params: &BTreeMap<String, Param>) -> BTreeMap<String, Param> {
    if params.contains_key(&names.agent_token) {
        return BTreeMap::new();
    }
    match fx.parameters.get(std::slice::from_ref(&names.token)).await {
        Ok(found) => {
            if found.contains_key(&names.token) {
                tracing::warn!(parameter = %names.agent_token, "the cluster has no agent token: joining with the server token (a cluster begun by an earlier release has none; a new cluster's first server publishes it before it secures the token)");
            }
            found
        }
        Err(e) => {
            tracing::debug!(error = %e, "the server token is not readable here (as it should be for a node)");
            BTreeMap::new()
        }
    }
}

pub async fn discover(cfg: &AgentConfig, fx: &Effects, purpose: Purpose) -> Result<Discovery> {
    let id = identity(fx).await?;
    let tags = instance_tags(cfg, fx, &id.instance_id).await?;
    let (cluster, role) = cluster_and_role(cfg, &tags, &id.instance_id)?;
    let group = tags.get(GROUP_NAME_TAG).map(|g| g.trim().to_string()).filter(|g| !g.is_empty());
    let names = Names::new(cfg, &cluster);
    let wanted = match purpose {
        Purpose::Join if role.is_server() => {
            vec![names.config.clone(), names.token.clone(), names.agent_token.clone(), names.drain.clone(), names.admin.clone()]
        }
        // A node never asks for the server token or the admin kubeconfig (its policy denies them).
        Purpose::Join => vec![names.config.clone(), names.agent_token.clone(), names.drain.clone()],
        Purpose::Leave => vec![names.config.clone(), names.drain.clone()],
    };
    let mut params = fx.parameters.get(&wanted).await?;
    if purpose == Purpose::Join && !role.is_server() {
        params.extend(server_token_fallback(fx, &names, &params).await);
    }
    let mut spec_error = None;
    let spec = match cluster_spec(&params, &names.config) {
        Ok(spec) => spec,
        // A leave never gives up for a broken spec: it leaves what it recorded joining.
        Err(e) if purpose == Purpose::Leave => match crate::state::State::load(&fx.fs)?.and_then(|st| st.recorded_spec(role)) {
            Some(recorded) => {
                tracing::error!(
                    error = %e,
                    "the cluster spec cannot be read: leaving from what the state file recorded (target groups, API record), \
                     draining with default timeouts"
                );
                spec_error = Some(e.to_string());
                recorded
            }
            None => return Err(e),
        },
        Err(e) => return Err(e),
    };
    if purpose == Purpose::Join {
        for secret in [&names.token, &names.agent_token, &names.admin, &names.drain] {
            if params.get(secret).is_some_and(|p| !p.secure) {
                return Err(Error::bad_input(
                    "read parameters",
                    secret,
                    "holds a secret but is not a SecureString; delete it (agents create it as a SecureString) or re-create it with --type SecureString",
                ));
            }
        }
    }
    let (mut instance_type, mut template) = (None, NodeTemplate::default());
    if purpose == Purpose::Join {
        instance_type = fx.metadata.get("instance-type").await?.map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
        if let Some(g) = &group {
            let group_tags = fx.lifecycle.group_tags(g).await?;
            template = k3s_asg_aws::node_template::from_tags(&group_tags)
                .map_err(|e| Error::bad_input("read the Auto Scaling group's node-template tags", format!("group {g} tag {:?}", e.tag), e.problem))?;
        }
    }
    Ok(Discovery { id, cluster, role, names, params, spec, group, instance_type, template, spec_error })
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

/// The instance tags the agent uses (cluster, role, Auto Scaling group): IMDS when instance
/// metadata tags are on, else `ec2:DescribeTags`.
pub async fn instance_tags(cfg: &AgentConfig, fx: &Effects, instance_id: &str) -> Result<BTreeMap<String, String>> {
    let keys = &cfg.tag_keys;
    Ok(match fx.metadata.get("tags/instance").await? {
        Some(listing) => {
            let mut tags = BTreeMap::new();
            let present = k3s_asg_aws::imds::tag_keys(&listing);
            for key in [keys.cluster.as_str(), keys.role.as_str(), GROUP_NAME_TAG] {
                if present.contains(&key) {
                    if let Some(v) = fx.metadata.get(&format!("tags/instance/{key}")).await? {
                        tags.insert(key.to_string(), v);
                    }
                }
            }
            tags
        }
        None => {
            tracing::info!("instance metadata tags are off; reading tags through ec2:DescribeTags");
            fx.instances.tags(instance_id).await?
        }
    })
}

/// Cluster and role from the instance tags.
pub fn cluster_and_role(cfg: &AgentConfig, tags: &BTreeMap<String, String>, instance_id: &str) -> Result<(String, Role)> {
    let keys = &cfg.tag_keys;
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
