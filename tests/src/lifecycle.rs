//! Auto Scaling lifecycle double. moto does not implement
//! `CompleteLifecycleAction` or `RecordLifecycleActionHeartbeat`, so the
//! recorder routes every `autoscaling` call here. It implements exactly the
//! calls the agent makes (query protocol, XML answers) and records them.

use crate::http::{serve, Served};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct AsgState {
    /// instance id → (group, lifecycle state such as `InService` or `Terminating:Wait`).
    pub instances: BTreeMap<String, (String, String)>,
    /// group → (hook name, transition, heartbeat timeout s).
    pub hooks: BTreeMap<String, Vec<(String, String, u64)>>,
    /// (action, instance id, hook, result) in arrival order.
    pub actions: Vec<(String, String, String, String)>,
    /// group → its tags.
    pub group_tags: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Clone)]
pub struct LifecycleDouble {
    pub state: Arc<Mutex<AsgState>>,
    served: Arc<Served>,
}

const NS: &str = "http://autoscaling.amazonaws.com/doc/2011-01-01/";

impl LifecycleDouble {
    pub async fn start() -> anyhow::Result<Self> {
        let state = Arc::new(Mutex::new(AsgState::default()));
        let router = axum::Router::new().fallback(handle).with_state(state.clone());
        Ok(LifecycleDouble { state, served: Arc::new(serve("127.0.0.1:0", router).await?) })
    }

    pub fn url(&self) -> String {
        self.served.url()
    }

    /// Puts `instance` in `group` with a terminating hook whose heartbeat timeout is `heartbeat_s`.
    pub fn add(&self, instance: &str, group: &str, lifecycle_state: &str, heartbeat_s: u64) {
        let mut s = self.state.lock().unwrap();
        s.instances.insert(instance.into(), (group.into(), lifecycle_state.into()));
        s.hooks.insert(
            group.into(),
            vec![
                ("launching".into(), "autoscaling:EC2_INSTANCE_LAUNCHING".into(), 600),
                ("drain".into(), "autoscaling:EC2_INSTANCE_TERMINATING".into(), heartbeat_s),
            ],
        );
    }

    /// Sets an Auto Scaling group's tags (what `DescribeTags` answers for it).
    pub fn set_group_tags(&self, group: &str, tags: &[(&str, &str)]) {
        self.state.lock().unwrap().group_tags.insert(group.into(), tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    }

    pub fn set_state(&self, instance: &str, lifecycle_state: &str) {
        if let Some(e) = self.state.lock().unwrap().instances.get_mut(instance) {
            e.1 = lifecycle_state.into();
        }
    }

    pub fn actions(&self) -> Vec<(String, String, String, String)> {
        self.state.lock().unwrap().actions.clone()
    }
}

fn form(body: &str) -> BTreeMap<String, String> {
    body.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = || std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if hex().is_some() => {
                out.push(hex().unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn xml(action: &str, result: &str) -> Response {
    (
        [("content-type", "text/xml")],
        format!(
            "<{action}Response xmlns=\"{NS}\"><{action}Result>{result}</{action}Result><ResponseMetadata><RequestId>double-{}</RequestId></ResponseMetadata></{action}Response>",
            rand::random::<u32>()
        ),
    )
        .into_response()
}

fn error(code: &str, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "text/xml")],
        format!("<ErrorResponse xmlns=\"{NS}\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>double</RequestId></ErrorResponse>"),
    )
        .into_response()
}

async fn handle(State(state): State<Arc<Mutex<AsgState>>>, body: String) -> Response {
    let f = form(&body);
    let action = f.get("Action").cloned().unwrap_or_default();
    let mut s = state.lock().unwrap();
    match action.as_str() {
        "DescribeAutoScalingInstances" => {
            let ids: Vec<&String> = f.iter().filter(|(k, _)| k.starts_with("InstanceIds.member.")).map(|(_, v)| v).collect();
            let mut members = String::new();
            for id in ids {
                if let Some((group, ls)) = s.instances.get(id) {
                    members.push_str(&format!(
                        "<member><InstanceId>{id}</InstanceId><InstanceType>t3.medium</InstanceType><AutoScalingGroupName>{group}</AutoScalingGroupName><AvailabilityZone>us-east-1a</AvailabilityZone><LifecycleState>{ls}</LifecycleState><HealthStatus>HEALTHY</HealthStatus><ProtectedFromScaleIn>false</ProtectedFromScaleIn></member>"
                    ));
                }
            }
            xml(&action, &format!("<AutoScalingInstances>{members}</AutoScalingInstances>"))
        }
        "DescribeTags" => {
            // Filters.member.1.Name=auto-scaling-group, Filters.member.1.Values.member.N=group
            let groups: Vec<&String> = f.iter().filter(|(k, _)| k.starts_with("Filters.member.1.Values.member.")).map(|(_, v)| v).collect();
            let mut members = String::new();
            for g in groups {
                for (k, v) in s.group_tags.get(g).cloned().unwrap_or_default() {
                    members.push_str(&format!(
                        "<member><ResourceId>{g}</ResourceId><ResourceType>auto-scaling-group</ResourceType><Key>{}</Key><Value>{}</Value><PropagateAtLaunch>false</PropagateAtLaunch></member>",
                        xml_escape(&k),
                        xml_escape(&v)
                    ));
                }
            }
            xml(&action, &format!("<Tags>{members}</Tags>"))
        }
        "DescribeLifecycleHooks" => {
            let group = f.get("AutoScalingGroupName").cloned().unwrap_or_default();
            let mut members = String::new();
            for (name, transition, hb) in s.hooks.get(&group).cloned().unwrap_or_default() {
                members.push_str(&format!(
                    "<member><LifecycleHookName>{name}</LifecycleHookName><AutoScalingGroupName>{group}</AutoScalingGroupName><LifecycleTransition>{transition}</LifecycleTransition><HeartbeatTimeout>{hb}</HeartbeatTimeout><GlobalTimeout>{}</GlobalTimeout><DefaultResult>ABANDON</DefaultResult></member>",
                    hb * 100
                ));
            }
            xml(&action, &format!("<LifecycleHooks>{members}</LifecycleHooks>"))
        }
        // The Cluster Autoscaler's scale-down: the instance goes to Terminating:Wait behind the
        // group's terminating hook (IMDS then says Terminated: the test sets that).
        "TerminateInstanceInAutoScalingGroup" => {
            let id = f.get("InstanceId").cloned().unwrap_or_default();
            let decrement = f.get("ShouldDecrementDesiredCapacity").cloned().unwrap_or_default();
            let Some((group, _)) = s.instances.get(&id).cloned() else {
                return error("ValidationError", &format!("Instance Id not found - No managed instance found for instance ID: {id}"));
            };
            let hooked = s.hooks.get(&group).is_some_and(|h| h.iter().any(|(_, t, _)| t == "autoscaling:EC2_INSTANCE_TERMINATING"));
            s.instances.get_mut(&id).unwrap().1 = if hooked { "Terminating:Wait".into() } else { "Terminating".into() };
            s.actions.push((action.clone(), id.clone(), String::new(), format!("ShouldDecrementDesiredCapacity={decrement}")));
            xml(
                &action,
                &format!("<Activity><ActivityId>double-{id}</ActivityId><AutoScalingGroupName>{group}</AutoScalingGroupName><Description>Terminating EC2 instance: {id}</Description><Cause>scale-down</Cause><StartTime>2026-11-29T00:00:00Z</StartTime><StatusCode>InProgress</StatusCode><Progress>0</Progress></Activity>"),
            )
        }
        "RecordLifecycleActionHeartbeat" | "CompleteLifecycleAction" => {
            let id = f.get("InstanceId").cloned().unwrap_or_default();
            let hook = f.get("LifecycleHookName").cloned().unwrap_or_default();
            let Some((_, ls)) = s.instances.get(&id).cloned() else {
                return error("ValidationError", &format!("No active Lifecycle Action found with instance ID {id}"));
            };
            // The terminating hook pauses a scale-in in Terminating:Wait, or in Warmed:Pending:Wait
            // when the instance goes back to the warm pool instead (instance reuse policy).
            let next = match ls.as_str() {
                "Terminating:Wait" => "Terminating:Proceed",
                "Warmed:Pending:Wait" => "Warmed:Pending:Proceed",
                _ => return error("ValidationError", &format!("No active Lifecycle Action found with instance ID {id}")),
            };
            let result = f.get("LifecycleActionResult").cloned().unwrap_or_default();
            s.actions.push((action.clone(), id.clone(), hook, result));
            if action == "CompleteLifecycleAction" {
                s.instances.get_mut(&id).unwrap().1 = next.into();
            }
            xml(&action, "")
        }
        other => error("InvalidAction", &format!("the lifecycle double does not implement {other}")),
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
