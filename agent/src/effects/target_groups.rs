//! ELBv2 target groups.

use crate::error::{Error, Result};
use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub port: u16,
    pub state: String,
}

#[async_trait]
pub trait TargetGroups: Send + Sync {
    async fn members(&self, arn: &str) -> Result<Vec<Member>>;
    async fn register(&self, arn: &str, instance_id: &str, port: u16) -> Result<()>;
}

pub struct Elbv2(pub aws_sdk_elasticloadbalancingv2::Client);

#[async_trait]
impl TargetGroups for Elbv2 {
    async fn members(&self, arn: &str) -> Result<Vec<Member>> {
        let resp = self
            .0
            .describe_target_health()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(|e| Error::sdk("read target group (elasticloadbalancing:DescribeTargetHealth)", arn, &e))?;
        Ok(resp
            .target_health_descriptions()
            .iter()
            .filter_map(|d| {
                let t = d.target()?;
                Some(Member {
                    id: t.id()?.to_string(),
                    port: t.port().unwrap_or_default() as u16,
                    state: d.target_health().and_then(|h| h.state()).map(|s| s.as_str().to_string()).unwrap_or_default(),
                })
            })
            .collect())
    }

    async fn register(&self, arn: &str, instance_id: &str, port: u16) -> Result<()> {
        let target = TargetDescription::builder()
            .id(instance_id)
            .port(port as i32)
            .build();
        self.0
            .register_targets()
            .target_group_arn(arn)
            .targets(target)
            .send()
            .await
            .map_err(|e| Error::sdk("register target (elasticloadbalancing:RegisterTargets)", format!("{arn} {instance_id}:{port}"), &e))?;
        Ok(())
    }
}
