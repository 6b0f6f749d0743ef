//! ELBv2 target groups.

use crate::error::{Error, Result};
use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;

fn target(instance_id: &str, port: u16) -> TargetDescription {
    TargetDescription::builder().id(instance_id).port(port as i32).build()
}

pub use k3s_asg_aws::target_health::Member;

#[async_trait]
pub trait TargetGroups: Send + Sync {
    async fn members(&self, arn: &str) -> Result<Vec<Member>>;
    async fn register(&self, arn: &str, instance_id: &str, port: u16) -> Result<()>;
    async fn deregister(&self, arn: &str, instance_id: &str, port: u16) -> Result<()>;
    /// The group's `deregistration_delay.timeout_seconds`.
    async fn deregistration_delay(&self, arn: &str) -> Result<u64>;
}

pub struct Elbv2(pub aws_sdk_elasticloadbalancingv2::Client);

#[async_trait]
impl TargetGroups for Elbv2 {
    async fn members(&self, arn: &str) -> Result<Vec<Member>> {
        k3s_asg_aws::target_health::members(&self.0, arn)
            .await
            .map_err(|why| Error::failed("read target group (elasticloadbalancing:DescribeTargetHealth)", arn, why))
    }

    async fn register(&self, arn: &str, instance_id: &str, port: u16) -> Result<()> {
        self.0
            .register_targets()
            .target_group_arn(arn)
            .targets(target(instance_id, port))
            .send()
            .await
            .map_err(|e| Error::sdk("register target (elasticloadbalancing:RegisterTargets)", format!("{arn} {instance_id}:{port}"), &e))?;
        Ok(())
    }

    async fn deregister(&self, arn: &str, instance_id: &str, port: u16) -> Result<()> {
        self.0
            .deregister_targets()
            .target_group_arn(arn)
            .targets(target(instance_id, port))
            .send()
            .await
            .map_err(|e| Error::sdk("deregister target (elasticloadbalancing:DeregisterTargets)", format!("{arn} {instance_id}:{port}"), &e))?;
        Ok(())
    }

    async fn deregistration_delay(&self, arn: &str) -> Result<u64> {
        let resp = self
            .0
            .describe_target_group_attributes()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(|e| Error::sdk("read target group attributes (elasticloadbalancing:DescribeTargetGroupAttributes)", arn, &e))?;
        Ok(resp
            .attributes()
            .iter()
            .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
            .and_then(|a| a.value())
            .and_then(|v| v.parse().ok())
            .unwrap_or(300))
    }
}
