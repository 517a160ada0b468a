//! Where the installation's master key lives: the [`KeyStore`] trait and its
//! file implementation. (The desktop keyring is in `keyring`; choosing
//! between the two is `system`.)

use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::keyring::KeyringError;

/// The per-installation random key. Sub-keys for encryption and
/// placeholders are derived from it; it never leaves the host.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut k = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(k.as_mut())?;
        Ok(Self(k))
    }

    /// A key from raw bytes (tests, keyring implementations).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The key as 64 lowercase hex digits, as stored in key files and keyrings.
    pub(crate) fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(self.0.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Parses 64 hex digits (surrounding whitespace allowed).
    pub(crate) fn from_hex(text: &str) -> Option<Self> {
        let hex = text.trim();
        if hex.len() != 64 {
            return None;
        }
        let mut key = Zeroizing::new([0u8; 32]);
        for (i, b) in key.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(key))
    }

    /// HMAC-SHA256 of `label` under this key: a derived sub-key.
    pub(crate) fn derive(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.as_ref()).expect("any key length");
        mac.update(label);
        Zeroizing::new(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(…redacted…)")
    }
}

/// Failure to load or create the master key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or create the vault key file {path}: check the directory's permissions")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the vault key file {path} is not 64 hex digits: restore it from a backup, or move it away to start a new (empty) vault")]
    BadFormat { path: PathBuf },
    #[error("the vault key file {path} has mode {mode:o}: it must be readable only by you (chmod 600)")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("the system random number generator failed: {0}")]
    Random(getrandom::Error),
    #[error("cannot lock {path} to create the vault key: check the directory's permissions")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the vault key is not in a key file, so it is in the desktop keyring (item {item}), which can't be reached from here: \
         run moat in your desktop session, or start and unlock the keyring in this one (moat won't make a new key: that would orphan the vault)"
    )]
    KeyringUnreachable {
        item: String,
        #[source]
        source: KeyringError,
    },
    #[error("the desktop keyring holding the vault key (item {item}) is locked: unlock it in your desktop session (e.g. with Seahorse or KWallet), then retry")]
    KeyringLocked { item: String },
    #[error(
        "the vault key is gone from the desktop keyring (no item {item}, though {marker} says it was stored there): \
         restore the item from a backup of your keyring, or move {vault} and {marker} away to start a new (empty) vault"
    )]
    KeyringItemMissing { item: String, marker: PathBuf, vault: PathBuf },
    #[error(
        "the vault {vault} exists but its key does not: no key file {key_file}, and no item {item} in the desktop keyring; \
         restore one of them from a backup, or move {vault} away to start a new (empty) vault"
    )]
    KeyMissing { vault: PathBuf, key_file: PathBuf, item: String },
    #[error("the desktop keyring failed while reading or storing the vault key (item {item})")]
    Keyring {
        item: String,
        #[source]
        source: KeyringError,
    },
}

/// Somewhere a master key can be loaded from, created on first use.
pub trait KeyStore: fmt::Debug + Send + Sync {
    /// Returns the key, creating and storing a new one if there is none.
    fn load_or_create(&self) -> Result<MasterKey, KeyError>;
    /// Where the key lives, for error messages ("key file /x/y").
    fn location(&self) -> String;
}

/// A key in a file of 64 hex digits, mode 0600 in a 0700 directory.
#[derive(Debug, Clone)]
pub struct FileKeyStore {
    path: PathBuf,
}

impl FileKeyStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> KeyError {
        KeyError::Io { path: self.path.clone(), source }
    }

    fn read(&self) -> Result<MasterKey, KeyError> {
        let meta = fs::metadata(&self.path).map_err(|e| self.io(e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions { path: self.path.clone(), mode });
        }
        let text = Zeroizing::new(fs::read_to_string(&self.path).map_err(|e| self.io(e))?);
        MasterKey::from_hex(&text).ok_or_else(|| KeyError::BadFormat { path: self.path.clone() })
    }

    /// Writes a new key to a temp file and hard-links it into place, so a
    /// concurrent creator either wins or reads the complete winner.
    fn create(&self) -> Result<(), KeyError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir).map_err(|e| self.io(e))?;
        let key = MasterKey::generate().map_err(KeyError::Random)?;
        let hex = Zeroizing::new(format!("{}\n", key.to_hex().as_str()));
        let tmp = dir.join(format!(".key.tmp.{}", std::process::id()));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| self.io(e))?;
        f.write_all(hex.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| self.io(e))?;
        let linked = fs::hard_link(&tmp, &self.path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => crate::atomic::fsync_dir(dir).map_err(|e| self.io(e)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(self.io(e)),
        }
    }
}

impl KeyStore for FileKeyStore {
    fn load_or_create(&self) -> Result<MasterKey, KeyError> {
        if !self.path.exists() {
            self.create()?;
        }
        self.read()
    }

    fn location(&self) -> String {
        format!("key file {}", self.path.display())
    }
}

/// Creates `dir` (and parents) with mode 0700 if missing.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_with_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileKeyStore::new(tmp.path().join("moat/key"));
        let a = store.load_or_create().unwrap();
        let b = store.load_or_create().unwrap();
        assert_eq!(*a.derive(b"x"), *b.derive(b"x"));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(store.path()), 0o600);
        assert_eq!(mode(&tmp.path().join("moat")), 0o700);
        assert_eq!(format!("{a:?}"), "MasterKey(…redacted…)");
    }

    #[test]
    fn group_readable_key_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileKeyStore::new(tmp.path().join("key"));
        store.load_or_create().unwrap();
        fs::set_permissions(store.path(), fs::Permissions::from_mode(0o644)).unwrap();
        let err = store.load_or_create().unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
