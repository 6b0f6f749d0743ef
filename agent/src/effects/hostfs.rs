//! Host files, every path under `--root`. Writes are atomic (temp file + rename)
//! with the mode set before the content becomes visible.

use crate::error::{Error, Result};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct HostFs {
    root: PathBuf,
}

impl HostFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        HostFs { root: root.into() }
    }

    /// `/etc/x` → `{root}/etc/x`.
    pub fn path(&self, host_path: &str) -> PathBuf {
        self.root.join(host_path.trim_start_matches('/'))
    }

    pub fn read(&self, host_path: &str) -> Result<Option<String>> {
        let p = self.path(host_path);
        match std::fs::read_to_string(&p) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::from_cause("read file", p.display().to_string(), e)),
        }
    }

    /// Writes `content` with `mode` unless the file already holds exactly that;
    /// returns whether it wrote.
    pub fn write_if_changed(&self, host_path: &str, content: &str, mode: u32) -> Result<bool> {
        let p = self.path(host_path);
        if let Ok(meta) = std::fs::metadata(&p) {
            if meta.permissions().mode() & 0o7777 == mode && std::fs::read(&p).ok().as_deref() == Some(content.as_bytes()) {
                return Ok(false);
            }
        }
        write_atomic(&p, content.as_bytes(), mode).map_err(|e| Error::from_cause("write file", p.display().to_string(), e))?;
        Ok(true)
    }

    /// Removes a directory and everything in it; absent is fine.
    pub fn remove_dir(&self, host_path: &str) -> Result<()> {
        let p = self.path(host_path);
        match std::fs::remove_dir_all(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::from_cause("remove directory", p.display().to_string(), e)),
        }
    }

    /// Moves directory `host_path` to `{backups}/{name}` (never deleting it), then removes all but
    /// the `keep` newest entries of `backups` (names sort by age: callers name them by time).
    /// `None` when there was nothing to move. Idempotent: a second call finds nothing to move.
    pub fn move_aside(&self, host_path: &str, backups: &str, name: &str, keep: usize) -> Result<Option<PathBuf>> {
        let from = self.path(host_path);
        if !from.exists() {
            return Ok(None);
        }
        let dir = self.path(backups);
        std::fs::create_dir_all(&dir).map_err(|e| Error::from_cause("create directory", dir.display().to_string(), e))?;
        let to = dir.join(name);
        std::fs::rename(&from, &to).map_err(|e| Error::from_cause("move aside", format!("{} to {}", from.display(), to.display()), e))?;
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| Error::from_cause("list directory", dir.display().to_string(), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        let old = entries.len().saturating_sub(keep);
        for stale in &entries[..old] {
            std::fs::remove_dir_all(stale).map_err(|e| Error::from_cause("remove directory", stale.display().to_string(), e))?;
        }
        Ok(Some(to))
    }

    /// Removes a file; one already gone is fine.
    pub fn remove_file(&self, host_path: &str) -> Result<()> {
        let p = self.path(host_path);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::from_cause("remove file", p.display().to_string(), e)),
        }
    }

    pub fn exists(&self, host_path: &str) -> bool {
        self.path(host_path).exists()
    }
}

fn write_atomic(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().expect("host paths have a parent");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.k3s-asg-tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(content)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_with_mode() {
        let dir = tempfile::tempdir().unwrap();
        let fs = HostFs::new(dir.path());
        assert!(fs.write_if_changed("/etc/x/config.yaml", "a: 1\n", 0o600).unwrap());
        assert!(!fs.write_if_changed("/etc/x/config.yaml", "a: 1\n", 0o600).unwrap());
        let meta = std::fs::metadata(dir.path().join("etc/x/config.yaml")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(fs.write_if_changed("/etc/x/config.yaml", "a: 2\n", 0o600).unwrap());
        assert_eq!(fs.read("/etc/x/config.yaml").unwrap().as_deref(), Some("a: 2\n"));
        assert_eq!(fs.read("/nope").unwrap(), None);
    }

    #[test]
    fn move_aside_keeps_the_newest_backups() {
        let root = tempfile::tempdir().unwrap();
        let fs = HostFs::new(root.path());
        assert_eq!(fs.move_aside("/db", "/backups", "1", 2).unwrap(), None, "nothing to move");
        for n in ["1", "2", "3"] {
            fs.write_if_changed("/db/member", n, 0o600).unwrap();
            fs.move_aside("/db", "/backups", n, 2).unwrap().unwrap();
            assert!(!fs.exists("/db"));
        }
        assert!(!fs.exists("/backups/1"), "the oldest went");
        assert_eq!(fs.read("/backups/3/member").unwrap().as_deref(), Some("3"));
        assert_eq!(fs.read("/backups/2/member").unwrap().as_deref(), Some("2"));
    }
}
