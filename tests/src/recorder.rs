//! A recording proxy between the SDK and moto: every AWS call is logged with
//! its service, operation and caller (the access key id, one per fake
//! instance), then forwarded unchanged.

use crate::http::{serve, Served};
use crate::route53_batch::Rrset;
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
    /// The request as sent (for the IAM proof's capture: `Recorder::write_capture`).
    pub method: String,
    /// Path and query.
    pub path: String,
    pub target: Option<String>,
    pub body: String,
}

impl Call {
    /// Whether the operation changes anything.
    pub fn is_mutating(&self) -> bool {
        mutating(&self.operation)
    }
}

fn mutating(operation: &str) -> bool {
    const READ: &[&str] = &["Describe", "Get", "List"];
    !READ.iter().any(|p| operation.starts_with(p))
}

struct Inner {
    upstream: String,
    client: reqwest::Client,
    calls: Mutex<Vec<Call>>,
    /// Services sent somewhere other than moto (e.g. `autoscaling` → the lifecycle double).
    routes: Mutex<std::collections::BTreeMap<String, String>>,
    /// Share of calls (0.0–1.0) hit by a fault, each of one [`Fault`] kind picked at random.
    fault_rate: Mutex<f64>,
    /// Fixed error answers: operation → (HTTP status, error code, message), sent instead of moto's.
    scripted: Mutex<std::collections::BTreeMap<String, (u16, String, String)>>,
    /// Held around every mutating call sent to moto. AWS applies a conditional write atomically
    /// (PutParameter with Overwrite false, which the agents' election relies on; CreateRule's
    /// priority check); moto checks and then writes without a lock, so two concurrent creates
    /// could both succeed. Serialising writes gives moto AWS's semantics; reads stay concurrent.
    /// (Two cluster-inits were seen once in ~340 ten-server races before this; not reproduced in
    /// 200 more without it, so this is the likeliest cause, not a proven one.)
    writes: tokio::sync::Mutex<()>,
    /// Route53's account-wide request budget (requests a second; a token bucket as deep as one
    /// second's worth): calls beyond it are answered with Route53's throttling error.
    route53_budget: Mutex<Option<(f64, f64, std::time::Instant)>>,
    /// Share of the other services' calls answered with their throttling error.
    throttle_rate: Mutex<f64>,
    /// A record set (its `<ResourceRecordSet>` XML and set identifier) that Route53 listings
    /// show but moto does not hold, until a change batch tries to delete it: what an agent sees
    /// when another writer deletes a record between its read and its write.
    phantom: Mutex<Option<(String, String)>>,
}

/// What the proxy does to a call picked for a fault. Half of the kinds strike before moto
/// sees the call, half after moto applied it (so a retry meets its own earlier effect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The service's real throttling error (400 with the protocol's error body).
    Throttle,
    /// 500 or 503 before the call reaches moto.
    Unavailable,
    /// The TCP connection is closed before any answer.
    DropConnection,
    /// Applied by moto, answer replaced by a 503.
    LoseAnswer,
    /// Applied by moto, then the connection is closed without an answer.
    DropAfterApply,
    /// Answered, 0.5–2.5 s late (within the SDK's attempt timeout).
    Slow,
}

impl Fault {
    pub const ALL: [Fault; 6] = [Fault::Throttle, Fault::Unavailable, Fault::DropConnection, Fault::LoseAnswer, Fault::DropAfterApply, Fault::Slow];
}

pub struct Recorder {
    inner: Arc<Inner>,
    served: Served,
}

impl Recorder {
    pub async fn start(upstream: String) -> anyhow::Result<Recorder> {
        let inner = Arc::new(Inner {
            upstream,
            // Bounded: a stalled moto must not hold the write lock for ever.
            client: reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build()?,
            calls: Mutex::new(Vec::new()),
            routes: Default::default(),
            fault_rate: Mutex::new(0.0),
            scripted: Default::default(),
            writes: tokio::sync::Mutex::new(()),
            phantom: Mutex::new(None),
            route53_budget: Mutex::new(None),
            throttle_rate: Mutex::new(0.0),
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
    /// Answers every `operation` call with this error (in the service's protocol) until
    /// [`Recorder::clear_scripted`]; moto never sees those calls.
    pub fn answer_with_error(&self, operation: &str, status: u16, code: &str, message: &str) {
        self.inner.scripted.lock().unwrap().insert(operation.to_string(), (status, code.to_string(), message.to_string()));
    }

    pub fn clear_scripted(&self) {
        self.inner.scripted.lock().unwrap().clear();
    }

    /// Lists an `A` record `name` (set `set_identifier`, MultiValueAnswer, TTL 30, `value`) in
    /// every Route53 listing, though the zone does not hold it, until a change batch deletes
    /// it: the batch then meets Route53's "not found", as after a concurrent delete.
    pub fn phantom_api_record(&self, name: &str, set_identifier: &str, value: &str) {
        let xml = format!(
            "<ResourceRecordSet><Name>{name}.</Name><Type>A</Type><SetIdentifier>{set_identifier}</SetIdentifier><MultiValueAnswer>true</MultiValueAnswer><TTL>30</TTL><ResourceRecords><ResourceRecord><Value>{value}</Value></ResourceRecord></ResourceRecords></ResourceRecordSet>"
        );
        *self.inner.phantom.lock().unwrap() = Some((xml, set_identifier.to_string()));
    }

    /// Throttles as AWS does under load: Route53 at `route53_per_s` requests a second for all
    /// callers together (its account limit is 5), and `others` (0.0–1.0) of every other call.
    pub fn throttle(&self, route53_per_s: Option<f64>, others: f64) {
        *self.inner.route53_budget.lock().unwrap() = route53_per_s.map(|r| (r, r, std::time::Instant::now()));
        *self.inner.throttle_rate.lock().unwrap() = others;
    }

    pub fn route(&self, service: &str, upstream: String) {
        self.inner.routes.lock().unwrap().insert(service.to_string(), upstream);
    }

    /// Writes the calls of `callers` (all when empty) as JSON lines, the capture format of
    /// `tests/tools/iam_eval` (caller, service, operation, method, path, query, headers, body).
    pub fn write_capture(&self, path: &std::path::Path, callers: &[&str]) -> std::io::Result<usize> {
        let mut out = String::new();
        let calls: Vec<Call> = self.calls().into_iter().filter(|c| callers.is_empty() || callers.contains(&c.caller.as_str())).collect();
        for c in &calls {
            let (p, q) = c.path.split_once('?').unwrap_or((c.path.as_str(), ""));
            let mut headers = serde_json::Map::new();
            if let Some(t) = &c.target {
                headers.insert("x-amz-target".into(), t.clone().into());
            }
            let line = serde_json::json!({
                "caller": c.caller, "service": c.service, "operation": c.operation, "method": c.method,
                "path": p, "query": q, "headers": headers, "body": c.body, "status": c.status,
            });
            out.push_str(&line.to_string());
            out.push('\n');
        }
        std::fs::write(path, out)?;
        Ok(calls.len())
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
    // S3 REST (path style: /bucket/key).
    if headers.get("authorization").and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("/s3/aws4_request")) {
        let object = path.trim_matches('/').contains('/');
        return match (method.as_str(), object) {
            ("GET", false) => "ListObjectsV2",
            ("GET", true) => "GetObject",
            ("PUT", true) => "PutObject",
            ("DELETE", true) => "DeleteObject",
            ("PUT", false) => "CreateBucket",
            ("HEAD", _) => "HeadObject",
            _ => "",
        }
        .to_string();
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

/// An error as each protocol really sends it, so the SDK classifies it as it would in AWS.
fn error_response(service: &str, status: u16, code: &str, message: &str) -> Response {
    let (ctype, body) = match service {
        "ssm" => ("application/x-amz-json-1.1", serde_json::json!({ "__type": code, "message": message }).to_string()),
        "ec2" => (
            "text/xml",
            format!("<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>fault</RequestID></Response>"),
        ),
        "route53" => (
            "text/xml",
            format!("<ErrorResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>fault</RequestId></ErrorResponse>"),
        ),
        _ => (
            "text/xml",
            format!("<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>fault</RequestId></ErrorResponse>"),
        ),
    };
    Response::builder().status(status).header("content-type", ctype).body(Body::from(body)).unwrap()
}

/// The throttling error each protocol really sends.
fn throttling(service: &str) -> Response {
    let code = match service {
        "ssm" => "ThrottlingException",
        "ec2" => "RequestLimitExceeded",
        _ => "Throttling",
    };
    error_response(service, 400, code, "Rate exceeded")
}

/// Ends this connection without an answer: unwinding the connection's task closes the
/// socket (`resume_unwind` skips the panic hook, so nothing is printed).
fn drop_connection() -> ! {
    std::panic::resume_unwind(Box::new("fault: connection dropped"))
}

fn unavailable() -> Response {
    Response::builder().status(503).body(Body::from("Service Unavailable")).unwrap()
}

/// The zone's record sets as moto holds them (every page). Route53 is never under moto's
/// signature check (see World::with_separate_route53), so the caller's Authorization header
/// serves only to route the call to moto's Route53.
async fn zone_sets(client: &reqwest::Client, upstream: &str, list_path: &str, headers: &HeaderMap) -> Result<Vec<Rrset>, Response> {
    let mut current = Vec::new();
    let mut start: Option<(String, String, Option<String>)> = None;
    loop {
        let mut url = format!("{upstream}{list_path}?maxitems=300");
        if let Some((name, rtype, id)) = start.take() {
            url.push_str(&format!("&name={name}&type={rtype}"));
            if let Some(id) = id {
                url.push_str(&format!("&identifier={id}"));
            }
        }
        let mut req = client.get(url);
        for (k, v) in headers.iter() {
            if k == "authorization" || k == "host" {
                req = req.header(k, v);
            }
        }
        let text = match req.send().await {
            Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
            Ok(r) => return Err(error_response("route53", 400, "NoSuchHostedZone", &format!("listing the zone failed: {}", r.status()))),
            Err(e) => return Err(error_response("route53", 503, "ServiceUnavailable", &e.to_string())),
        };
        let (sets, next) = crate::route53_batch::parse_listing(&text)
            .map_err(|e| error_response("route53", 500, "InternalError", &format!("zone listing does not parse: {e}")))?;
        current.extend(sets);
        match next {
            Some(n) => start = Some(n),
            None => return Ok(current),
        }
    }
}

/// Route53's batch semantics (see [`crate::route53_batch`]): the batch is checked against the
/// zone's records as moto holds them; `Err` is the `InvalidChangeBatch` Route53 would answer,
/// `Ok` the zone as Route53 would hold it afterwards. Called with the write lock held, so
/// nothing changes between the check and moto's apply.
async fn route53_check(client: &reqwest::Client, upstream: &str, path: &str, headers: &HeaderMap, body: &[u8]) -> Result<Vec<Rrset>, Response> {
    let changes = crate::route53_batch::parse_changes(&String::from_utf8_lossy(body))
        .map_err(|e| error_response("route53", 400, "InvalidInput", &format!("change batch does not parse: {e}")))?;
    let current = zone_sets(client, upstream, path.trim_end_matches('/'), headers).await?;
    crate::route53_batch::check(&current, &changes)
        .map_err(|problems| error_response("route53", 400, "InvalidChangeBatch", &format!("[{}]", problems.join(", "))))
}

/// After moto applied a batch: puts back the sets Route53 would have kept (moto deletes every
/// set with a deleted set's `SetIdentifier`, whatever its name).
async fn restore_loose_deletes(client: &reqwest::Client, upstream: &str, path: &str, headers: &HeaderMap, expected: &[Rrset]) {
    let Ok(actual) = zone_sets(client, upstream, path.trim_end_matches('/'), headers).await else {
        return;
    };
    let missing: Vec<&Rrset> = expected.iter().filter(|e| !actual.iter().any(|a| a.key() == e.key())).collect();
    if missing.is_empty() {
        return;
    }
    let mut req = client.post(format!("{upstream}{path}")).body(crate::route53_batch::upsert_body(&missing));
    for (k, v) in headers.iter() {
        if k == "authorization" || k == "host" || k == "content-type" {
            req = req.header(k, v);
        }
    }
    let _ = req.send().await;
}

async fn forward(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let (caller, service) = credential(&parts.headers);
    let op = operation(&parts.method, parts.uri.path(), &parts.headers, &body);
    let target = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()).map(str::to_string);
    let path_and_query = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let body_text = String::from_utf8_lossy(&body).into_owned();
    let record = |status: u16| {
        inner.calls.lock().unwrap().push(Call {
            caller: caller.clone(),
            service: service.clone(),
            operation: op.clone(),
            at_ms: now_ms(),
            status,
            method: parts.method.to_string(),
            path: path_and_query.clone(),
            target: target.clone(),
            body: body_text.clone(),
        })
    };
    let scripted = inner.scripted.lock().unwrap().get(&op).cloned();
    if let Some((status, code, message)) = scripted {
        record(status);
        return error_response(&service, status, &code, &message);
    }
    let throttled = if service == "route53" {
        let mut budget = inner.route53_budget.lock().unwrap();
        match budget.as_mut() {
            Some((per_s, tokens, at)) => {
                *tokens = (*tokens + at.elapsed().as_secs_f64() * *per_s).min(*per_s);
                *at = std::time::Instant::now();
                if *tokens >= 1.0 {
                    *tokens -= 1.0;
                    false
                } else {
                    true
                }
            }
            None => false,
        }
    } else {
        rand::random::<f64>() < *inner.throttle_rate.lock().unwrap()
    };
    if throttled {
        record(400);
        return throttling(&service);
    }
    let rate = *inner.fault_rate.lock().unwrap();
    let fault = (rand::random::<f64>() < rate).then(|| Fault::ALL[rand::random_range(0..Fault::ALL.len())]);
    match fault {
        Some(Fault::Throttle) => {
            record(400);
            return throttling(&service);
        }
        Some(Fault::Unavailable) => {
            let status = if rand::random::<bool>() { 500 } else { 503 };
            record(status);
            return Response::builder().status(status).body(Body::from("server error")).unwrap();
        }
        Some(Fault::DropConnection) => {
            record(0);
            drop_connection();
        }
        Some(Fault::Slow) => tokio::time::sleep(std::time::Duration::from_millis(rand::random_range(500..2500))).await,
        _ => {}
    }
    let upstream = inner.routes.lock().unwrap().get(&service).cloned().unwrap_or_else(|| inner.upstream.clone());
    let url = format!("{}{}", upstream, parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut out = inner.client.request(parts.method.clone(), url).body(body.to_vec());
    for (k, v) in parts.headers.iter() {
        // The Host header is kept: it is signed (SigV4), and moto checks signatures when IAM is enforced.
        if k != "content-length" {
            out = out.header(k, v);
        }
    }
    // K3S_ASG_TESTBED_CONCURRENT_WRITES=1 turns the serialisation off (to reproduce moto's race).
    let serialise = mutating(&op) && std::env::var_os("K3S_ASG_TESTBED_CONCURRENT_WRITES").is_none();
    let _serialised = if serialise { Some(inner.writes.lock().await) } else { None };
    if op == "ChangeResourceRecordSets" {
        let mut phantom = inner.phantom.lock().unwrap();
        if phantom.as_ref().is_some_and(|(_, id)| String::from_utf8_lossy(&body).contains(&format!("<SetIdentifier>{id}</SetIdentifier>"))) {
            *phantom = None;
        }
    }
    let mut route53_after = None;
    if op == "ChangeResourceRecordSets" {
        match route53_check(&inner.client, &upstream, parts.uri.path(), &parts.headers, &body).await {
            Ok(zone) => route53_after = Some(zone),
            Err(refusal) => {
                record(400);
                return refusal;
            }
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
    if let (Some(expected), true) = (&route53_after, status.is_success()) {
        if body_text.contains("<Action>DELETE</Action>") {
            restore_loose_deletes(&inner.client, &upstream, parts.uri.path(), &parts.headers, expected).await;
        }
    }
    // Applied by moto, but the caller never learns it.
    // A call that got no answer at all is recorded with status 0.
    match fault {
        Some(Fault::LoseAnswer) => {
            record(503);
            return unavailable();
        }
        Some(Fault::DropAfterApply) => {
            record(0);
            drop_connection();
        }
        _ => record(status.as_u16()),
    }
    let phantom = inner.phantom.lock().unwrap().as_ref().map(|(xml, _)| xml.clone());
    let bytes = match phantom {
        Some(xml) if op == "ListResourceRecordSets" && status.is_success() => {
            String::from_utf8_lossy(&bytes).replacen("<ResourceRecordSets>", &format!("<ResourceRecordSets>{xml}"), 1).into_bytes().into()
        }
        _ => bytes,
    };
    let mut resp = Response::builder().status(status);
    for (k, v) in headers.iter() {
        if k != "content-length" && k != "transfer-encoding" && k != "connection" {
            resp = resp.header(k, v);
        }
    }
    resp.body(Body::from(bytes)).unwrap()
}
