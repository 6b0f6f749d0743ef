//! Lambda mode (custom runtime, chosen when `AWS_LAMBDA_RUNTIME_API` is set):
//! every event — an EventBridge schedule, an ASG lifecycle or EC2 state-change
//! event — is answered with one reconcile. An SSM "Parameter Store Change"
//! event first makes it forget the specs it kept (see `warm`).

use crate::reconcile::{self, Effects, Settings};
use crate::warm::Warm;
use crate::Error;
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::{json, Value};
use std::sync::Arc;

/// What kind of event arrived (for the log and the answer).
pub fn describe_event(event: &Value) -> String {
    let source = event["source"].as_str().unwrap_or_default();
    let detail_type = event["detail-type"].as_str().unwrap_or_default();
    match (source, detail_type) {
        ("aws.events", "Scheduled Event") => "schedule".into(),
        ("aws.autoscaling", t) => {
            let instance = event["detail"]["EC2InstanceId"].as_str().unwrap_or("?");
            format!("autoscaling: {t} ({instance})")
        }
        ("aws.ec2", t) => {
            let d = &event["detail"];
            format!("ec2: {t} ({} {})", d["instance-id"].as_str().unwrap_or("?"), d["state"].as_str().unwrap_or("?"))
        }
        ("aws.ssm", t) => {
            let d = &event["detail"];
            format!("ssm: {t} ({} {})", d["name"].as_str().unwrap_or("?"), d["operation"].as_str().unwrap_or("?"))
        }
        _ => "unrecognised event (reconciling anyway)".into(),
    }
}

/// Whether the event says a parameter changed (so the kept specs are stale).
pub fn changes_specs(event: &Value) -> bool {
    event["source"].as_str() == Some("aws.ssm")
}

pub async fn serve(settings: Settings, fx: Effects, warm: Warm) -> Result<(), Error> {
    let shared = Arc::new((settings, fx, warm));
    let handler = service_fn(move |event: LambdaEvent<Value>| {
        let shared = shared.clone();
        async move {
            let kind = describe_event(&event.payload);
            tracing::info!(event = %kind, request = %event.context.request_id, "reconciling");
            if changes_specs(&event.payload) {
                shared.2.invalidate(&kind);
            }
            let p = reconcile::apply(&shared.0, &shared.1, &shared.2).await.map_err(|e| -> lambda_runtime::Error { Box::new(e) })?;
            if let Some(e) = reconcile::refusal(&p, &shared.0) {
                // A failed invocation, so the operator's alarms see it; API garbage was collected.
                tracing::error!(plan = %crate::render::text(&p), "plan refused");
                return Err(Box::new(e) as lambda_runtime::Error);
            }
            Ok::<Value, lambda_runtime::Error>(json!({
                "event": kind,
                "rule_changes": p.rules.len(),
                "record_changes": p.records.len() + p.api_garbage.len(),
                "conflicts": p.conflicts,
                "notes": p.notes,
            }))
        }
    });
    lambda_runtime::run(handler).await.map_err(|e| Error::failed("lambda runtime", "AWS_LAMBDA_RUNTIME_API", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata").join(name);
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn events_are_recognised() {
        assert_eq!(describe_event(&fixture("eventbridge-scheduled.json")), "schedule");
        assert_eq!(
            describe_event(&fixture("asg-lifecycle-terminating.json")),
            "autoscaling: EC2 Instance-terminate Lifecycle Action (i-1234567890abcdef0)"
        );
        assert_eq!(describe_event(&fixture("ec2-state-change.json")), "ec2: EC2 Instance State-change Notification (i-1234567890abcdef0 terminated)");
        let ssm = fixture("ssm-parameter-change.json");
        assert_eq!(describe_event(&ssm), "ssm: Parameter Store Change (/k3s-asg/endpoints/blog Update)");
        assert!(changes_specs(&ssm));
        assert!(!changes_specs(&fixture("eventbridge-scheduled.json")));
        assert!(describe_event(&json!({"hello": 1})).starts_with("unrecognised"));
    }
}
