//! The supervisor port of a k3s server (`https://IP:6443`), served for each fake
//! control-plane instance with the certificate that host's stub k3s wrote
//! (`server/tls/serving-kube-apiserver.crt`, signed by the host's own server CA: a cluster-init
//! makes a new CA, a joiner takes the cluster's, a restore the snapshot's:
//! tests/stubs/k3s_etcd.py). Like the real one, it answers `/cacerts` (that CA) and `/ping` as
//! soon as k3s is starting (the unit activating), before its etcd is ready or has a quorum:
//! k3s-io/k3s `pkg/cluster/https.go` starts the listener before the datastore.

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::sign::CertifiedKey;

const TLS: &str = "var/lib/rancher/k3s/server/tls";

pub struct SupervisorDouble {
    task: JoinHandle<()>,
}

impl Drop for SupervisorDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Ctx {
    stub: PathBuf,
    tls: PathBuf,
}

impl Ctx {
    /// k3s runs (its unit active, or activating: starting, waiting for etcd).
    fn running(&self) -> bool {
        self.stub.join("active-k3s").exists() || self.stub.join("activating-k3s").exists()
    }
}

/// The host's serving certificate, read from its disk at each handshake (k3s rewrites it when
/// its CA changes: a restore, a reset); none before k3s first wrote one.
#[derive(Debug)]
struct HostCert {
    tls: PathBuf,
    cache: Mutex<Option<(Vec<u8>, Arc<CertifiedKey>)>>,
}

impl HostCert {
    fn load(&self) -> Option<Arc<CertifiedKey>> {
        let leaf = std::fs::read(self.tls.join("serving-kube-apiserver.crt")).ok()?;
        let ca = std::fs::read(self.tls.join("server-ca.crt")).ok()?;
        let key = std::fs::read(self.tls.join("serving-kube-apiserver.key")).ok()?;
        let id = [leaf.as_slice(), ca.as_slice(), key.as_slice()].concat();
        let mut cache = self.cache.lock().unwrap();
        if let Some((seen, ck)) = cache.as_ref() {
            if *seen == id {
                return Some(ck.clone());
            }
        }
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&leaf).chain(CertificateDer::pem_slice_iter(&ca)).collect::<Result<_, _>>().ok()?;
        let key = PrivateKeyDer::from_pem_slice(&key).ok()?;
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let ck = Arc::new(CertifiedKey::new(chain, provider.key_provider.load_private_key(key).ok()?));
        *cache = Some((id, ck.clone()));
        Some(ck)
    }
}

impl rustls::server::ResolvesServerCert for HostCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.load()
    }
}

impl SupervisorDouble {
    pub async fn start(ip: &str, port: u16, instance_root: PathBuf) -> anyhow::Result<Self> {
        let tls = instance_root.join(TLS);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(HostCert { tls: tls.clone(), cache: Mutex::new(None) }));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind((ip, port)).await.with_context(|| format!("bind {ip}:{port}"))?;
        let ctx = Ctx { stub: instance_root.join("run/k3s-stub"), tls };
        let router = axum::Router::new().route("/cacerts", get(cacerts)).route("/ping", get(ping)).with_state(ctx);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let router = router.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper_util::service::TowerToHyperService::new(router);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tls), svc).await;
                });
            }
        });
        Ok(SupervisorDouble { task })
    }
}

async fn cacerts(State(ctx): State<Ctx>) -> impl IntoResponse {
    match std::fs::read_to_string(ctx.tls.join("server-ca.crt")) {
        Ok(ca) if ctx.running() => (StatusCode::OK, ca),
        _ => (StatusCode::SERVICE_UNAVAILABLE, String::new()),
    }
}

async fn ping(State(ctx): State<Ctx>) -> impl IntoResponse {
    if ctx.running() {
        (StatusCode::OK, "pong")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "")
    }
}
