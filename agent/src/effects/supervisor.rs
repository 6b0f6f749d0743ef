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
    /// The sha256 of the CA bundle a supervisor at `ip` serves on `/cacerts` (without trusting
    /// it): `Some` means a k3s server is up there, of whichever cluster the hash says.
    async fn ca_hash(&self, ip: &str) -> Result<Option<String>>;
}

pub struct HttpsSupervisor {
    pub port: u16,
}

impl HttpsSupervisor {
    /// `/cacerts` fetched without trusting the server (what a k3s agent does first).
    async fn cacerts(&self, base: &str) -> Option<Vec<u8>> {
        let untrusted = reqwest::Client::builder().tls_danger_accept_invalid_certs(true).timeout(Duration::from_secs(3)).build().ok()?;
        match untrusted.get(format!("{base}/cacerts")).send().await {
            Ok(r) if r.status().is_success() => r.bytes().await.ok().map(|b| b.to_vec()),
            _ => None,
        }
    }
}

#[async_trait]
impl Supervisor for HttpsSupervisor {
    async fn ca_hash(&self, ip: &str) -> Result<Option<String>> {
        let base = format!("https://{ip}:{}", self.port);
        Ok(self.cacerts(&base).await.map(|ca| hex::encode(Sha256::digest(&ca))))
    }

    async fn verified_live(&self, ip: &str, ca_hash: &str) -> Result<bool> {
        let base = format!("https://{ip}:{}", self.port);
        let Some(cacerts) = self.cacerts(&base).await else {
            return Ok(false);
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
