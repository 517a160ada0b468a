//! This installation's credential vault, and the placeholder environment a
//! sandbox gets instead of real credentials.
//!
//! Inside the guest, each configured service's env vars (e.g. `ANTHROPIC_API_KEY`)
//! hold a placeholder in the service's own token format, unique to the sandbox.
//! Real values never leave the host; the egress proxy's injector (`egress::inject`)
//! swaps them in on TLS to each service's own hosts.

use std::path::Path;

use moat_secrets::{catalog, KeyStore, LoadError, OpenError, Scope, Vault, VaultOptions};

use crate::paths::Home;

/// Opens (creating on first use) the vault at `$MOAT_HOME/secrets/`.
pub fn open_vault(home: &Home) -> Result<Vault, OpenError> {
    open_vault_in(&home.secrets_dir())
}

/// Opens (creating on first use) the vault in `secrets_dir`, keyed by
/// [`vault_keys`]. A value command it runs from inside the egress proxy's
/// event loop runs beside it ([`off_the_event_loop`]).
pub fn open_vault_in(secrets_dir: &Path) -> Result<Vault, OpenError> {
    let options = VaultOptions { blocking: off_the_event_loop, ..VaultOptions::default() };
    Vault::open_with(secrets_dir.join("vault"), vault_keys(secrets_dir).as_ref(), options)
}

/// Runs `work`, which blocks (a credential command, up to its timeout), so
/// that a multi-threaded tokio runtime it is called from keeps serving its
/// other tasks: `block_in_place` hands this worker's tasks to another
/// thread first. Elsewhere (no runtime, or a single-threaded one, where
/// that is impossible) it runs in place.
fn off_the_event_loop(work: &mut dyn FnMut()) {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
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

    #[test]
    fn a_credential_command_does_not_stall_the_event_loop_it_is_called_from() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        home.ensure_private().unwrap();
        let vault = std::sync::Arc::new(open_vault(&home).unwrap());
        let cmd = ValueSource::Command { cmd: "sleep 1; echo tok".into(), ttl: std::time::Duration::ZERO };
        vault.set(&Scope::Global, "github", cmd).unwrap();
        // One worker: if the command blocked it, nothing else would run.
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let ticks = runtime.block_on(async {
            let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let counter = std::sync::Arc::clone(&ticks);
            let ticker = tokio::spawn(async move {
                // Sleeps, not an interval: an interval would catch up on missed ticks.
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
            tokio::task::yield_now().await;
            let before = ticks.load(std::sync::atomic::Ordering::SeqCst);
            let resolved = tokio::spawn(async move { vault.resolve("s", "github").unwrap().unwrap() });
            assert_eq!(resolved.await.unwrap().expose(), "tok");
            ticker.abort();
            ticks.load(std::sync::atomic::Ordering::SeqCst) - before
        });
        assert!(ticks >= 10, "the event loop ticked {ticks} times in the command's second");
    }
}
