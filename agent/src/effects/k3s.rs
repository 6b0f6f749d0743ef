//! k3s itself, through `k3s kubectl` found on PATH.

use crate::error::{Error, Result};
use crate::secret::Secret;
use async_trait::async_trait;
use std::path::{Path, PathBuf};
use tokio::process::Command;

#[async_trait]
pub trait K3s: Send + Sync {
    /// Whether the Node object `node` reports Ready. `kubeconfig` is needed where
    /// there is no local API server (worker nodes).
    async fn node_ready(&self, node: &str, kubeconfig: Option<&Path>) -> Result<bool>;
    /// The bearer token of the service account `account` (kube-system), once k3s has created it.
    async fn account_token(&self, account: &str) -> Result<Option<Secret>>;
    /// `kubectl drain` (which cordons first); `Err` with kubectl's message when it fails.
    async fn drain(&self, node: &str, kubeconfig: Option<&Path>, timeout_s: u64, grace_period_s: u64) -> Result<()>;
    /// Control-plane Node objects: `(name, Ready)`.
    async fn control_plane_nodes(&self) -> Result<Vec<(String, bool)>>;
    /// Deletes the Node object; absent is fine.
    async fn delete_node(&self, node: &str, kubeconfig: Option<&Path>) -> Result<()>;
}

pub struct K3sCli {
    pub root: PathBuf,
}

impl K3sCli {
    async fn kubectl(&self, args: &[&str]) -> Result<std::process::Output> {
        Command::new("k3s")
            .arg("kubectl")
            .args(args)
            .env("K3S_ASG_ROOT", &self.root)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| Error::from_cause("run k3s kubectl", args.join(" "), e))
    }
}

#[async_trait]
impl K3s for K3sCli {
    async fn node_ready(&self, node: &str, kubeconfig: Option<&Path>) -> Result<bool> {
        let kc = kubeconfig.map(|p| p.to_string_lossy().into_owned());
        let mut args: Vec<&str> = Vec::new();
        if let Some(kc) = kc.as_deref() {
            args.extend(["--kubeconfig", kc]);
        }
        let node_ref = format!("node/{node}");
        args.extend(["get", &node_ref, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]);
        let out = self.kubectl(&args).await?;
        Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "True")
    }

    async fn account_token(&self, account: &str) -> Result<Option<Secret>> {
        let out = self.kubectl(&["-n", "kube-system", "get", "secret", account, "-o", "jsonpath={.data.token}"]).await?;
        let b64 = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || b64.is_empty() {
            return Ok(None);
        }
        let decoded = base64_decode(&b64).ok_or_else(|| Error::failed("read service account token", account, "token is not base64"))?;
        Ok(Some(Secret::new(decoded)))
    }

    async fn drain(&self, node: &str, kubeconfig: Option<&Path>, timeout_s: u64, grace_period_s: u64) -> Result<()> {
        let mut args = kubeconfig_args(kubeconfig);
        args.extend([
            "drain".to_string(),
            node.to_string(),
            "--ignore-daemonsets".to_string(),
            "--delete-emptydir-data".to_string(),
            "--force".to_string(),
            format!("--grace-period={grace_period_s}"),
            format!("--timeout={timeout_s}s"),
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.kubectl(&refs).await?;
        if !out.status.success() {
            return Err(Error::failed("drain node", node, String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        Ok(())
    }

    async fn control_plane_nodes(&self) -> Result<Vec<(String, bool)>> {
        let out = self
            .kubectl(&[
                "get",
                "nodes",
                "-l",
                "node-role.kubernetes.io/control-plane=true",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
            ])
            .await?;
        if !out.status.success() {
            return Err(Error::failed("list control-plane nodes", "", String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        Ok(parse_node_readiness(&String::from_utf8_lossy(&out.stdout)))
    }

    async fn delete_node(&self, node: &str, kubeconfig: Option<&Path>) -> Result<()> {
        let mut args = kubeconfig_args(kubeconfig);
        args.extend(["delete".to_string(), format!("node/{node}"), "--ignore-not-found".to_string(), "--wait=false".to_string()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.kubectl(&refs).await?;
        if !out.status.success() {
            return Err(Error::failed("delete node", node, String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        Ok(())
    }
}

fn kubeconfig_args(kubeconfig: Option<&Path>) -> Vec<String> {
    kubeconfig.map(|p| vec!["--kubeconfig".to_string(), p.to_string_lossy().into_owned()]).unwrap_or_default()
}

/// Parses kubectl's `name Ready-status` lines.
fn parse_node_readiness(text: &str) -> Vec<(String, bool)> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next()?;
            Some((name.to_string(), parts.next() == Some("True")))
        })
        .collect()
}

fn base64_decode(s: &str) -> Option<String> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = T.iter().position(|t| *t == c)? as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64() {
        assert_eq!(super::base64_decode("aGVsbG8gd29ybGQ=").as_deref(), Some("hello world"));
        assert_eq!(super::base64_decode("!!").as_deref(), None);
    }

    #[test]
    fn node_readiness() {
        let parsed = super::parse_node_readiness("i-1 True\ni-2 False\n\ni-3\n");
        assert_eq!(parsed, vec![("i-1".to_string(), true), ("i-2".to_string(), false), ("i-3".to_string(), false)]);
    }
}
