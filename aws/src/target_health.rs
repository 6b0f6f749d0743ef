//! ELBv2 target health, read the same way by both programs.

/// One registered target: instance id, port, and health state (`healthy`, `draining`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub port: u16,
    pub state: String,
}

/// Every target of the group; the error is the SDK's, with its causes.
pub async fn members(client: &aws_sdk_elasticloadbalancingv2::Client, arn: &str) -> Result<Vec<Member>, String> {
    let resp = client.describe_target_health().target_group_arn(arn).send().await.map_err(|e| crate::sdk_error_text(&e))?;
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
