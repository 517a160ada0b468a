//! Credential injection: the proxy's [`Intercept`] hook backed by the vault.
//!
//! A sandbox's processes hold placeholders (see [`crate::credentials`]).
//! For a TLS connection to a managed service's own host (one with a
//! credential for this sandbox), the proxy terminates TLS and this
//! hook, request by request:
//! - swaps each of *this sandbox's* placeholders for *that service* in the
//!   service's own authentication headers (the catalog's: `Authorization`,
//!   `x-api-key`, …), as a header word (`Bearer ph`, `token ph`, a bare
//!   `ph`) or inside HTTP Basic credentials (git's `x-access-token:ph`), for
//!   the real value; a placeholder in any other header stays (and is noted),
//!   so a header the service reflects never carries the credential;
//! - drops any header carrying a real-looking credential of that service
//!   the guest supplied itself (only placeholders are trusted to be ours);
//! - leaves other placeholders alone and notes them.
//!
//! A custom service (`moat secret set-custom`) has no placeholder in the
//! guest: the proxy sets its header from its template on every TLS request to
//! its hosts.
//!
//! Every answer from those hosts has the real values taken out again
//! ([`Intercept::redactions`]: each becomes the sandbox's placeholder).
//!
//! Nothing is ever injected on plain HTTP, into another host, or after a
//! redirect (each request is judged by its own host, and clients send the
//! placeholder again, unchanged). Plain-HTTP requests carrying a placeholder
//! are noted in the connection log.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use moat_netproxy::proxy::{Headers, Intercept, Redaction};
use moat_proto::egress::HomeFile;
use moat_secrets::{catalog, Scope, Vault};

/// The vault-backed hook.
#[derive(Debug)]
pub struct CredentialInjector {
    vault: Vault,
}

impl CredentialInjector {
    /// A hook reading `vault` (changes to it apply to the next request).
    pub fn new(vault: Vault) -> CredentialInjector {
        CredentialInjector { vault }
    }

    /// The service whose own host `host` is, if it has a credential for `sandbox`.
    fn managed(&self, sandbox: &str, host: &str) -> Option<Managed> {
        let service = match catalog::SERVICES.iter().find(|s| s.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))) {
            Some(s) => Managed::Builtin(s),
            None => Managed::Custom(
                self.vault
                    .custom_services()
                    .ok()?
                    .into_iter()
                    .find(|c| c.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)))?,
            ),
        };
        let id = service.id();
        let configured = self
            .vault
            .list()
            .ok()?
            .into_iter()
            .any(|e| e.service == id && (e.scope == Scope::Global || e.scope == Scope::Sandbox(sandbox.into())));
        configured.then_some(service)
    }

    /// A custom service's header, set to the real value whatever the guest sent.
    fn rewrite_custom(&self, sandbox: &str, service: &catalog::CustomService, headers: &mut Headers) -> Option<String> {
        let real = match self.vault.resolve(sandbox, &service.id) {
            Ok(Some(v)) => v,
            Ok(None) => return None,
            Err(e) => return Some(format!("{} credential unavailable: {e}", service.id)),
        };
        let value = service.template.replace("{}", real.expose());
        match headers.set(&service.header, value.as_bytes()) {
            Ok(()) => Some(format!("injected the {} credential", service.id)),
            Err(_) => Some(format!("the {} credential cannot be sent in a header", service.id)),
        }
    }
}

/// A service whose credential the proxy manages.
enum Managed {
    Builtin(&'static catalog::Service),
    Custom(catalog::CustomService),
}

impl Managed {
    fn id(&self) -> String {
        match self {
            Managed::Builtin(s) => s.id.to_string(),
            Managed::Custom(c) => c.id.clone(),
        }
    }
}

/// Config files agents read that carry this sandbox's placeholders: `gh`'s
/// hosts file when a GitHub credential exists for the sandbox at boot (the
/// placeholder is stable, so it stays valid if the credential changes later).
pub fn home_files(vault: &Vault, sandbox: &str) -> Vec<HomeFile> {
    let has = |service: &str| {
        vault.list().is_ok_and(|entries| {
            entries.iter().any(|e| {
                e.service == service && (e.scope == Scope::Global || e.scope == Scope::Sandbox(sandbox.into()))
            })
        })
    };
    let mut files = Vec::new();
    if has("github") {
        if let Ok(token) = vault.placeholder("github", sandbox) {
            files.push(HomeFile {
                path: ".config/gh/hosts.yml".into(),
                content: format!("github.com:\n    oauth_token: {token}\n    user: agent\n    git_protocol: https\n"),
            });
        }
    }
    files
}

/// What one header word turned out to be.
enum Word {
    Keep,
    Replace(String),
    Strip,
}

impl Intercept for CredentialInjector {
    /// Asked only for TLS connections (the proxy never intercepts anything
    /// else), so the port does not matter: the certificate check against the
    /// service's own name does.
    fn wants(&self, sandbox: &str, host: &str, _port: u16) -> bool {
        self.managed(sandbox, host).is_some()
    }

    fn rewrite(&self, sandbox: &str, host: &str, headers: &mut Headers) -> Option<String> {
        let service = match self.managed(sandbox, host)? {
            Managed::Builtin(s) => s,
            Managed::Custom(c) => return self.rewrite_custom(sandbox, &c, headers),
        };
        let mut notes = Vec::new();
        let mut real: Option<moat_secrets::Secret> = None;
        let mut classify = |word: &str, notes: &mut Vec<String>| -> Word {
            if let Some(owner) = self.vault.is_placeholder_for(word, sandbox) {
                if owner != service.id {
                    notes.push(format!("placeholder for {owner} sent to {host}; left as is"));
                    return Word::Keep;
                }
                if real.is_none() {
                    match self.vault.resolve(sandbox, service.id) {
                        Ok(Some(v)) => real = Some(v),
                        Ok(None) => return Word::Keep,
                        Err(e) => {
                            notes.push(format!("{} credential unavailable: {e}", service.id));
                            return Word::Keep;
                        }
                    }
                }
                return Word::Replace(real.as_ref().map(|s| s.expose().to_string()).unwrap_or_default());
            }
            if self.vault.looks_like_real_credential(service.id, word) {
                notes.push(format!("stripped a {} credential the sandbox supplied itself", service.id));
                return Word::Strip;
            }
            Word::Keep
        };
        let mut injected = false;
        let mut stripped = Vec::new();
        let mut edits = Vec::new();
        let mut elsewhere = Vec::new();
        for (name, value) in headers.iter() {
            let Ok(text) = std::str::from_utf8(value) else { continue };
            match rewrite_value(text, &mut |w| classify(w, &mut notes)) {
                Rewritten::Same => {}
                Rewritten::Strip => stripped.push(name.to_string()),
                Rewritten::New(v) if service.is_auth_header(name) => edits.push((name.to_string(), v)),
                Rewritten::New(_) => elsewhere.push(name.to_string()),
            }
        }
        for name in elsewhere {
            let verb = if service.headers.len() == 1 { "carries" } else { "carry" };
            notes.push(format!(
                "the {} placeholder in {name} left as is: only {} {verb} the credential",
                service.id,
                auth_header_names(service)
            ));
        }
        for (name, value) in edits {
            injected |= headers.set(&name, value.as_bytes()).is_ok();
        }
        for name in stripped {
            headers.remove(&name);
        }
        if injected {
            notes.insert(0, format!("injected the {} credential", service.id));
        }
        (!notes.is_empty()).then(|| notes.join("; "))
    }

    fn redactions(&self, sandbox: &str, host: &str) -> Vec<Redaction> {
        let Some(service) = self.managed(sandbox, host) else { return Vec::new() };
        let id = service.id();
        let (Ok(Some(real)), Ok(placeholder)) =
            (self.vault.resolve(sandbox, &id), self.vault.placeholder(&id, sandbox))
        else {
            return Vec::new();
        };
        vec![Redaction::new(real.expose().as_bytes().to_vec(), placeholder.into_bytes())]
    }

    fn inspect(&self, sandbox: &str, host: &str, headers: &Headers) -> Option<String> {
        for (_, value) in headers.iter() {
            let Ok(text) = std::str::from_utf8(value) else { continue };
            for word in words_and_basic(text) {
                if let Some(owner) = self.vault.is_placeholder_for(&word, sandbox) {
                    return Some(format!("placeholder for {owner} sent over plain HTTP to {host}; not replaced"));
                }
            }
        }
        None
    }
}

/// `Authorization` or `x-api-key and Authorization`, for notes.
fn auth_header_names(service: &catalog::Service) -> String {
    let names: Vec<&str> = service.headers.iter().map(|h| h.name).collect();
    names.join(" and ")
}

enum Rewritten {
    Same,
    Strip,
    New(String),
}

/// Applies `f` to every space-separated word of a header value, and to the
/// user and password of `Basic` credentials.
fn rewrite_value(value: &str, f: &mut dyn FnMut(&str) -> Word) -> Rewritten {
    let mut changed = false;
    let mut out: Vec<String> = Vec::new();
    let words: Vec<&str> = value.split(' ').collect();
    let basic = words.len() == 2 && words[0].eq_ignore_ascii_case("basic");
    for (i, word) in words.iter().enumerate() {
        if basic && i == 1 {
            match rewrite_basic(word, f) {
                Rewritten::Same => out.push(word.to_string()),
                Rewritten::Strip => return Rewritten::Strip,
                Rewritten::New(v) => {
                    changed = true;
                    out.push(v);
                }
            }
            continue;
        }
        match f(word) {
            Word::Keep => out.push(word.to_string()),
            Word::Strip => return Rewritten::Strip,
            Word::Replace(v) => {
                changed = true;
                out.push(v);
            }
        }
    }
    if changed {
        Rewritten::New(out.join(" "))
    } else {
        Rewritten::Same
    }
}

/// The credentials part of a `Basic` value, rewritten (still base64).
fn rewrite_basic(encoded: &str, f: &mut dyn FnMut(&str) -> Word) -> Rewritten {
    let Some(plain) = STANDARD.decode(encoded).ok().and_then(|b| String::from_utf8(b).ok()) else {
        return Rewritten::Same;
    };
    let Some((user, pass)) = plain.split_once(':') else { return Rewritten::Same };
    let mut parts = [user.to_string(), pass.to_string()];
    let mut changed = false;
    for part in parts.iter_mut() {
        match f(part) {
            Word::Keep => {}
            Word::Strip => return Rewritten::Strip,
            Word::Replace(v) => {
                *part = v;
                changed = true;
            }
        }
    }
    if changed {
        Rewritten::New(STANDARD.encode(format!("{}:{}", parts[0], parts[1])))
    } else {
        Rewritten::Same
    }
}

/// Every word of a header value, plus Basic credentials' user and password.
fn words_and_basic(value: &str) -> Vec<String> {
    let mut out: Vec<String> = value.split(' ').map(String::from).collect();
    if let [scheme, encoded] = out.as_slice() {
        if scheme.eq_ignore_ascii_case("basic") {
            if let Some((u, p)) = STANDARD
                .decode(encoded)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())))
            {
                out.push(u);
                out.push(p);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
