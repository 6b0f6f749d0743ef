//! EC2 Auto Scaling lifecycle actions: is a terminating hook waiting for this
//! instance, heartbeats while it leaves, and completion.

use crate::error::{Error, Result};
use async_trait::async_trait;

/// A terminating lifecycle hook that holds this instance in `Terminating:Wait`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingHook {
    pub group: String,
    pub hook: String,
    pub heartbeat_timeout_s: u64,
    /// How long heartbeats can hold the instance in all: the hook's GlobalTimeout (100 × the
    /// heartbeat timeout, at most 48 h, when the group does not say).
    pub global_timeout_s: u64,
}

/// Auto Scaling's limit on a lifecycle action: 100 × the heartbeat timeout or 48 hours,
/// whichever is less.
pub fn global_timeout(heartbeat_timeout_s: u64, reported: Option<u64>) -> u64 {
    reported.unwrap_or(heartbeat_timeout_s * 100).min(heartbeat_timeout_s * 100).min(172_800)
}

#[async_trait]
pub trait Lifecycle: Send + Sync {
    /// The hook waiting on this instance, if it is in `Terminating:Wait`.
    async fn waiting_hook(&self, instance_id: &str) -> Result<Option<WaitingHook>>;
    async fn heartbeat(&self, hook: &WaitingHook, instance_id: &str) -> Result<()>;
    /// An Auto Scaling group's tags (`autoscaling:DescribeTags`).
    async fn group_tags(&self, group: &str) -> Result<std::collections::BTreeMap<String, String>>;
    /// Which of `ids` their Auto Scaling group is terminating (`Terminating*` lifecycle states).
    async fn terminating(&self, ids: &[String]) -> Result<std::collections::BTreeSet<String>>;
    async fn complete(&self, hook: &WaitingHook, instance_id: &str) -> Result<()>;
}

pub struct AutoScaling(pub aws_sdk_autoscaling::Client);

const TERMINATING: &str = "autoscaling:EC2_INSTANCE_TERMINATING";

#[async_trait]
impl Lifecycle for AutoScaling {
    async fn waiting_hook(&self, instance_id: &str) -> Result<Option<WaitingHook>> {
        let resp = self
            .0
            .describe_auto_scaling_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| Error::sdk("find the instance's group (autoscaling:DescribeAutoScalingInstances)", instance_id, e))?;
        let Some(inst) = resp.auto_scaling_instances().first() else {
            return Ok(None);
        };
        // Terminating, terminating from the warm pool, or going back to the warm pool on
        // scale-in (that pauses in `Warmed:Pending:Wait` for the terminating hook).
        if !["Terminating:Wait", "Warmed:Terminating:Wait", "Warmed:Pending:Wait"].contains(&inst.lifecycle_state().unwrap_or_default()) {
            return Ok(None);
        }
        let group = inst.auto_scaling_group_name().unwrap_or_default().to_string();
        let hooks = self
            .0
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(&group)
            .send()
            .await
            .map_err(|e| Error::sdk("find the terminating hook (autoscaling:DescribeLifecycleHooks)", &group, e))?;
        Ok(hooks.lifecycle_hooks().iter().find(|h| h.lifecycle_transition() == Some(TERMINATING)).map(|h| {
            let heartbeat_timeout_s = h.heartbeat_timeout().unwrap_or(3600).max(1) as u64;
            WaitingHook {
                group: group.clone(),
                hook: h.lifecycle_hook_name().unwrap_or_default().to_string(),
                heartbeat_timeout_s,
                global_timeout_s: global_timeout(heartbeat_timeout_s, h.global_timeout().map(|g| g.max(1) as u64)),
            }
        }))
    }

    async fn group_tags(&self, group: &str) -> Result<std::collections::BTreeMap<String, String>> {
        let mut out = std::collections::BTreeMap::new();
        let filter = aws_sdk_autoscaling::types::Filter::builder().name("auto-scaling-group").values(group).build();
        let mut pages = self.0.describe_tags().filters(filter).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Error::sdk("read the group's tags (autoscaling:DescribeTags)", group, e))?;
            for t in page.tags() {
                if let (Some(k), Some(v)) = (t.key(), t.value()) {
                    out.insert(k.to_string(), v.to_string());
                }
            }
        }
        Ok(out)
    }

    async fn terminating(&self, ids: &[String]) -> Result<std::collections::BTreeSet<String>> {
        let mut out = std::collections::BTreeSet::new();
        for chunk in ids.chunks(50) {
            let resp = self
                .0
                .describe_auto_scaling_instances()
                .set_instance_ids(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| Error::sdk("find terminating instances (autoscaling:DescribeAutoScalingInstances)", chunk.join(","), e))?;
            for i in resp.auto_scaling_instances() {
                if i.lifecycle_state().unwrap_or_default().starts_with("Terminating") {
                    out.insert(i.instance_id().unwrap_or_default().to_string());
                }
            }
        }
        Ok(out)
    }

    async fn heartbeat(&self, hook: &WaitingHook, instance_id: &str) -> Result<()> {
        self.0
            .record_lifecycle_action_heartbeat()
            .auto_scaling_group_name(&hook.group)
            .lifecycle_hook_name(&hook.hook)
            .instance_id(instance_id)
            .send()
            .await
            .map_err(|e| Error::sdk("heartbeat (autoscaling:RecordLifecycleActionHeartbeat)", format!("{}/{}", hook.group, hook.hook), e))?;
        Ok(())
    }

    async fn complete(&self, hook: &WaitingHook, instance_id: &str) -> Result<()> {
        self.0
            .complete_lifecycle_action()
            .auto_scaling_group_name(&hook.group)
            .lifecycle_hook_name(&hook.hook)
            .instance_id(instance_id)
            .lifecycle_action_result("CONTINUE")
            .send()
            .await
            .map_err(|e| Error::sdk("complete lifecycle action (autoscaling:CompleteLifecycleAction)", format!("{}/{}", hook.group, hook.hook), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn global_timeout_is_capped() {
        assert_eq!(super::global_timeout(300, Some(30_000)), 30_000);
        assert_eq!(super::global_timeout(300, None), 30_000);
        assert_eq!(super::global_timeout(7200, Some(720_000)), 172_800, "48 h at most");
        assert_eq!(super::global_timeout(300, Some(600)), 600, "a shorter reported timeout wins");
    }
}
