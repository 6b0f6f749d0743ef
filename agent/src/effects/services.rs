//! systemd, through `systemctl` found on PATH.

use crate::error::{Error, Result};
use async_trait::async_trait;
use std::path::PathBuf;
use tokio::process::Command;

#[async_trait]
pub trait Services: Send + Sync {
    async fn daemon_reload(&self) -> Result<()>;
    /// `systemctl start UNIT --no-block` (a no-op for a running unit): queues the start and
    /// returns. k3s's units are `Type=notify` with `TimeoutStartSec=0`, so a blocking start waits
    /// for k3s's READY for ever (a server whose etcd cannot join never sends it); the caller
    /// polls [`Services::is_active`] and [`Services::is_failed`] under its own deadline. Not
    /// enabled: k3s is started by the agent only, after it has looked at its cluster, never by
    /// systemd at boot on a datastore its cluster may have left behind.
    async fn start(&self, unit: &str) -> Result<()>;
    /// `systemctl stop UNIT` (bounded by the unit's stop timeout), then `start UNIT --no-block`:
    /// a queued `restart --no-block` would leave the old process active for a moment, and a wait
    /// for the unit could take the old process for the new one.
    async fn restart(&self, unit: &str) -> Result<()>;
    async fn is_active(&self, unit: &str) -> Result<bool>;
    /// Whether systemd reports the unit failed (`systemctl is-failed`).
    async fn is_failed(&self, unit: &str) -> Result<bool>;
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
        self.run_ok(&["start", unit, "--no-block"]).await
    }
    async fn restart(&self, unit: &str) -> Result<()> {
        self.run_ok(&["stop", unit]).await?;
        self.run_ok(&["start", unit, "--no-block"]).await
    }
    async fn is_active(&self, unit: &str) -> Result<bool> {
        Ok(self.run(&["is-active", "--quiet", unit]).await?.status.success())
    }
    async fn is_failed(&self, unit: &str) -> Result<bool> {
        Ok(self.run(&["is-failed", "--quiet", unit]).await?.status.success())
    }
    async fn stop(&self, unit: &str) -> Result<()> {
        self.run_ok(&["stop", unit]).await
    }
}
