//! This installation's credential vault, and the placeholder environment a
//! sandbox gets instead of real credentials.
//!
//! Inside the guest, each configured service's env vars (e.g. `ANTHROPIC_API_KEY`)
//! hold a placeholder in the service's own token format, unique to the sandbox.
//! Real values never leave the host; the egress proxy's injector (`egress::inject`)
//! swaps them in on TLS to each service's own hosts.

use std::path::Path;

use moat_secrets::{catalog, KeyStore, LoadError, OpenError, Scope, Vault};

use crate::paths::Home;

/// Opens (creating on first use) the vault at `$MOAT_HOME/secrets/`.
pub fn open_vault(home: &Home) -> Result<Vault, OpenError> {
    open_vault_in(&home.secrets_dir())
}

/// Opens (creating on first use) the vault in `secrets_dir`, keyed by
/// [`vault_keys`].
pub fn open_vault_in(secrets_dir: &Path) -> Result<Vault, OpenError> {
    Vault::open(secrets_dir.join("vault"), vault_keys(secrets_dir).as_ref())
}

/// Where the key of the vault in `secrets_dir` lives: its `key` file if
/// that exists, else the session's desktop keyring if one answers, else a
/// new `key` file (see [`SystemKeyStore`]).
#[cfg(not(test))]
pub fn vault_keys(secrets_dir: &Path) -> Box<dyn KeyStore> {
    Box::new(moat_secrets::SystemKeyStore::new(secrets_dir.join("vault"), secrets_dir.join("key")))
}

/// Unit tests open throwaway vaults: no items in the developer's keyring.
#[cfg(test)]
pub fn vault_keys(secrets_dir: &Path) -> Box<dyn KeyStore> {
    Box::new(moat_secrets::FileKeyStore::new(secrets_dir.join("key")))
}

/// `NAME=placeholder` for every env var of every built-in service that has a
/// credential for `sandbox` (its own or a global one).
pub fn placeholder_env(vault: &Vault, sandbox: &str) -> Result<Vec<(String, String)>, LoadError> {
    let mut env = Vec::new();
    let mut services: Vec<String> = vault
        .list()?
        .into_iter()
        .filter(|e| matches!(&e.scope, Scope::Global) || e.scope == Scope::Sandbox(sandbox.to_string()))
        .map(|e| e.service)
        .collect();
    services.sort();
    services.dedup();
    for id in services {
        let (Some(service), Ok(value)) = (catalog::service(&id), vault.placeholder(&id, sandbox)) else { continue };
        for var in service.env_vars {
            env.push((var.to_string(), value.clone()));
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_secrets::{Secret, ValueSource};

    #[test]
    fn sandboxes_get_format_true_placeholders_never_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        home.ensure_private().unwrap();
        let vault = open_vault(&home).unwrap();
        let real = format!("ghp_{}", "R".repeat(36));
        vault.set(&Scope::Global, "github", ValueSource::Literal(Secret::new(real.clone()))).unwrap();
        vault
            .set(&Scope::Sandbox("b".into()), "anthropic", ValueSource::Literal(Secret::new("sk-ant-api03-x")))
            .unwrap();

        let a = placeholder_env(&vault, "a").unwrap();
        let b = placeholder_env(&vault, "b").unwrap();
        assert!(a.iter().all(|(_, v)| !v.contains(&real)));
        assert!(a.iter().any(|(k, v)| k == "GH_TOKEN" && v.starts_with("github_pat_")), "{a:?}");
        assert!(!a.iter().any(|(k, _)| k == "ANTHROPIC_API_KEY"), "b's credential is not a's");
        assert!(b.iter().any(|(k, v)| k == "ANTHROPIC_API_KEY" && v.starts_with("sk-ant-")), "{b:?}");
        let gh = |env: &[(String, String)]| env.iter().find(|(k, _)| k == "GH_TOKEN").unwrap().1.clone();
        assert_ne!(gh(&a), gh(&b), "placeholders are per sandbox");
    }
}
