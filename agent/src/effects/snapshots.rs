//! etcd snapshots in S3: the newest one of a cluster's folder, for a recovery.
//!
//! The agent lists S3 itself: k3s's own `etcd-snapshot ls` asks the running local server,
//! and a server recovering from the loss of its whole control plane has none.

use crate::error::{Error, Result};
use async_trait::async_trait;
use std::time::SystemTime;

/// Where a cluster's snapshots are: the spec's `snapshots` with the region resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotStore {
    pub bucket: String,
    pub folder: String,
    pub region: String,
}

impl SnapshotStore {
    pub fn url(&self) -> String {
        format!("s3://{}/{}/", self.bucket, self.folder)
    }
}

/// A snapshot object: its name (the key below the folder, what k3s restores by) and age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    pub modified: SystemTime,
}

#[async_trait]
pub trait Snapshots: Send + Sync {
    /// The newest snapshot k3s wrote into `store` (scheduled or on-demand), if any, leaving out
    /// the names in `skip` (ones that failed to restore).
    async fn newest(&self, store: &SnapshotStore, skip: &[String]) -> Result<Option<Snapshot>>;
}

pub struct S3 {
    pub sdk: aws_config::SdkConfig,
}

/// k3s's snapshot names: `<name>-<node>-<unix time>`, scheduled (`etcd-snapshot-…`) or on-demand;
/// its `.metadata/` side objects and anything else in the folder are not snapshots.
pub fn is_snapshot_name(name: &str) -> bool {
    let name = name.strip_suffix(".zip").unwrap_or(name);
    !name.is_empty() && !name.contains('/') && name.rsplit_once('-').is_some_and(|(_, ts)| ts.len() >= 9 && ts.bytes().all(|b| b.is_ascii_digit()))
}

#[async_trait]
impl Snapshots for S3 {
    async fn newest(&self, store: &SnapshotStore, skip: &[String]) -> Result<Option<Snapshot>> {
        let mut conf = aws_sdk_s3::config::Builder::from(&self.sdk).region(aws_sdk_s3::config::Region::new(store.region.clone()));
        // A local endpoint (tests, S3-compatible stores) has no bucket subdomains.
        if std::env::var_os("AWS_ENDPOINT_URL").is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some() {
            conf = conf.force_path_style(true);
        }
        let s3 = aws_sdk_s3::Client::from_conf(conf.build());
        let prefix = format!("{}/", store.folder);
        let mut pages = s3.list_objects_v2().bucket(&store.bucket).prefix(&prefix).into_paginator().send();
        let mut newest: Option<Snapshot> = None;
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Error::sdk("list etcd snapshots (s3:ListBucket)", store.url(), e))?;
            for obj in page.contents() {
                let name = obj.key().unwrap_or_default().trim_start_matches(&prefix).to_string();
                let Some(modified) = obj.last_modified().and_then(|t| SystemTime::try_from(*t).ok()) else {
                    continue;
                };
                if is_snapshot_name(&name) && !skip.contains(&name) && newest.as_ref().is_none_or(|n| modified > n.modified) {
                    newest = Some(Snapshot { name, modified });
                }
            }
        }
        Ok(newest)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn snapshot_names() {
        assert!(super::is_snapshot_name("etcd-snapshot-i-0123456789abcdef0-1764400000"));
        assert!(super::is_snapshot_name("k3s-asg-final-i-0123456789abcdef0-1764400000"));
        assert!(!super::is_snapshot_name(".metadata/etcd-snapshot-i-0123-1764400000"));
        assert!(!super::is_snapshot_name("notes.txt"));
        assert!(super::is_snapshot_name("etcd-snapshot-ip-10-0-1-5-1764400000.zip"), "compressed");
    }
}
