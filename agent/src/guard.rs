//! The control plane's guard of its join token (issue: a safe first-server
//! election): a server in `run` that finds its cluster's token parameter
//! missing or replaced republishes its own cluster's secure token, unless a
//! server of another cluster (another CA) answers behind the API name.

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
    let d = discover(cfg, fx, Purpose::Leave).await?;
    let name = d.names.token.clone();
    let current = fx.parameters.get(std::slice::from_ref(&name)).await?.remove(&name);
    let was = match &current {
        Some(p) if p.value == own => return Ok(Outcome::Unchanged),
        Some(_) => "replaced",
        None => "missing",
    };
    let api = &d.spec.api;
    for r in fx.zones.records_named(&api.hosted_zone_id, &api.hostname, "A").await? {
        if r.set_identifier.as_deref() == Some(d.id.instance_id.as_str()) {
            continue;
        }
        for ip in r.values() {
            if let Some(hash) = fx.supervisor.ca_hash(ip).await? {
                if hash != own_secure.ca_hash {
                    let why = format!(
                        "parameter {name} is {was}, but {ip} ({}) behind {} serves another cluster's CA: not republishing this cluster's token",
                        r.set_identifier.as_deref().unwrap_or("?"),
                        api.hostname
                    );
                    tracing::error!("{why}");
                    return Ok(Outcome::Refused(why));
                }
            }
        }
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
