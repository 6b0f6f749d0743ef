//! k3s's embedded etcd as etcd itself sees it: who the members are, which of them vote, which
//! are healthy. Read from etcd's own client endpoint (`https://IP:2379`, k3s's
//! `listen-client-urls`) with the client certificate k3s's own components use
//! (`server/tls/etcd/{server-ca.crt,client.crt,client.key}`, k3s-io/k3s
//! `pkg/daemons/control/deps/deps.go`), through etcd's JSON gateway
//! (`POST /v3/cluster/member/list`, `GET /health`).
//!
//! Why not k3s's `/db/info` on the supervisor port: it answers with k3s's own member list only
//! while k3s serves it (when listing fails it returns just this server, `pkg/etcd/etcd.go`
//! `infoHandler`), needs the server token, and says nothing of health; etcd's endpoint answers
//! the member list even without a quorum (etcd 3.4/3.5 serve `MemberList` from the local
//! member's view), tells learners apart, and `/health` is false on a member without a leader.
//! A learner refuses `MemberList` ("rpc not supported for learner"): ask a voter next.

use crate::error::{Error, Result};
use async_trait::async_trait;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Where k3s keeps the etcd client certificates, below `--data-dir` (`/var/lib/rancher/k3s`).
pub const TLS_DIR: &str = "/var/lib/rancher/k3s/server/tls/etcd";
/// etcd's client port on a k3s server.
pub const CLIENT_PORT: u16 = 2379;

/// One etcd member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// k3s names members `NODE-NAME-<8 hex>` (pkg/etcd/etcd.go `setName`); empty for a member
    /// added but not started yet.
    pub name: String,
    pub client_urls: Vec<String>,
    pub learner: bool,
    /// `/health` on its client URL said true (it has a leader and no alarm).
    pub healthy: bool,
}

impl Member {
    /// The node (instance id) this member belongs to: its name without k3s's random suffix.
    pub fn node(&self) -> &str {
        match self.name.rsplit_once('-') {
            Some((node, suffix)) if suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_hexdigit()) => node,
            _ => &self.name,
        }
    }
}

#[async_trait]
pub trait Etcd: Send + Sync {
    /// The members as the first of `addresses` (server IPs) whose etcd lists them, each with
    /// its health; `None` when no etcd of them answers.
    async fn members(&self, addresses: &[String]) -> Result<Option<Vec<Member>>>;
}

pub struct EtcdClient {
    /// The host's root (`/`, or the test bed's); the certificates are under it.
    pub root: PathBuf,
    pub port: u16,
}

#[derive(Deserialize)]
struct MemberList {
    #[serde(default)]
    members: Vec<RawMember>,
}

#[derive(Deserialize)]
struct RawMember {
    #[serde(default)]
    name: String,
    #[serde(default, rename = "clientURLs")]
    client_urls: Vec<String>,
    #[serde(default, rename = "isLearner")]
    is_learner: bool,
}

#[derive(Deserialize)]
struct Health {
    health: String,
}

impl EtcdClient {
    fn client(&self) -> Result<reqwest::Client> {
        let dir = self.root.join(TLS_DIR.trim_start_matches('/'));
        let read =
            |f: &str| std::fs::read(dir.join(f)).map_err(|e| Error::from_cause("read etcd client certificate", dir.join(f).display().to_string(), e));
        let ca = read("server-ca.crt")?;
        let mut identity = read("client.crt")?;
        identity.extend_from_slice(b"\n");
        identity.extend(read("client.key")?);
        let certs = reqwest::Certificate::from_pem_bundle(&ca)
            .map_err(|e| Error::failed("read etcd CA", dir.join("server-ca.crt").display().to_string(), e.to_string()))?;
        let identity = reqwest::Identity::from_pem(&identity)
            .map_err(|e| Error::failed("read etcd client certificate", dir.display().to_string(), e.to_string()))?;
        reqwest::Client::builder()
            .tls_certs_only(certs)
            .identity(identity)
            .timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| Error::failed("build etcd client", dir.display().to_string(), e.to_string()))
    }
}

async fn healthy(client: &reqwest::Client, url: &str) -> bool {
    match client.get(format!("{}/health", url.trim_end_matches('/'))).send().await {
        Ok(r) => r.json::<Health>().await.is_ok_and(|h| h.health == "true"),
        Err(_) => false,
    }
}

#[async_trait]
impl Etcd for EtcdClient {
    async fn members(&self, addresses: &[String]) -> Result<Option<Vec<Member>>> {
        let client = self.client()?;
        for ip in addresses {
            let url = format!("https://{ip}:{}/v3/cluster/member/list", self.port);
            let listed = match client.post(&url).body("{}").send().await {
                Ok(r) if r.status().is_success() => r.json::<MemberList>().await,
                Ok(r) => {
                    tracing::debug!(endpoint = %url, status = %r.status(), "etcd did not list its members (a learner does not)");
                    continue;
                }
                Err(e) => {
                    tracing::debug!(endpoint = %url, error = %e, "etcd did not answer");
                    continue;
                }
            };
            let Ok(list) = listed else { continue };
            let mut out = Vec::new();
            for m in list.members {
                let healthy = match m.client_urls.first() {
                    Some(u) => healthy(&client, u).await,
                    None => false,
                };
                out.push(Member { name: m.name, client_urls: m.client_urls, learner: m.is_learner, healthy });
            }
            return Ok(Some(out));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_carry_the_node() {
        let m = |name: &str| Member { name: name.into(), client_urls: vec![], learner: false, healthy: true };
        assert_eq!(m("i-0123456789abcdef0-1a2b3c4d").node(), "i-0123456789abcdef0");
        assert_eq!(m("i-0123456789abcdef0").node(), "i-0123456789abcdef0");
        assert_eq!(m("server-a-nothex!").node(), "server-a-nothex!");
        assert_eq!(m("").node(), "");
    }

    #[test]
    fn parses_etcds_member_list() {
        let body = r#"{"header":{"cluster_id":"1"},"members":[{"ID":"1","name":"i-a-0000000a","peerURLs":["https://10.0.0.1:2380"],"clientURLs":["https://10.0.0.1:2379"]},{"ID":"2","peerURLs":["https://10.0.0.2:2380"],"isLearner":true}]}"#;
        let list: MemberList = serde_json::from_str(body).unwrap();
        assert_eq!(list.members.len(), 2);
        assert!(!list.members[0].is_learner && list.members[1].is_learner);
        assert_eq!(list.members[1].name, "");
        assert_eq!(list.members[0].client_urls, vec!["https://10.0.0.1:2379"]);
    }
}
