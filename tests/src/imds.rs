//! IMDSv2 double, one per fake instance. Refuses IMDSv1 (401 without a token),
//! answers the token PUT with the TTL header the Rust SDK requires.

use crate::http::{serve, Served};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct ImdsState {
    /// Paths under /latest/meta-data/ and their values.
    pub values: BTreeMap<String, String>,
    /// Instance tags; `None` when instance metadata tags are off.
    pub tags: Option<BTreeMap<String, String>>,
    /// Calls without a valid token (IMDSv1 attempts).
    pub refused: u32,
    tokens: Vec<String>,
}

#[derive(Clone)]
pub struct ImdsDouble {
    pub state: Arc<Mutex<ImdsState>>,
    served: Arc<Served>,
}

impl ImdsDouble {
    pub async fn start(values: BTreeMap<String, String>, tags: Option<BTreeMap<String, String>>) -> anyhow::Result<Self> {
        let state = Arc::new(Mutex::new(ImdsState { values, tags, ..Default::default() }));
        let router =
            axum::Router::new().route("/latest/api/token", put(token)).route("/latest/meta-data/{*path}", get(meta)).with_state(state.clone());
        let served = Arc::new(serve("127.0.0.1:0", router).await?);
        Ok(ImdsDouble { state, served })
    }

    pub fn url(&self) -> String {
        self.served.url()
    }

    pub fn set(&self, path: &str, value: Option<&str>) {
        let mut s = self.state.lock().unwrap();
        match value {
            Some(v) => s.values.insert(path.to_string(), v.to_string()),
            None => s.values.remove(path),
        };
    }

    /// Forgets every token it gave (IMDS restarted): they are refused with 401 from now on.
    pub fn revoke_tokens(&self) {
        self.state.lock().unwrap().tokens.clear();
    }

    pub fn set_tags(&self, tags: Option<BTreeMap<String, String>>) {
        self.state.lock().unwrap().tags = tags;
    }
}

async fn token(State(state): State<Arc<Mutex<ImdsState>>>, headers: HeaderMap) -> Response {
    let Some(ttl) = headers.get("x-aws-ec2-metadata-token-ttl-seconds").and_then(|v| v.to_str().ok()).map(str::to_string) else {
        return (StatusCode::BAD_REQUEST, "missing x-aws-ec2-metadata-token-ttl-seconds").into_response();
    };
    let t = format!("imds-token-{}", rand::random::<u64>());
    state.lock().unwrap().tokens.push(t.clone());
    ([("x-aws-ec2-metadata-token-ttl-seconds", ttl)], t).into_response()
}

async fn meta(State(state): State<Arc<Mutex<ImdsState>>>, Path(path): Path<String>, headers: HeaderMap) -> Response {
    let mut s = state.lock().unwrap();
    let token = headers.get("x-aws-ec2-metadata-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !s.tokens.iter().any(|t| t == token) {
        s.refused += 1;
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let path = path.trim_end_matches('/');
    if let Some(rest) = path.strip_prefix("tags/instance") {
        let Some(tags) = &s.tags else {
            return StatusCode::NOT_FOUND.into_response();
        };
        return match rest.strip_prefix('/') {
            None | Some("") => tags.keys().cloned().collect::<Vec<_>>().join("\n").into_response(),
            Some(key) => match tags.get(key) {
                Some(v) => v.clone().into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            },
        };
    }
    match s.values.get(path) {
        Some(v) => v.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
