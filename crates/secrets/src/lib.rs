//! Moat's credential vault, whose values never enter a sandbox.
//!
//! Credentials live on the host, encrypted at rest (XChaCha20-Poly1305) with
//! a per-installation key from a [`KeyStore`]: [`SystemKeyStore`] keeps it in
//! the desktop keyring ([`SecretService`]) where one exists, else in a key
//! file only the user can read. A sandbox's guest only ever
//! sees [placeholders](Vault::placeholder) shaped like the real tokens; the
//! host proxy (another crate) recognises them and injects the real value
//! from [`Vault::resolve`]. The [`catalog`] says which hosts, headers and env
//! vars each service uses.
//!
//! Not here: the proxy-side header rewriting, the CLI.

mod atomic;
pub mod catalog;
mod command;
mod error;
mod format;
mod keyring;
mod keystore;
pub mod placeholder;
mod secret;
mod secret_service;
mod system;
#[cfg(feature = "test-utils")]
pub mod test_utils;
mod vault;

pub use catalog::{CustomService, Service, TokenFormat};
pub use command::CommandError;
pub use error::{LoadError, OpenError, ResolveError, UnknownService, WriteError};
pub use format::DecodeError;
pub use keyring::{Keyring, KeyringError, KEYRING_SERVICE};
pub use keystore::{FileKeyStore, KeyError, KeyStore, MasterKey};
pub use placeholder::Placeholders;
pub use secret::Secret;
pub use secret_service::SecretService;
pub use system::SystemKeyStore;
pub use vault::{Blocking, Entry, Scope, Source, ValueSource, Vault, VaultOptions};
