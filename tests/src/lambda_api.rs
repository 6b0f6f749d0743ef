//! A local Lambda Runtime API (the custom-runtime protocol): the test queues
//! events, the function under test long-polls `next` and posts responses.

use crate::http::{serve, Served};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

#[derive(Default)]
pub struct Inner {
    queue: Mutex<VecDeque<(String, serde_json::Value)>>,
    /// (request id, "response" | "error", body)
    pub answers: Mutex<Vec<(String, String, String)>>,
    arrived: Notify,
    answered: Notify,
}

#[derive(Clone)]
pub struct RuntimeApi {
    pub inner: Arc<Inner>,
    served: Arc<Served>,
}

impl RuntimeApi {
    pub async fn start() -> anyhow::Result<Self> {
        let inner = Arc::new(Inner::default());
        let router = axum::Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(inner.clone());
        Ok(RuntimeApi { inner, served: Arc::new(serve("127.0.0.1:0", router).await?) })
    }

    /// `host:port`, as AWS_LAMBDA_RUNTIME_API holds it.
    pub fn address(&self) -> String {
        self.served.addr.to_string()
    }

    pub fn invoke(&self, request_id: &str, event: serde_json::Value) {
        self.inner.queue.lock().unwrap().push_back((request_id.to_string(), event));
        self.inner.arrived.notify_one();
    }

    /// Waits (bounded) until `n` invocations have been answered.
    pub async fn answers(&self, n: usize, limit: std::time::Duration) -> anyhow::Result<Vec<(String, String, String)>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.inner.answered.notified();
            {
                let a = self.inner.answers.lock().unwrap();
                if a.len() >= n {
                    return Ok(a.clone());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                anyhow::bail!("only {} of {n} invocations answered", self.inner.answers.lock().unwrap().len());
            }
        }
    }
}

async fn next(State(inner): State<Arc<Inner>>) -> Response {
    loop {
        let notified = inner.arrived.notified();
        if let Some((id, event)) = inner.queue.lock().unwrap().pop_front() {
            let deadline = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() + 60_000;
            let mut h = HeaderMap::new();
            h.insert("lambda-runtime-aws-request-id", id.parse().unwrap());
            h.insert("lambda-runtime-deadline-ms", deadline.to_string().parse().unwrap());
            h.insert("lambda-runtime-invoked-function-arn", "arn:aws:lambda:us-east-1:123456789012:function:k3s-asg-coordinator".parse().unwrap());
            h.insert("lambda-runtime-trace-id", "Root=1-00000000-000000000000000000000000".parse().unwrap());
            return (h, event.to_string()).into_response();
        }
        notified.await;
    }
}

fn record(inner: &Inner, id: String, kind: &str, body: String) -> Response {
    inner.answers.lock().unwrap().push((id, kind.to_string(), body));
    inner.answered.notify_waiters();
    (StatusCode::ACCEPTED, "{\"status\":\"OK\"}").into_response()
}

async fn response(State(inner): State<Arc<Inner>>, Path(id): Path<String>, body: String) -> Response {
    record(&inner, id, "response", body)
}

async fn error(State(inner): State<Arc<Inner>>, Path(id): Path<String>, body: String) -> Response {
    record(&inner, id, "error", body)
}

async fn init_error(State(inner): State<Arc<Inner>>, body: String) -> Response {
    record(&inner, "init".into(), "init-error", body)
}
