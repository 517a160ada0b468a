//! The initramfs that boots the guest agent: `/init` is the agent binary;
//! the rest is the skeleton it mounts things on.

use super::cache::{CacheError, CacheOutcome, ImageCache};
use super::cpio::CpioWriter;
use super::hash::RecipeHash;
use super::progress::Silent;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Bump when the layout below changes.
const LAYOUT: &str = "initramfs/1: init, dev, dev/console, proc, sys, lower, state, newroot";
/// Mount points the agent uses before switching root.
const DIRS: &[&str] = &["dev", "proc", "sys", "lower", "state", "newroot"];

/// An initramfs for one agent binary.
#[derive(Debug, Clone)]
pub struct Initramfs {
    /// The cpio archive (uncompressed newc).
    pub path: PathBuf,
    /// Whether it came from the cache.
    pub outcome: CacheOutcome,
}

/// Building an initramfs failed.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// The agent binary could not be read.
    #[error("could not read the guest agent binary {}: build it first (`cargo build -p moat-guest-agent`)", path.display())]
    ReadAgent {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The archive could not be written.
    #[error("could not write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// Writes the initramfs for `agent` (the binary's bytes) to `out`.
pub fn write_initramfs<W: Write>(agent: &[u8], out: W) -> io::Result<W> {
    let mut cpio = CpioWriter::new(out);
    for dir in DIRS {
        cpio.dir(dir, 0o755)?;
    }
    cpio.char_device("dev/console", 0o600, 5, 1)?;
    cpio.file("init", 0o755, agent)?;
    cpio.finish()
}

/// The initramfs for `agent` in the default cache.
pub fn initramfs_for(agent: &Path) -> Result<PathBuf, InitramfsError> {
    Ok(ImageCache::open_default()?.initramfs(agent)?.path)
}

impl ImageCache {
    /// Returns the initramfs for the agent binary at `agent`, keyed by the
    /// binary's sha256.
    pub fn initramfs(&self, agent: &Path) -> Result<Initramfs, InitramfsError> {
        let bytes =
            fs::read(agent).map_err(|source| InitramfsError::ReadAgent { path: agent.to_path_buf(), source })?;
        let digest = RecipeHash::new("initramfs").field("layout", LAYOUT).field("agent", &bytes).finish();
        let (dir, outcome) = self.get_or_build(("initramfs", "agent"), &digest, &Silent, |dir| {
            let path = dir.join("initramfs.cpio");
            let write_err = |source| InitramfsError::Write { path: path.clone(), source };
            let file = File::create(&path).map_err(write_err)?;
            let mut out = write_initramfs(&bytes, BufWriter::new(file)).map_err(write_err)?;
            out.flush().map_err(write_err)?;
            Ok::<_, InitramfsError>(())
        })?;
        Ok(Initramfs { path: dir.join("initramfs.cpio"), outcome })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_by_agent_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ImageCache::open(tmp.path().join("cache")).unwrap();
        let agent = tmp.path().join("agent");
        fs::write(&agent, b"\x7fELF v1").unwrap();
        let first = cache.initramfs(&agent).unwrap();
        assert_eq!(first.outcome, CacheOutcome::Built);
        assert_eq!(cache.initramfs(&agent).unwrap().outcome, CacheOutcome::Hit);
        fs::write(&agent, b"\x7fELF v2").unwrap();
        let second = cache.initramfs(&agent).unwrap();
        assert_eq!(second.outcome, CacheOutcome::Built);
        assert_ne!(first.path, second.path);
        let bytes = fs::read(&second.path).unwrap();
        assert!(bytes.windows(7).any(|w| w == b"ELF v2\0") || bytes.windows(6).any(|w| w == b"ELF v2"));
    }
}
