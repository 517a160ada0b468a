//! Integration tests of the vault: real files in temp dirs, real crypto.

mod crash;
mod keyring;
mod placeholders;
mod storage;
mod vault_ops;
