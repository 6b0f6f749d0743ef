//! IMDSv2, through the AWS SDK's IMDS client (token cached and refreshed,
//! retries inside a deadline; `AWS_EC2_METADATA_SERVICE_ENDPOINT` honoured).

use crate::error::{Error, Result};
use async_trait::async_trait;
use aws_config::imds::client::error::ImdsError;
use std::time::Duration;

#[async_trait]
pub trait Metadata: Send + Sync {
    /// `path` under `/latest/meta-data/`; `None` when IMDS answers 404.
    async fn get(&self, path: &str) -> Result<Option<String>>;
}

pub struct Imds {
    /// Rebuilt (a new token) when IMDS refuses the cached token with 401.
    client: std::sync::Mutex<aws_config::imds::Client>,
    endpoint: Option<String>,
}

impl Imds {
    pub fn from_env() -> Result<Self> {
        let endpoint = std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT").ok();
        Ok(Imds { client: std::sync::Mutex::new(Self::client(endpoint.as_deref())?), endpoint })
    }

    fn client(endpoint: Option<&str>) -> Result<aws_config::imds::Client> {
        let mut builder = aws_config::imds::Client::builder()
            .max_attempts(4)
            .connect_timeout(Duration::from_secs(1))
            .read_timeout(Duration::from_secs(2))
            .operation_timeout(Duration::from_secs(10))
            .token_ttl(Duration::from_secs(21_600));
        if let Some(endpoint) = endpoint {
            builder = builder
                .endpoint(endpoint)
                .map_err(|e| Error::bad_input("read instance metadata", "AWS_EC2_METADATA_SERVICE_ENDPOINT", format!("{endpoint:?}: {e}")))?;
        }
        Ok(builder.build())
    }
}

#[async_trait]
impl Metadata for Imds {
    async fn get(&self, path: &str) -> Result<Option<String>> {
        let full = format!("/latest/meta-data/{path}");
        for attempt in 0..2 {
            let client = self.client.lock().expect("imds client lock").clone();
            match client.get(full.clone()).await {
                Ok(value) => return Ok(Some(value.as_ref().to_string())),
                Err(ImdsError::ErrorResponse(resp)) if resp.response().status().as_u16() == 404 => return Ok(None),
                // IMDS refused a token before the TTL it gave (restarted, clock skew): drop the
                // cached token and fetch a new one, once.
                Err(ImdsError::ErrorResponse(resp)) if resp.response().status().as_u16() == 401 && attempt == 0 => {
                    tracing::info!(path = %full, "IMDS refused the session token (401); fetching a new one");
                    *self.client.lock().expect("imds client lock") = Self::client(self.endpoint.as_deref())?;
                }
                Err(e) => return Err(Error::sdk("read instance metadata", full, e)),
            }
        }
        unreachable!("the second attempt returns")
    }
}

/// A value the agent cannot do without (identity, region). An IMDS that does not answer is
/// a misconfigured instance, not a blip the SDK's retries did not cover: bad input (exit 2)
/// naming the path; systemd restarts the agent.
pub async fn required(m: &dyn Metadata, path: &str) -> Result<Option<String>> {
    m.get(path).await.map_err(|e| {
        Error::bad_input(
            "read instance metadata",
            format!("/latest/meta-data/{path}"),
            format!(
                "IMDS did not answer ({}); is the metadata service enabled (http_endpoint) with a hop limit that reaches this process?",
                e.detail
            ),
        )
    })
}
