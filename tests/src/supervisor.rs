//! The supervisor port of a k3s server (`https://IP:6443`), served for each
//! fake control-plane instance with a certificate of the cluster CA. It answers
//! only while the instance's stub k3s unit is active, like the real one.

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_rustls::rustls;

/// A cluster's CA: what `/cacerts` returns and what signs each server's certificate.
pub struct ClusterCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub pem: String,
}

impl ClusterCa {
    pub fn generate(cluster: &str) -> anyhow::Result<ClusterCa> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("k3s-server-ca@{cluster}"));
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let pem = issuer.pem();
        Ok(ClusterCa { issuer, pem })
    }

    fn server_config(&self, ip: &str) -> anyhow::Result<rustls::ServerConfig> {
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec![ip.to_string(), "localhost".to_string()])?.signed_by(&key, &self.issuer)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let chain = vec![cert.der().clone(), self.issuer.der().clone()];
        let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| anyhow::anyhow!(e))?;
        Ok(rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)?)
    }
}

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
    active_marker: PathBuf,
    ca_pem: Arc<String>,
}

impl SupervisorDouble {
    pub async fn start(ca: &ClusterCa, ip: &str, port: u16, instance_root: PathBuf) -> anyhow::Result<Self> {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(ca.server_config(ip)?));
        let listener = tokio::net::TcpListener::bind((ip, port)).await.with_context(|| format!("bind {ip}:{port}"))?;
        let ctx = Ctx { active_marker: instance_root.join("run/k3s-stub/active-k3s"), ca_pem: Arc::new(ca.pem.clone()) };
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
    if ctx.active_marker.exists() {
        (StatusCode::OK, (*ctx.ca_pem).clone())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, String::new())
    }
}

async fn ping(State(ctx): State<Ctx>) -> impl IntoResponse {
    if ctx.active_marker.exists() {
        (StatusCode::OK, "pong")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "")
    }
}
