//! [`SystemKeyStore`]: the vault key in the desktop keyring where one
//! exists, else in a key file only the user can read, without ever losing
//! or silently moving a key.
//!
//! The rules, in order, each time a vault opens:
//! 1. An existing key file is used, keyring or not (keys never move by themselves).
//! 2. A key in the keyring is used (even without a marker).
//! 3. If the vault was keyed before (the marker beside the key file says the
//!    key went to the keyring, or the vault file exists), nothing new is
//!    made: a missing item or an unreachable keyring is an error saying so.
//! 4. A new installation puts a new key in the keyring if one answers (no
//!    key file, just the marker), else in the key file.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::atomic::{self, WriteLock};
use crate::keyring::{item_label, item_name, Keyring, KeyringError};
use crate::keystore::{FileKeyStore, KeyError, KeyStore, MasterKey};
use crate::secret_service::SecretService;

/// The key store Moat uses for a vault; see the module docs for the rules.
#[derive(Debug)]
pub struct SystemKeyStore {
    vault: PathBuf,
    file: FileKeyStore,
    keyring: Box<dyn Keyring>,
    /// Where the key was found or made, once [`KeyStore::load_or_create`] ran.
    chosen: OnceLock<String>,
}

impl SystemKeyStore {
    /// The key of the vault at `vault`: in `key_file`, or in this session's
    /// Secret Service (`$DBUS_SESSION_BUS_ADDRESS`).
    pub fn new(vault: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        Self::with_keyring(vault, key_file, Box::new(SecretService::session()))
    }

    /// The same with another keyring (a Secret Service on another bus, a fake).
    pub fn with_keyring(vault: impl Into<PathBuf>, key_file: impl Into<PathBuf>, keyring: Box<dyn Keyring>) -> Self {
        Self { vault: vault.into(), file: FileKeyStore::new(key_file), keyring, chosen: OnceLock::new() }
    }

    /// The keyring account of this vault: its absolute path, with symlinks
    /// in the directory resolved, so each installation has its own item.
    pub fn account(&self) -> String {
        let dir = self.vault.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let dir = fs::canonicalize(dir).or_else(|_| std::path::absolute(dir)).unwrap_or_else(|_| dir.to_path_buf());
        match self.vault.file_name() {
            Some(name) => dir.join(name).display().to_string(),
            None => dir.display().to_string(),
        }
    }

    /// The file saying "this vault's key is in the keyring" (it holds no key).
    pub fn marker(&self) -> PathBuf {
        let mut name = self.file.path().file_name().unwrap_or_default().to_os_string();
        name.push(".in-keyring");
        self.file.path().with_file_name(name)
    }

    fn dir(&self) -> &Path {
        self.file.path().parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
    }

    fn use_file(&self) -> Result<MasterKey, KeyError> {
        let key = self.file.load_or_create()?;
        let _ = self.chosen.set(self.file.location());
        Ok(key)
    }

    fn use_keyring_key(&self, key: MasterKey, account: &str) -> Result<MasterKey, KeyError> {
        let _ = self.chosen.set(format!("{} (item {})", self.keyring.describe(), item_name(account)));
        Ok(key)
    }

    /// Records that the key of `account` is in the keyring.
    fn write_marker(&self, account: &str) -> std::io::Result<()> {
        let text = format!(
            "The key of the Moat vault {account} is in your desktop keyring (Secret Service item {}).\n\
             While this file exists, Moat will not make a new key for the vault.\n",
            item_name(account)
        );
        atomic::replace(&self.marker(), text.as_bytes())
    }

    /// Rules 2–4, under the lock so two first opens don't make two keys.
    fn decide(&self) -> Result<MasterKey, KeyError> {
        let account = self.account();
        let item = item_name(&account);
        let keyed_before = self.marker().exists() || self.vault.exists();
        match self.keyring.find(&account) {
            Ok(Some(key)) => {
                if !self.marker().exists() {
                    let _ = self.write_marker(&account);
                }
                self.use_keyring_key(key, &account)
            }
            Ok(None) if !keyed_before => {
                let key = MasterKey::generate().map_err(KeyError::Random)?;
                self.keyring.store(&account, &item_label(&account), &key).map_err(|source| match source {
                    KeyringError::Locked => KeyError::KeyringLocked { item: item.clone() },
                    source => KeyError::Keyring { item: item.clone(), source },
                })?;
                self.write_marker(&account).map_err(|source| KeyError::Io { path: self.marker(), source })?;
                self.use_keyring_key(key, &account)
            }
            Ok(None) if self.marker().exists() => {
                Err(KeyError::KeyringItemMissing { item, marker: self.marker(), vault: self.vault.clone() })
            }
            Ok(None) => {
                Err(KeyError::KeyMissing { vault: self.vault.clone(), key_file: self.file.path().into(), item })
            }
            Err(KeyringError::Unreachable { .. }) if !keyed_before => self.use_file(),
            Err(source @ KeyringError::Unreachable { .. }) => Err(KeyError::KeyringUnreachable { item, source }),
            Err(KeyringError::Locked) => Err(KeyError::KeyringLocked { item }),
            Err(source) => Err(KeyError::Keyring { item, source }),
        }
    }
}

impl KeyStore for SystemKeyStore {
    fn load_or_create(&self) -> Result<MasterKey, KeyError> {
        if self.file.path().exists() {
            return self.use_file();
        }
        crate::keystore::create_private_dir(self.dir())
            .map_err(|source| KeyError::Io { path: self.dir().into(), source })?;
        let lock_path = self.dir().join(".key.lock");
        let _lock =
            WriteLock::acquire(&lock_path).map_err(|source| KeyError::Lock { path: lock_path.clone(), source })?;
        if self.file.path().exists() {
            return self.use_file();
        }
        self.decide()
    }

    fn location(&self) -> String {
        match self.chosen.get() {
            Some(chosen) => chosen.clone(),
            None => format!("{}, or {}", self.file.location(), self.keyring.describe()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A keyring in memory that can be made unreachable or locked.
    #[derive(Debug, Default)]
    struct FakeKeyring {
        items: Mutex<HashMap<String, String>>,
        state: Mutex<Option<fn() -> KeyringError>>,
    }

    impl FakeKeyring {
        fn fail_with(&self, error: Option<fn() -> KeyringError>) {
            *self.state.lock().unwrap() = error;
        }

        fn failure(&self) -> Result<(), KeyringError> {
            self.state.lock().unwrap().map_or(Ok(()), |e| Err(e()))
        }

        fn accounts(&self) -> Vec<String> {
            self.items.lock().unwrap().keys().cloned().collect()
        }
    }

    impl Keyring for Arc<FakeKeyring> {
        fn find(&self, account: &str) -> Result<Option<MasterKey>, KeyringError> {
            self.failure()?;
            Ok(self.items.lock().unwrap().get(account).and_then(|hex| MasterKey::from_hex(hex)))
        }

        fn store(&self, account: &str, _label: &str, key: &MasterKey) -> Result<(), KeyringError> {
            self.failure()?;
            self.items.lock().unwrap().insert(account.to_string(), key.to_hex().to_string());
            Ok(())
        }

        fn describe(&self) -> String {
            "the fake keyring".into()
        }
    }

    fn unreachable() -> KeyringError {
        KeyringError::unreachable("no bus")
    }

    struct Setup {
        dir: tempfile::TempDir,
        keyring: Arc<FakeKeyring>,
    }

    impl Setup {
        fn new() -> Self {
            Self { dir: tempfile::tempdir().unwrap(), keyring: Arc::default() }
        }

        fn store(&self) -> SystemKeyStore {
            let dir = self.dir.path().join("secrets");
            SystemKeyStore::with_keyring(dir.join("vault"), dir.join("key"), Box::new(Arc::clone(&self.keyring)))
        }

        fn key_file(&self) -> PathBuf {
            self.dir.path().join("secrets/key")
        }
    }

    fn same(a: &MasterKey, b: &MasterKey) -> bool {
        a.to_hex() == b.to_hex()
    }

    #[test]
    fn a_new_installation_keys_into_the_keyring_and_writes_no_key_file() {
        let t = Setup::new();
        let store = t.store();
        let first = store.load_or_create().unwrap();
        assert!(!t.key_file().exists());
        assert!(store.marker().exists());
        assert_eq!(t.keyring.accounts(), [store.account()]);
        assert!(store.location().starts_with("the fake keyring (item service=moat account=/"), "{}", store.location());
        assert!(same(&first, &t.store().load_or_create().unwrap()));
    }

    #[test]
    fn an_existing_key_file_wins_over_a_reachable_keyring() {
        let t = Setup::new();
        let file = FileKeyStore::new(t.key_file());
        let key = file.load_or_create().unwrap();
        let store = t.store();
        assert!(same(&key, &store.load_or_create().unwrap()));
        assert!(t.keyring.accounts().is_empty(), "the key was not moved");
        assert!(!store.marker().exists());
        assert_eq!(store.location(), file.location());
    }

    #[test]
    fn a_key_in_the_keyring_is_used_without_marker_or_file() {
        let t = Setup::new();
        let key = t.store().load_or_create().unwrap();
        fs::remove_file(t.store().marker()).unwrap();
        assert!(same(&key, &t.store().load_or_create().unwrap()));
        assert!(t.store().marker().exists(), "the marker is restored");
        assert!(!t.key_file().exists());
    }

    #[test]
    fn without_a_keyring_a_new_installation_gets_a_key_file() {
        let t = Setup::new();
        t.keyring.fail_with(Some(unreachable));
        let store = t.store();
        let key = store.load_or_create().unwrap();
        assert!(t.key_file().exists());
        assert!(!store.marker().exists());
        assert!(store.location().starts_with("key file "), "{}", store.location());
        t.keyring.fail_with(None);
        assert!(same(&key, &t.store().load_or_create().unwrap()), "the file stays in use");
        assert!(t.keyring.accounts().is_empty());
    }

    #[test]
    fn an_unreachable_keyring_holding_the_key_is_an_error_not_a_new_key() {
        let t = Setup::new();
        t.store().load_or_create().unwrap();
        t.keyring.fail_with(Some(unreachable));
        let err = t.store().load_or_create().unwrap_err();
        assert!(matches!(err, KeyError::KeyringUnreachable { .. }), "{err:?}");
        assert!(err.to_string().contains("run moat in your desktop session"), "{err}");
        assert!(!t.key_file().exists(), "no new key file");
    }

    #[test]
    fn a_vault_whose_keyring_is_unreachable_gets_no_new_key_even_without_marker() {
        let t = Setup::new();
        fs::create_dir_all(t.key_file().parent().unwrap()).unwrap();
        fs::write(t.dir.path().join("secrets/vault"), "sealed").unwrap();
        t.keyring.fail_with(Some(unreachable));
        let err = t.store().load_or_create().unwrap_err();
        assert!(matches!(err, KeyError::KeyringUnreachable { .. }), "{err:?}");
        assert!(!t.key_file().exists());
    }

    #[test]
    fn a_deleted_keyring_item_is_reported_and_not_replaced() {
        let t = Setup::new();
        t.store().load_or_create().unwrap();
        t.keyring.items.lock().unwrap().clear();
        let err = t.store().load_or_create().unwrap_err();
        assert!(matches!(err, KeyError::KeyringItemMissing { .. }), "{err:?}");
        assert!(err.to_string().contains("restore the item"), "{err}");
        assert!(t.keyring.accounts().is_empty() && !t.key_file().exists(), "no new key anywhere");
    }

    #[test]
    fn a_vault_without_any_key_is_reported_and_not_rekeyed() {
        let t = Setup::new();
        fs::create_dir_all(t.key_file().parent().unwrap()).unwrap();
        fs::write(t.dir.path().join("secrets/vault"), "sealed").unwrap();
        let err = t.store().load_or_create().unwrap_err();
        assert!(matches!(err, KeyError::KeyMissing { .. }), "{err:?}");
        assert!(t.keyring.accounts().is_empty() && !t.key_file().exists());
    }

    #[test]
    fn a_locked_keyring_is_reported_and_nothing_is_created() {
        let t = Setup::new();
        t.keyring.fail_with(Some(|| KeyringError::Locked));
        let err = t.store().load_or_create().unwrap_err();
        assert!(err.to_string().contains("is locked: unlock it"), "{err}");
        assert!(!t.key_file().exists() && !t.store().marker().exists());
    }

    #[test]
    fn each_installation_has_its_own_account_whatever_the_path_spelling() {
        let t = Setup::new();
        let other = tempfile::tempdir().unwrap();
        let a = t.store();
        a.load_or_create().unwrap();
        let b = SystemKeyStore::with_keyring(
            other.path().join("vault"),
            other.path().join("key"),
            Box::new(Arc::clone(&t.keyring)),
        );
        b.load_or_create().unwrap();
        assert_ne!(a.account(), b.account());
        assert_eq!(t.keyring.accounts().len(), 2);
        let link = other.path().join("link");
        std::os::unix::fs::symlink(t.dir.path().join("secrets"), &link).unwrap();
        let via_link =
            SystemKeyStore::with_keyring(link.join("vault"), link.join("key"), Box::new(Arc::clone(&t.keyring)));
        assert_eq!(via_link.account(), a.account());
    }
}
