//! Crash-safe file replacement and the writers' lock.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// Replaces `path` with `bytes` so that a crash at any moment leaves either
/// the old or the new complete file: temp file in the same directory, fsync,
/// rename over, fsync the directory. The file gets mode 0600.
pub(crate) fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = parent(path);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut nonce = [0u8; 6];
    getrandom::getrandom(&mut nonce).map_err(std::io::Error::other)?;
    let suffix: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(".{name}.tmp.{}.{suffix}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes temp files that writers killed mid-write left beside `path`.
/// Call only under the [`WriteLock`], so no live writer's temp file goes.
pub(crate) fn remove_stale_temps(path: &Path) {
    let Some(name) = path.file_name() else { return };
    let prefix = format!(".{}.tmp.", name.to_string_lossy());
    let Ok(dir) = std::fs::read_dir(parent(path)) else { return };
    for entry in dir.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// fsyncs a directory so a rename or link in it is durable.
pub(crate) fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// An exclusive `flock` on a lock file beside the vault, held until dropped.
/// (The vault file itself is replaced by rename, so it can't carry the lock.)
#[derive(Debug)]
pub(crate) struct WriteLock(#[allow(dead_code)] Flock<File>);

impl WriteLock {
    pub(crate) fn acquire(lock_path: &Path) -> std::io::Result<Self> {
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(lock_path)?;
        Flock::lock(f, FlockArg::LockExclusive).map(WriteLock).map_err(|(_, errno)| std::io::Error::from(errno))
    }
}
