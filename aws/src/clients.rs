//! SDK client setup shared by both programs.
//!
//! Configuration comes from the standard AWS environment: the credentials
//! chain, `AWS_REGION`, `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_<SERVICE>`.
//! Retries are explicit: standard mode, 5 attempts, exponential backoff with
//! jitter starting at 200 ms (the SDK's own jitter), so throttling and 5xx
//! answers are retried inside every call.

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use std::time::Duration;

pub const MAX_ATTEMPTS: u32 = 5;

/// Loads the shared SDK configuration; `region` overrides the environment (the agent
/// takes it from IMDS).
pub async fn load(region: Option<String>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(200))
                .with_max_backoff(Duration::from_secs(5)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(20))
                .operation_timeout(Duration::from_secs(60))
                .build(),
        );
    if let Some(region) = region {
        loader = loader.region(Region::new(region));
    }
    loader.load().await
}
