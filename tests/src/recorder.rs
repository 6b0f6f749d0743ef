//! A recording proxy between the SDK and moto: every AWS call is logged with
//! its service, operation and caller (the access key id, one per fake
//! instance), then forwarded unchanged.

use crate::http::{serve, Served};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub caller: String,
    pub service: String,
    pub operation: String,
    pub at_ms: u128,
    pub status: u16,
}

impl Call {
    /// Whether the operation changes anything.
    pub fn is_mutating(&self) -> bool {
        const READ: &[&str] = &["Describe", "Get", "List"];
        !READ.iter().any(|p| self.operation.starts_with(p))
    }
}

struct Inner {
    upstream: String,
    client: reqwest::Client,
    calls: Mutex<Vec<Call>>,
    /// Services sent somewhere other than moto (e.g. `autoscaling` → the lifecycle double).
    routes: Mutex<std::collections::BTreeMap<String, String>>,
    /// Share of calls (0.0–1.0) that fail: half before reaching moto (throttling or 503),
    /// half after moto applied them (the answer is lost and replaced by a 503).
    fault_rate: Mutex<f64>,
}

pub struct Recorder {
    inner: Arc<Inner>,
    served: Served,
}

impl Recorder {
    pub async fn start(upstream: String) -> anyhow::Result<Recorder> {
        let inner = Arc::new(Inner {
            upstream,
            client: reqwest::Client::new(),
            calls: Mutex::new(Vec::new()),
            routes: Default::default(),
            fault_rate: Mutex::new(0.0),
        });
        let router = axum::Router::new().fallback(forward).with_state(inner.clone());
        let served = serve("127.0.0.1:0", router).await?;
        Ok(Recorder { inner, served })
    }

    pub fn url(&self) -> String {
        self.served.url()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.calls.lock().unwrap().clone()
    }

    pub fn calls_by(&self, caller: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.caller == caller).collect()
    }

    /// Injects faults into this share of calls from now on (see `Inner::fault_rate`).
    pub fn set_fault_rate(&self, rate: f64) {
        *self.inner.fault_rate.lock().unwrap() = rate;
    }

    /// Sends calls signed for `service` to `upstream` instead of moto.
    pub fn route(&self, service: &str, upstream: String) {
        self.inner.routes.lock().unwrap().insert(service.to_string(), upstream);
    }

    pub fn clear(&self) {
        self.inner.calls.lock().unwrap().clear();
    }
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis()
}

/// `Credential=AKID/date/region/service/aws4_request` → (AKID, service).
fn credential(headers: &HeaderMap) -> (String, String) {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let cred = auth.split("Credential=").nth(1).unwrap_or_default();
    let parts: Vec<&str> = cred.split(['/', ',']).collect();
    (parts.first().unwrap_or(&"").to_string(), parts.get(3).unwrap_or(&"").to_string())
}

fn operation(method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) -> String {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return target.rsplit('.').next().unwrap_or(target).to_string();
    }
    let text = String::from_utf8_lossy(body);
    if let Some(action) = text.split('&').find_map(|kv| kv.strip_prefix("Action=")) {
        return action.to_string();
    }
    // Route53 REST.
    let p = path.trim_end_matches('/');
    let op = match (method.as_str(), p) {
        ("POST", p) if p.ends_with("/rrset") => "ChangeResourceRecordSets",
        ("GET", p) if p.ends_with("/rrset") => "ListResourceRecordSets",
        ("GET", p) if p.ends_with("/hostedzone") => "ListHostedZones",
        ("POST", p) if p.ends_with("/hostedzone") => "CreateHostedZone",
        ("GET", p) if p.contains("/hostedzone/") => "GetHostedZone",
        ("GET", p) if p.contains("/change/") => "GetChange",
        _ => "",
    };
    if op.is_empty() {
        format!("{method} {path}")
    } else {
        op.to_string()
    }
}

/// The throttling error each protocol really sends, so the SDK classifies it as it would in AWS.
fn throttling(service: &str) -> Response {
    let (ctype, body) = match service {
        "ssm" => ("application/x-amz-json-1.1", r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_string()),
        "ec2" => (
            "text/xml",
            "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>fault</RequestID></Response>".to_string(),
        ),
        "route53" => (
            "text/xml",
            "<ErrorResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>fault</RequestId></ErrorResponse>".to_string(),
        ),
        _ => (
            "text/xml",
            "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>fault</RequestId></ErrorResponse>".to_string(),
        ),
    };
    Response::builder().status(400).header("content-type", ctype).body(Body::from(body)).unwrap()
}

fn unavailable() -> Response {
    Response::builder().status(503).body(Body::from("Service Unavailable")).unwrap()
}

async fn forward(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let (caller, service) = credential(&parts.headers);
    let op = operation(&parts.method, parts.uri.path(), &parts.headers, &body);
    let rate = *inner.fault_rate.lock().unwrap();
    let roll: f64 = rand::random();
    if roll < rate / 2.0 {
        let resp = if roll < rate / 4.0 { throttling(&service) } else { unavailable() };
        inner.calls.lock().unwrap().push(Call { caller, service, operation: op, at_ms: now_ms(), status: resp.status().as_u16() });
        return resp;
    }
    let lose_answer = roll < rate;
    let upstream = inner.routes.lock().unwrap().get(&service).cloned().unwrap_or_else(|| inner.upstream.clone());
    let url = format!("{}{}", upstream, parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut out = inner.client.request(parts.method.clone(), url).body(body.to_vec());
    for (k, v) in parts.headers.iter() {
        if k != "host" && k != "content-length" {
            out = out.header(k, v);
        }
    }
    let (status, headers, bytes) = match out.send().await {
        Ok(resp) => {
            let status = resp.status();
            let headers = resp.headers().clone();
            (status, headers, resp.bytes().await.unwrap_or_default())
        }
        Err(e) => (StatusCode::BAD_GATEWAY, HeaderMap::new(), e.to_string().into()),
    };
    if lose_answer {
        // Applied by moto, but the caller never learns it.
        inner.calls.lock().unwrap().push(Call { caller, service, operation: op, at_ms: now_ms(), status: 503 });
        return unavailable();
    }
    inner.calls.lock().unwrap().push(Call { caller, service, operation: op, at_ms: now_ms(), status: status.as_u16() });
    let mut resp = Response::builder().status(status);
    for (k, v) in headers.iter() {
        if k != "content-length" && k != "transfer-encoding" && k != "connection" {
            resp = resp.header(k, v);
        }
    }
    resp.body(Body::from(bytes)).unwrap()
}
