//! Where Moat keeps its state on the host.
//!
//! One root, `$MOAT_HOME`, else `$XDG_DATA_HOME/moat`, else `~/.local/share/moat`:
//!
//! ```text
//! moat.db              sandbox records (SQLite)
//! daemon.sock          the daemon's HTTP/JSON API
//! daemon.log           the daemon's log
//! sandboxes/<id>/      one folder per sandbox: state disk, VM config, sockets, logs
//! ```
//!
//! Sandbox folders use short ids, not names, because Unix socket paths are limited
//! to 107 bytes and the vsock backend appends a port to its socket's path.

use std::path::{Path, PathBuf};

/// The folders of one Moat installation.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// The installation named by the environment (see the module docs).
    pub fn from_env() -> Home {
        let root = if let Some(h) = std::env::var_os("MOAT_HOME").filter(|v| !v.is_empty()) {
            PathBuf::from(h)
        } else if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            PathBuf::from(x).join("moat")
        } else {
            home_dir().join(".local/share/moat")
        };
        Home { root }
    }

    /// An installation rooted at `root`.
    pub fn at(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The SQLite database.
    pub fn database(&self) -> PathBuf {
        self.root.join("moat.db")
    }

    /// The daemon's API socket.
    pub fn daemon_socket(&self) -> PathBuf {
        self.root.join("daemon.sock")
    }

    /// The daemon's log file.
    pub fn daemon_log(&self) -> PathBuf {
        self.root.join("daemon.log")
    }

    /// The folder of the sandbox with this id.
    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.root.join("sandboxes").join(id)
    }
}

/// The user's home folder (`$HOME`, else `/root`).
pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME").filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"))
}
