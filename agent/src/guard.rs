//! Guards of a joined instance in `run`.
//!
//! The control plane's guard of its join token (issue: a safe first-server
//! election): a server that finds its cluster's token parameter missing or
//! replaced republishes its own cluster's secure token, unless a server of
//! another cluster (another CA) answers behind the API name.
//!
//! The control plane's ghost collector (issue: a stack an operator can run): Nodes whose
//! instance EC2 reports terminated (or no longer knows) died without leaving; a server in `run`
//! deletes them, as Kubernetes' node-lifecycle controller does for clouds, before they cost
//! quorum (k3s removes a deleted server Node's etcd member).
//!
//! A node's guard (issue: the cluster survives its control plane): a node whose
//! cluster was brought back without it (the token changed: a new cluster; or the
//! server it joined through is gone and another proves the cluster's CA) joins
//! again, by itself.

use crate::config::AgentConfig;
use crate::discover::{discover, Purpose};
use crate::effects::Effects;
use crate::error::Result;
use crate::render;
use crate::secret::Secret;
use crate::token;

/// What the guard did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The parameter holds this cluster's secure token (or this is no initialised server).
    Unchanged,
    Republished {
        was: &'static str,
    },
    /// Another cluster's server answers behind the API name: left alone.
    Refused(String),
}

pub async fn check_token(cfg: &AgentConfig, fx: &Effects) -> Result<Outcome> {
    let Some(file) = fx.fs.read(render::SERVER_TOKEN_PATH)? else {
        return Ok(Outcome::Unchanged);
    };
    let own = Secret::new(file.trim());
    let Some(own_secure) = token::parse_secure(own.expose()) else {
        return Ok(Outcome::Unchanged);
    };
    // The token first (the state file names the cluster): discovery only when it changed.
    let name = match crate::state::State::load(&fx.fs)?.filter(|st| !st.cluster.is_empty()) {
        Some(st) => cfg.prefix.cluster_token(&st.cluster),
        None => discover(cfg, fx, Purpose::Leave).await?.names.token,
    };
    let current = fx.parameters.get(std::slice::from_ref(&name)).await?.remove(&name);
    let was = match &current {
        Some(p) if p.value == own => return Ok(Outcome::Unchanged),
        // An election token: a server is starting a cluster (a first or recovery election): the
        // elections decide, not this server's old token.
        Some(p) if token::parse_secure(p.value.expose()).is_none() => {
            tracing::info!(parameter = %name, "the token parameter holds an election token: an election is under way; not republishing");
            return Ok(Outcome::Unchanged);
        }
        Some(_) => "replaced",
        None => "missing",
    };
    let d = discover(cfg, fx, Purpose::Leave).await?;
    let api = &d.spec.api;
    if let Some((ip, id)) = crate::live::other_cluster_behind_api(fx, api, &d.id.instance_id, &own_secure.ca_hash).await? {
        let why = format!(
            "parameter {name} is {was}, but {ip} ({id}) behind {} serves another cluster's CA: not republishing this cluster's token",
            api.hostname
        );
        tracing::error!("{why}");
        return Ok(Outcome::Refused(why));
    }
    match current {
        None => {
            if !fx.parameters.create_secure(&name, &own).await? {
                return Ok(Outcome::Unchanged);
            }
        }
        Some(_) => fx.parameters.overwrite_secure(&name, &own).await?,
    }
    tracing::warn!(parameter = %name, was, "republished this cluster's secure join token from the server's token file");
    Ok(Outcome::Republished { was })
}

/// Why this node should join again, if it should: its cluster's secure token is not the one
/// it configured, or the server it joined through no longer proves the CA while another does.
pub async fn node_rejoin_reason(cfg: &AgentConfig, fx: &Effects) -> Result<Option<String>> {
    let (Some(config), Some(st)) = (fx.fs.read(render::CONFIG_PATH)?, crate::state::State::load(&fx.fs)?) else {
        return Ok(None);
    };
    let Some(configured) = render::configured(&config, "token") else {
        return Ok(None);
    };
    let names = crate::discover::Names::new(cfg, &st.cluster);
    let mut found = fx.parameters.get(std::slice::from_ref(&names.agent_token)).await?;
    found.extend(crate::discover::server_token_fallback(fx, &names, &found).await);
    let name = if found.contains_key(&names.agent_token) { names.agent_token.clone() } else { names.token.clone() };
    let Some(current) = found.remove(&name) else {
        return Ok(None);
    };
    if name == names.agent_token && configured.contains("::server:") {
        // Joined with the server token before the agent token existed: the same cluster (the
        // same CA) is no reason to join again; servers not yet restarted with the agent token
        // would refuse it. It changes at the node's next join.
        let same_cluster =
            token::parse_secure(&configured).zip(token::parse_secure(current.value.expose())).is_some_and(|(c, a)| c.ca_hash == a.ca_hash);
        if same_cluster {
            return Ok(None);
        }
        return Ok(Some(format!("parameter {name} names another cluster's CA than this node joined: its cluster was started anew")));
    }
    let Some(secure) = token::parse_secure(current.value.expose()) else {
        return Ok(None);
    };
    if token::password_of(&configured) != secure.password {
        return Ok(Some(format!("parameter {name} holds another token than this node joined with: its cluster was started anew")));
    }
    let server = render::configured(&config, "server").or(st.server_url.clone());
    let ip = server.as_deref().and_then(render::server_address).map(str::to_string);
    let Some(ip) = ip else {
        return Ok(None);
    };
    if fx.supervisor.verified_live(&ip, &secure.ca_hash).await? {
        return Ok(None);
    }
    // Worth a join only once another server proves the CA (join would otherwise wait for one).
    let d = discover(cfg, fx, Purpose::Leave).await?;
    let api = &d.spec.api;
    let records = crate::api_record::read(fx, &api.hosted_zone_id, &api.hostname).await?;
    let candidates = crate::live::join_candidates(&records, &d.id.instance_id, None);
    Ok(crate::live::first_verified(fx, &candidates, Some(&ip), &secure.ca_hash)
        .await?
        .map(|other| format!("the server this node joined through ({ip}) no longer proves the cluster's CA; {other} does")))
}
