//! The server's datastore on this host (`/var/lib/rancher/k3s/server/db`: etcd's data and, by
//! default, k3s's local snapshots in `db/snapshots`). A server resets it when it must join a
//! cluster afresh (left behind by a recovery, demoted by a later election, a new cluster in a
//! recovery without a snapshot, its member removed on the way to a warm pool). It is never
//! deleted outright: as k3s's own reset instruction says, "back up and delete": the directory is
//! moved to `server/db-backups/<unix ms>` and the newest [`KEEP`] backups are kept, so a wrong
//! reset can be undone by hand and the local snapshots in it survive.

use crate::effects::Effects;
use crate::error::Result;
use crate::render;
use std::path::PathBuf;

/// Where reset datastores go, one directory each, named by the time of the reset.
pub const BACKUPS_PATH: &str = "/var/lib/rancher/k3s/server/db-backups";

/// What k3s writes when this server's etcd member was removed from the cluster (its Node
/// deleted): at its next start k3s moves the db aside and, with `cluster-init: true` and no
/// `server:`, starts a NEW cluster from the certificates on disk (same CA, same token): k3s-io/k3s
/// `pkg/etcd/etcd.go` (the tombstone file and its check at start).
pub const TOMBSTONE_PATH: &str = "/var/lib/rancher/k3s/server/db/etcd/tombstone";

/// etcd's member directory: present once this host's datastore holds a member (k3s's
/// `IsInitialized`).
pub const ETCD_MEMBER_PATH: &str = "/var/lib/rancher/k3s/server/db/etcd/member";

/// Whether this server's etcd member was removed from its cluster (k3s left a tombstone).
pub fn member_removed(fx: &Effects) -> bool {
    fx.fs.exists(TOMBSTONE_PATH)
}

/// Reset datastores kept (older ones are removed when a new one is moved aside).
pub const KEEP: usize = 3;

/// Moves the datastore aside (k3s must be stopped); `None` when there was none. `why` is logged.
pub fn back_up_and_reset(fx: &Effects, why: &str) -> Result<Option<PathBuf>> {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    let moved = fx.fs.move_aside(render::SERVER_DB_PATH, BACKUPS_PATH, &format!("{ms:015}"), KEEP)?;
    if let Some(to) = &moved {
        tracing::warn!(path = render::SERVER_DB_PATH, backup = %to.display(), keep = KEEP, reason = why, "reset k3s's datastore: moved it aside");
    }
    Ok(moved)
}
