//! ELBv2 target groups, spoken to in this one place of the workspace: members
//! and their health, registration, and the deregistration delay.

use crate::error::Error;
use crate::targets::{Member, TargetState};
use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;

#[async_trait]
pub trait TargetGroups: Send + Sync {
    /// Every target of the group.
    async fn members(&self, arn: &str) -> Result<Vec<Member>, Error>;
    async fn register(&self, arn: &str, instance_id: &str, port: u16) -> Result<(), Error>;
    async fn deregister(&self, arn: &str, instance_id: &str, port: u16) -> Result<(), Error>;
    /// The group's `deregistration_delay.timeout_seconds` (ELBv2's default, 300, when unset).
    async fn deregistration_delay(&self, arn: &str) -> Result<u64, Error>;
}

pub struct Elbv2(pub aws_sdk_elasticloadbalancingv2::Client);

fn target(instance_id: &str, port: u16) -> TargetDescription {
    TargetDescription::builder().id(instance_id).port(port as i32).build()
}

#[async_trait]
impl TargetGroups for Elbv2 {
    async fn members(&self, arn: &str) -> Result<Vec<Member>, Error> {
        let resp = self
            .0
            .describe_target_health()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(|e| Error::sdk("read target group (elasticloadbalancing:DescribeTargetHealth)", arn, e))?;
        Ok(resp
            .target_health_descriptions()
            .iter()
            .filter_map(|d| {
                let t = d.target()?;
                Some(Member {
                    id: t.id()?.to_string(),
                    port: t.port().unwrap_or_default() as u16,
                    state: TargetState::parse(d.target_health().and_then(|h| h.state()).map(|s| s.as_str()).unwrap_or_default()),
                })
            })
            .collect())
    }

    async fn register(&self, arn: &str, instance_id: &str, port: u16) -> Result<(), Error> {
        self.0
            .register_targets()
            .target_group_arn(arn)
            .targets(target(instance_id, port))
            .send()
            .await
            .map_err(|e| Error::sdk("register target (elasticloadbalancing:RegisterTargets)", format!("{arn} {instance_id}:{port}"), e))?;
        Ok(())
    }

    async fn deregister(&self, arn: &str, instance_id: &str, port: u16) -> Result<(), Error> {
        self.0
            .deregister_targets()
            .target_group_arn(arn)
            .targets(target(instance_id, port))
            .send()
            .await
            .map_err(|e| Error::sdk("deregister target (elasticloadbalancing:DeregisterTargets)", format!("{arn} {instance_id}:{port}"), e))?;
        Ok(())
    }

    async fn deregistration_delay(&self, arn: &str) -> Result<u64, Error> {
        let resp = self
            .0
            .describe_target_group_attributes()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(|e| Error::sdk("read target group attributes (elasticloadbalancing:DescribeTargetGroupAttributes)", arn, e))?;
        Ok(resp
            .attributes()
            .iter()
            .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
            .and_then(|a| a.value())
            .and_then(|v| v.parse().ok())
            .unwrap_or(300))
    }
}
