//! The desktop keyring as a place for master keys: the small [`Keyring`]
//! trait (the Secret Service implements it; tests use fakes) and its error.

use std::fmt;

use crate::keystore::MasterKey;

/// The attribute `service` of every item Moat stores.
pub const KEYRING_SERVICE: &str = "moat";

/// A keyring holding one master key per installation, found by `account`
/// (the vault's absolute path, so two installations never share an item).
pub trait Keyring: fmt::Debug + Send + Sync {
    /// The key stored for `account`, or `None` if there is no such item.
    /// [`KeyringError::Unreachable`] means no keyring answered at all.
    fn find(&self, account: &str) -> Result<Option<MasterKey>, KeyringError>;

    /// Stores `key` for `account` in a new item called `label`.
    fn store(&self, account: &str, label: &str, key: &MasterKey) -> Result<(), KeyringError>;

    /// What this keyring is, for messages ("the Secret Service on unix:path=…").
    fn describe(&self) -> String;
}

/// The label of the item holding the key of the vault at `account`.
pub fn item_label(account: &str) -> String {
    format!("Moat credential vault key ({account})")
}

/// How users and `secret-tool` name the item of `account`.
pub fn item_name(account: &str) -> String {
    format!("service={KEYRING_SERVICE} account={account}")
}

/// A keyring operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("no Secret Service keyring answers: {reason}")]
    Unreachable {
        reason: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("the keyring is locked, and unlocking it was refused or timed out")]
    Locked,
    #[error("the keyring has no default collection to store the key in: create a default keyring (e.g. with Seahorse), then retry")]
    NoDefaultCollection,
    #[error("the keyring item {item} does not hold 64 hex digits: restore it from a backup")]
    BadSecret { item: String },
    #[error("{count} keyring items {item} hold different keys: delete the ones that don't belong to this vault")]
    Ambiguous { item: String, count: usize },
    #[error("the Secret Service failed to {action}")]
    Service {
        action: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl KeyringError {
    pub(crate) fn unreachable(reason: impl Into<String>) -> Self {
        KeyringError::Unreachable { reason: reason.into(), source: None }
    }
}
