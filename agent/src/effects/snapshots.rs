//! etcd snapshots in S3: the newest one of a cluster's folder, for a recovery.
//!
//! The agent lists S3 itself: k3s's own `etcd-snapshot ls` asks the running local server,
//! and a server recovering from the loss of its whole control plane has none. A snapshot is
//! the cluster's own only if k3s's metadata on the object names the cluster token's hash
//! (`X-Amz-Meta-K3s-Token-Hash`, k3s-io/k3s `pkg/etcd/s3/s3.go`): a folder shared by mistake,
//! or an old cluster's leftovers, are skipped and named. k3s leaves the hash empty on uploads
//! made during a cluster reset; such a snapshot is taken (it restores only with this token).

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

/// The newest snapshot of the cluster, and the newer ones that belong to another cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Newest {
    pub snapshot: Option<Snapshot>,
    /// Snapshots newer than `snapshot` whose token hash is another cluster's, newest first.
    pub foreign: Vec<String>,
}

#[async_trait]
pub trait Snapshots: Send + Sync {
    /// The newest snapshot k3s wrote into `store` (scheduled or on-demand) for the cluster whose
    /// token hash is `token_hash` (the token module's `short_hash`), if any, leaving out the names
    /// in `skip` (ones that failed to restore).
    async fn newest(&self, store: &SnapshotStore, skip: &[String], token_hash: &str) -> Result<Newest>;
}

/// k3s's user metadata key for the token hash, as S3's SDK returns it (lower case, no prefix).
pub const TOKEN_HASH_KEY: &str = "k3s-token-hash";

/// Whether a snapshot whose metadata holds `found` belongs to the cluster of `token_hash` (every
/// snapshot does when the cluster's token, and so its hash, is unknown).
pub fn ours(found: Option<&str>, token_hash: &str) -> bool {
    if token_hash.is_empty() {
        return true;
    }
    match found.map(str::trim) {
        None | Some("") => true,
        Some(h) => h.eq_ignore_ascii_case(token_hash),
    }
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
    async fn newest(&self, store: &SnapshotStore, skip: &[String], token_hash: &str) -> Result<Newest> {
        let mut conf = aws_sdk_s3::config::Builder::from(&self.sdk).region(aws_sdk_s3::config::Region::new(store.region.clone()));
        // A local endpoint (tests, S3-compatible stores) has no bucket subdomains.
        if std::env::var_os("AWS_ENDPOINT_URL").is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some() {
            conf = conf.force_path_style(true);
        }
        let s3 = aws_sdk_s3::Client::from_conf(conf.build());
        let prefix = format!("{}/", store.folder);
        let mut pages = s3.list_objects_v2().bucket(&store.bucket).prefix(&prefix).into_paginator().send();
        let mut found: Vec<Snapshot> = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Error::sdk("list etcd snapshots (s3:ListBucket)", store.url(), e))?;
            for obj in page.contents() {
                let name = obj.key().unwrap_or_default().trim_start_matches(&prefix).to_string();
                let Some(modified) = obj.last_modified().and_then(|t| SystemTime::try_from(*t).ok()) else {
                    continue;
                };
                if is_snapshot_name(&name) && !skip.contains(&name) {
                    found.push(Snapshot { name, modified });
                }
            }
        }
        found.sort_by(|a, b| b.modified.cmp(&a.modified).then_with(|| b.name.cmp(&a.name)));
        // Newest first: the first whose metadata is this cluster's (one HeadObject each).
        let mut newest = Newest::default();
        for snap in found {
            let key = format!("{prefix}{}", snap.name);
            let head = s3
                .head_object()
                .bucket(&store.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| Error::sdk("read an etcd snapshot's metadata (s3:GetObject)", format!("s3://{}/{key}", store.bucket), e))?;
            let hash = head.metadata().and_then(|m| m.get(TOKEN_HASH_KEY)).map(String::as_str);
            if ours(hash, token_hash) {
                newest.snapshot = Some(snap);
                break;
            }
            tracing::warn!(
                snapshot = %snap.name,
                found = hash.unwrap_or_default(),
                ours = token_hash,
                "skipping a snapshot of another cluster: its k3s token hash is not this cluster's"
            );
            newest.foreign.push(snap.name);
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

    #[test]
    fn a_snapshot_is_ours_by_its_token_hash_or_when_k3s_left_none() {
        assert!(super::ours(Some("0123456789ab"), "0123456789ab"));
        assert!(super::ours(Some("0123456789AB"), "0123456789ab"));
        assert!(!super::ours(Some("ba9876543210"), "0123456789ab"), "another cluster's");
        assert!(super::ours(None, "0123456789ab"), "no metadata: uploaded during a cluster reset");
        assert!(super::ours(Some(""), "0123456789ab"));
        assert!(super::ours(Some("ba9876543210"), ""), "no token to compare with: no filter");
    }
}
