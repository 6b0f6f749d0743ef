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
    client: aws_config::imds::Client,
}

impl Imds {
    pub fn from_env() -> Result<Self> {
        let mut builder = aws_config::imds::Client::builder()
            .max_attempts(4)
            .connect_timeout(Duration::from_secs(1))
            .read_timeout(Duration::from_secs(2))
            .operation_timeout(Duration::from_secs(10))
            .token_ttl(Duration::from_secs(21_600));
        if let Ok(endpoint) = std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT") {
            builder = builder
                .endpoint(&endpoint)
                .map_err(|e| Error::bad_input("read instance metadata", "AWS_EC2_METADATA_SERVICE_ENDPOINT", format!("{endpoint:?}: {e}")))?;
        }
        Ok(Imds { client: builder.build() })
    }
}

#[async_trait]
impl Metadata for Imds {
    async fn get(&self, path: &str) -> Result<Option<String>> {
        let full = format!("/latest/meta-data/{path}");
        match self.client.get(full.clone()).await {
            Ok(value) => Ok(Some(value.as_ref().to_string())),
            Err(ImdsError::ErrorResponse(resp)) if resp.response().status().as_u16() == 404 => Ok(None),
            Err(e) => Err(Error::sdk("read instance metadata", full, e)),
        }
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
