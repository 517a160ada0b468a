//! Helpers for tests in this and other crates: a real vault with its own
//! key in a temp dir.

use std::path::{Path, PathBuf};

use crate::{FileKeyStore, OpenError, Vault, VaultOptions};

/// A temp dir holding `moat/key` and `moat/vault`; removed on drop.
#[derive(Debug)]
pub struct TempVault {
    dir: tempfile::TempDir,
}

impl TempVault {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("create temp dir") }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("moat/key")
    }

    pub fn vault_path(&self) -> PathBuf {
        self.dir.path().join("moat/vault")
    }

    pub fn keys(&self) -> FileKeyStore {
        FileKeyStore::new(self.key_path())
    }

    /// Opens a new handle on the vault (each handle caches separately, as
    /// separate processes would).
    pub fn open(&self) -> Result<Vault, OpenError> {
        Vault::open(self.vault_path(), &self.keys())
    }

    /// [`TempVault::open`] with `options`.
    pub fn open_with(&self, options: VaultOptions) -> Result<Vault, OpenError> {
        Vault::open_with(self.vault_path(), &self.keys(), options)
    }
}

impl Default for TempVault {
    fn default() -> Self {
        Self::new()
    }
}
