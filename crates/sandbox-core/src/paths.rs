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
        // Host processes change to `/`: a relative root must not change meaning.
        Home { root: std::path::absolute(&root).unwrap_or(root) }
    }

    /// An installation rooted at `root`.
    pub fn at(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    /// Creates the root folder if needed and makes it private (mode 0700): the
    /// daemon socket and every VM's vsock socket inside grant root in a guest, so
    /// no other local user may reach them.
    pub fn ensure_private(&self) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.root)?;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
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

    /// The credential vault and its key (see `moat_secrets`).
    pub fn secrets_dir(&self) -> PathBuf {
        self.root.join("secrets")
    }

    /// The network policy: preset and user rules (see [`crate::egress`]).
    pub fn policy_database(&self) -> PathBuf {
        self.root.join("policy.db")
    }

    /// The connection log every sandbox's proxy writes (bounded).
    pub fn connection_log(&self) -> PathBuf {
        self.root.join("connections.db")
    }

    /// The installation's proxy CA (certificate and `0600` key).
    pub fn egress_ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }

    /// The folder of the sandbox with this id.
    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.root.join("sandboxes").join(id)
    }
}

pub use moat_images::tools::home_dir;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_home_is_private_even_if_it_existed_open() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("a/moat"));
        home.ensure_private().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(home.root()), 0o700);
        std::fs::set_permissions(home.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
        home.ensure_private().unwrap();
        assert_eq!(mode(home.root()), 0o700);
    }
}
