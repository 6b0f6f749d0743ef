//! The spec's readiness probes (HTTP GET, expected status).

use async_trait::async_trait;
use std::time::Duration;

#[async_trait]
pub trait Probes: Send + Sync {
    /// `Ok(())` when `url` answers `expect`; otherwise what it answered.
    async fn http(&self, url: &str, expect: u16) -> Result<(), String>;
}

pub struct HttpProbes;

#[async_trait]
impl Probes for HttpProbes {
    async fn http(&self, url: &str, expect: u16) -> Result<(), String> {
        let client =
            reqwest::Client::builder().timeout(Duration::from_secs(3)).tls_danger_accept_invalid_certs(true).build().map_err(|e| e.to_string())?;
        match client.get(url).send().await {
            Ok(r) if r.status().as_u16() == expect => Ok(()),
            Ok(r) => Err(format!("answered {} (expected {expect})", r.status().as_u16())),
            Err(e) => Err(format!("no answer: {e}")),
        }
    }
}
