//! Errors of the vault's operations, one enum per operation.

use std::path::PathBuf;

use crate::command::CommandError;
use crate::format::DecodeError;
use crate::keystore::KeyError;

/// A service name that is neither built in nor a custom service.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown service `{name}`: known services are {known}; add it as a custom service (hosts + header template) first"
)]
pub struct UnknownService {
    pub name: String,
    pub known: String,
}

/// Reading the vault file failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the vault {path}: check it exists and is readable by you")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Opening the vault failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot create the vault directory {path}: check the parent's permissions")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// Changing the vault (`set`, `rm`, adding a custom service) failed; the
/// file is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    UnknownService(#[from] UnknownService),
    #[error("a custom service `{0}` can't shadow the built-in one: pick another name")]
    BuiltinName(String),
    #[error("cannot lock the vault via {path}: check the directory is writable")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("cannot write the vault {path} (it was left as it was): check disk space and permissions")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Resolving a credential failed.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    UnknownService(#[from] UnknownService),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the credential command for `{service}` failed")]
    Command {
        service: String,
        #[source]
        source: CommandError,
    },
}
