//! The environment a sandbox's processes start with: what the user gives
//! (`moat run|create -e KEY=VALUE`, `-e KEY`, `--env-file FILE`), checked, and
//! stored with the sandbox ([`crate::spec::SandboxSpec::env`]).
//!
//! [`vars`] is the one rule for a variable: a shell identifier, not one Moat
//! sets itself (the proxy and CA variables, the credential placeholders), a
//! bounded value that does not look like a credential. [`credential`] says
//! which values look like one: Moat judges the value, never the name alone,
//! and sends credentials to the vault instead ([`crate::credentials`]), where
//! the guest only ever sees a placeholder. [`file`] reads dotenv-style files;
//! [`args`] puts `-e` and `--env-file` together.
//!
//! Not here: applying it. Whoever starts a process in the sandbox adds the
//! stored variables to its exec request (`moat run` and `moat exec` do, under
//! the credential placeholders and an explicit `exec -e`).

pub mod args;
pub mod credential;
pub mod file;
pub mod vars;

pub use args::{collect, parse_assignment, CollectError};
pub use credential::{looks_like_credential, Credential};
pub use file::{parse_env_file, read_env_file, EnvFileError};
pub use vars::{check, check_name, check_var, Changes, EnvError, MAX_ENCODED, MAX_VARS};

/// Variables by name: what a create request carries and a sandbox keeps.
pub type Env = std::collections::BTreeMap<String, String>;
