//! Probing a k3s server's supervisor the way k3s agents do: fetch `/cacerts`
//! without trust, accept it only if its sha256 matches the hash in the secure
//! token, then `/ping` with that CA as the only root.

use crate::error::Result;
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use std::time::Duration;

#[async_trait]
pub trait Supervisor: Send + Sync {
    /// Whether a server at `ip` answers and proves it holds the cluster CA with `ca_hash`.
    async fn verified_live(&self, ip: &str, ca_hash: &str) -> Result<bool>;
}

pub struct HttpsSupervisor {
    pub port: u16,
}

#[async_trait]
impl Supervisor for HttpsSupervisor {
    async fn verified_live(&self, ip: &str, ca_hash: &str) -> Result<bool> {
        let base = format!("https://{ip}:{}", self.port);
        let untrusted = match reqwest::Client::builder().tls_danger_accept_invalid_certs(true).timeout(Duration::from_secs(3)).build() {
            Ok(c) => c,
            Err(_) => return Ok(false),
        };
        let cacerts = match untrusted.get(format!("{base}/cacerts")).send().await {
            Ok(r) if r.status().is_success() => match r.bytes().await {
                Ok(b) => b,
                Err(_) => return Ok(false),
            },
            _ => return Ok(false),
        };
        if hex::encode(Sha256::digest(&cacerts)) != ca_hash {
            tracing::warn!(server = %base, "server's CA does not match the join token's hash; not trusting it");
            return Ok(false);
        }
        let Ok(certs) = reqwest::Certificate::from_pem_bundle(&cacerts) else {
            return Ok(false);
        };
        let Ok(trusted) = reqwest::Client::builder().tls_certs_only(certs).timeout(Duration::from_secs(3)).build() else {
            return Ok(false);
        };
        match trusted.get(format!("{base}/ping")).send().await {
            Ok(r) => Ok(r.status().is_success()),
            Err(e) => {
                tracing::debug!(server = %base, error = %e, "ping with the cluster CA failed");
                Ok(false)
            }
        }
    }
}
