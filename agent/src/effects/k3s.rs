//! k3s itself, through `k3s kubectl` found on PATH.

use super::snapshots::SnapshotStore;
use crate::error::{Error, Result};
use crate::secret::Secret;
use async_trait::async_trait;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;

/// How long one `k3s kubectl` call may take (a drain: its own `--timeout` and this). kubectl's
/// own `--request-timeout` is unset (no limit) by default, and an API server whose etcd has lost
/// quorum may not answer: every call is bounded here, and killed when it runs over.
pub const KUBECTL_LIMIT: Duration = Duration::from_secs(60);

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
    /// Every Node object's name.
    async fn nodes(&self) -> Result<Vec<String>>;
    /// Deletes the Node object; absent is fine.
    async fn delete_node(&self, node: &str, kubeconfig: Option<&Path>) -> Result<()>;
    /// `k3s server --cluster-reset --cluster-reset-restore-path=NAME`, with k3s stopped: restores
    /// snapshot `name` from S3 (config.yaml's etcd-s3 keys say where; its token decrypts it) into
    /// this server's datastore as a one-member cluster. k3s exits when done; one that has not
    /// within `limit` is killed and the restore fails.
    async fn restore_snapshot(&self, name: &str, limit: Duration) -> Result<()>;
    /// `k3s server --cluster-reset`, with k3s stopped: this server's own etcd data becomes a
    /// one-member cluster, its token and CA unchanged (k3s's answer to a lost quorum). Killed,
    /// and an error, past `limit`.
    async fn cluster_reset(&self, limit: Duration) -> Result<()>;
    /// `k3s etcd-snapshot save --name NAME --s3 …` through the running local server; waits for
    /// the upload, at most `limit`.
    async fn save_snapshot(&self, name: &str, store: &SnapshotStore, limit: Duration) -> Result<()>;
}

pub struct K3sCli {
    pub root: PathBuf,
}

impl K3sCli {
    async fn kubectl(&self, args: &[&str]) -> Result<std::process::Output> {
        self.kubectl_within(args, KUBECTL_LIMIT).await
    }

    async fn kubectl_within(&self, args: &[&str], limit: Duration) -> Result<std::process::Output> {
        let mut all = vec!["kubectl"];
        all.extend_from_slice(args);
        self.k3s(&all, limit).await
    }

    /// Runs `k3s ARGS` with a minimal environment ([`k3s_env`]), killed (and an error) when it
    /// has not finished within `limit`.
    async fn k3s(&self, args: &[&str], limit: Duration) -> Result<std::process::Output> {
        let run = Command::new("k3s").args(args).env_clear().envs(k3s_env(std::env::vars())).env("K3S_ASG_ROOT", &self.root).kill_on_drop(true).output();
        match tokio::time::timeout(limit, run).await {
            Ok(out) => out.map_err(|e| Error::from_cause("run k3s", args.join(" "), e)),
            Err(_) => Err(Error::failed("run k3s", args.join(" "), format!("no answer within {} s; killed it", limit.as_secs()))),
        }
    }
}

impl K3sCli {
    /// Runs `k3s ARGS` to its end: a run that fails, or does not finish within `limit`, is an
    /// error of `step` on `resource` with k3s's last line.
    async fn k3s_ok(&self, args: &[&str], limit: Duration, step: &'static str, resource: &str) -> Result<()> {
        let out = self.k3s(args, limit).await.map_err(|e| Error::failed(step, resource, e.detail))?;
        if !out.status.success() {
            return Err(Error::failed(step, resource, last_line(&out)));
        }
        Ok(())
    }
}

/// The environment a `k3s` subcommand runs with: the agent's own minus everything else. k3s
/// reads its S3 credentials from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`
/// (k3s-io/k3s `pkg/cli/cmds/etcd_snapshot.go`, `server.go`), and `K3S_*` variables as flags
/// (`K3S_TOKEN`, `K3S_URL`, …): none of the agent's may leak into it, so it uses the instance
/// role as the k3s unit does. Kept: `PATH`, `HOME` (kubectl's cache), the locale and time zone,
/// and the test bed's own hooks (`K3S_STUB_*`, which no production host sets).
pub fn k3s_env(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    vars.filter(|(k, _)| matches!(k.as_str(), "PATH" | "HOME" | "LANG" | "LC_ALL" | "TZ") || k.starts_with("K3S_STUB_")).collect()
}

/// k3s's last stderr line: what went wrong, without its whole log.
fn last_line(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output").trim().to_string()
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
        let out = self.kubectl_within(&refs, Duration::from_secs(timeout_s) + KUBECTL_LIMIT).await?;
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

    async fn nodes(&self) -> Result<Vec<String>> {
        let out = self.kubectl(&["get", "nodes", "-o", "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}"]).await?;
        if !out.status.success() {
            return Err(Error::failed("list nodes", "", last_line(&out)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect())
    }

    async fn restore_snapshot(&self, name: &str, limit: Duration) -> Result<()> {
        let path = format!("--cluster-reset-restore-path={name}");
        self.k3s_ok(&["server", "--cluster-reset", &path], limit, "restore etcd snapshot (k3s server --cluster-reset)", name).await
    }

    async fn cluster_reset(&self, limit: Duration) -> Result<()> {
        self.k3s_ok(&["server", "--cluster-reset"], limit, "reset etcd membership (k3s server --cluster-reset)", "").await
    }

    async fn save_snapshot(&self, name: &str, store: &SnapshotStore, limit: Duration) -> Result<()> {
        let name_arg = format!("--name={name}");
        let args =
            ["etcd-snapshot", "save", &name_arg, "--s3", "--s3-bucket", &store.bucket, "--s3-folder", &store.folder, "--s3-region", &store.region];
        let out = self.k3s(&args, limit).await?;
        if !out.status.success() {
            return Err(Error::failed("save etcd snapshot (k3s etcd-snapshot save)", store.url(), last_line(&out)));
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

    #[test]
    fn k3s_runs_without_the_agents_credentials_or_flags() {
        let vars = [
            ("PATH", "/usr/bin"),
            ("HOME", "/root"),
            ("AWS_ACCESS_KEY_ID", "AKIA…"),
            ("AWS_SECRET_ACCESS_KEY", "…"),
            ("AWS_SESSION_TOKEN", "…"),
            ("AWS_PROFILE", "admin"),
            ("K3S_TOKEN", "K10…"),
            ("K3S_ASG_PREFIX", "/k3s-asg"),
            ("K3S_STUB_HOSTS", "/tmp/hosts"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let kept: Vec<String> = super::k3s_env(vars.into_iter()).into_iter().map(|(k, _)| k).collect();
        assert_eq!(kept, vec!["PATH", "HOME", "K3S_STUB_HOSTS"]);
    }
}
