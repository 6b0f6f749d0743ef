//! systemd, through `systemctl` found on PATH.

use crate::error::{Error, Result};
use async_trait::async_trait;
use std::path::PathBuf;
use tokio::process::Command;

#[async_trait]
pub trait Services: Send + Sync {
    async fn daemon_reload(&self) -> Result<()>;
    /// `systemctl start UNIT` (a no-op for a running unit). Not enabled: k3s is started by the
    /// agent only, after it has looked at its cluster, never by systemd at boot on a datastore
    /// its cluster may have left behind.
    async fn start(&self, unit: &str) -> Result<()>;
    async fn restart(&self, unit: &str) -> Result<()>;
    async fn is_active(&self, unit: &str) -> Result<bool>;
    async fn stop(&self, unit: &str) -> Result<()>;
}

/// Runs `systemctl`; `K3S_ASG_ROOT` is passed on so stand-ins used in tests see the root.
pub struct Systemctl {
    pub root: PathBuf,
}

impl Systemctl {
    async fn run(&self, args: &[&str]) -> Result<std::process::Output> {
        Command::new("systemctl")
            .args(args)
            .env("K3S_ASG_ROOT", &self.root)
            .output()
            .await
            .map_err(|e| Error::from_cause("run systemctl", args.join(" "), e))
    }

    async fn run_ok(&self, args: &[&str]) -> Result<()> {
        let out = self.run(args).await?;
        if !out.status.success() {
            return Err(Error::failed(
                "run systemctl",
                args.join(" "),
                format!("exit {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Services for Systemctl {
    async fn daemon_reload(&self) -> Result<()> {
        self.run_ok(&["daemon-reload"]).await
    }
    async fn start(&self, unit: &str) -> Result<()> {
        self.run_ok(&["start", unit]).await
    }
    async fn restart(&self, unit: &str) -> Result<()> {
        self.run_ok(&["restart", unit]).await
    }
    async fn is_active(&self, unit: &str) -> Result<bool> {
        Ok(self.run(&["is-active", "--quiet", unit]).await?.status.success())
    }
    async fn stop(&self, unit: &str) -> Result<()> {
        self.run_ok(&["stop", unit]).await
    }
}
