//! The moto server, installed by `scripts/setup-moto` into `.venv/`.

use anyhow::{bail, Context};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    pub port: u16,
    child: Child,
}

impl Moto {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn start() -> anyhow::Result<Moto> {
        let root = crate::repo_root();
        let bin = root.join(".venv/bin/moto_server");
        if !bin.exists() {
            let status = Command::new(root.join("scripts/setup-moto")).status().context("run scripts/setup-moto")?;
            if !status.success() {
                bail!("scripts/setup-moto failed");
            }
        }
        let port = crate::free_port();
        let log = std::fs::File::create(std::env::temp_dir().join(format!("k3s-asg-moto-{port}.log")))?;
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let moto = Moto { port, child };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}/moto-api/data.json", moto.url())).send().await {
                if r.status().is_success() {
                    return Ok(moto);
                }
            }
            if Instant::now() > deadline {
                bail!("moto server on port {port} did not answer within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Forgets every resource.
    pub async fn reset(&self) -> anyhow::Result<()> {
        reqwest::Client::new().post(format!("{}/moto-api/reset", self.url())).send().await?.error_for_status()?;
        Ok(())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
