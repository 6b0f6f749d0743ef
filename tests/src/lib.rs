//! The k3s-asg test bed: an emulated region in which fake instances run the
//! real agent binary.
//!
//! - [`moto::Moto`]: the moto server on a free loopback port, from `.venv/`.
//! - [`recorder::Recorder`]: an HTTP proxy between the SDK and moto that
//!   records every AWS call (service, operation, caller, time).
//! - [`imds::ImdsDouble`]: IMDSv2 per fake instance (token TTL header, 401
//!   without a token, settable tags / spot / lifecycle state).
//! - [`supervisor::SupervisorDouble`]: the k3s server's supervisor port
//!   (`/cacerts`, `/ping` over TLS with the host's own server CA, as soon as k3s starts)
//!   on each server's address.
//! - `stubs/`: `systemctl` and `k3s` stand-ins put first on PATH.
//! - [`world::World`]: ties them together: clusters, instances, agent runs.
//!
//! Every address used is on 127.0.0.0/8.

pub mod check;
pub mod http;
pub mod imds;
pub mod lambda_api;
pub mod lifecycle;
pub mod moto;
pub mod recorder;
pub mod reliability;
pub mod roll;
pub mod route53_batch;
pub mod storm;
pub mod supervisor;
pub mod world;

use std::path::PathBuf;

/// The repository's top directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the repo").to_path_buf()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().unwrap().port()
}

/// Drives all futures together on the current task and returns their outputs in order
/// (so a test can start several agents at the same moment).
pub async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut set: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().map(|r| r.expect("every future finished")).collect()
}
