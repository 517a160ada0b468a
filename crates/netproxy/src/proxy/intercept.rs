//! The interception hook: what credential injection (issue #5) plugs into.
//!
//! TLS is terminated only for connections the hook [`Intercept::wants`];
//! everything else is tunnelled untouched, so certificate-pinned clients keep
//! working. On an intercepted connection the proxy calls
//! [`Intercept::rewrite`] for every request whose `Host` matches the TLS
//! name (other requests are refused). Plain-HTTP requests are never
//! rewritten — the guest's network could be read or spoofed — but the hook
//! sees them through [`Intercept::inspect`], so it can note a placeholder
//! sent somewhere it does not belong. A tunnelled (not intercepted) TLS
//! connection is opaque: no hook runs.
//!
//! What the hook swapped in must not come back: for every intercepted
//! request the proxy asks [`Intercept::redactions`] which values to take out
//! of the answer (headers, reason phrase and body, wherever the value is
//! split), asks the service for an unencoded body so it can, and refuses
//! `TRACE`/`TRACK` (which echo the request) before the hook runs.

use std::fmt;

/// Decides which connections are intercepted and edits their requests.
pub trait Intercept: Send + Sync {
    /// True if TLS from `sandbox` to `host:port` (the SNI, lowercase) must
    /// be terminated so [`Intercept::rewrite`] sees its requests.
    fn wants(&self, sandbox: &str, host: &str, port: u16) -> bool;

    /// Edits an intercepted request to `host` before it is forwarded, e.g.
    /// swaps a placeholder for the real credential or strips a credential
    /// the guest should not have. Returns a note for the connection log.
    fn rewrite(&self, sandbox: &str, host: &str, headers: &mut Headers) -> Option<String>;

    /// Looks at a plain-HTTP request (never rewritten) and returns a note for
    /// the log, e.g. "placeholder for service X sent to host Y".
    fn inspect(&self, sandbox: &str, host: &str, headers: &Headers) -> Option<String> {
        let _ = (sandbox, host, headers);
        None
    }

    /// The values that must never reach `sandbox` from `host`'s answers
    /// (the real credentials the hook may send there), each with what
    /// replaces it. Asked for every intercepted request.
    fn redactions(&self, sandbox: &str, host: &str) -> Vec<Redaction> {
        let _ = (sandbox, host);
        Vec::new()
    }
}

/// A value taken out of responses and what replaces it. `Debug` prints lengths only.
#[derive(Clone, PartialEq, Eq)]
pub struct Redaction {
    pub(crate) secret: Vec<u8>,
    pub(crate) replacement: Vec<u8>,
}

impl Redaction {
    /// Replace `secret` with `replacement` (e.g. the real credential with the sandbox's placeholder).
    pub fn new(secret: Vec<u8>, replacement: Vec<u8>) -> Redaction {
        Redaction { secret, replacement }
    }
}

impl fmt::Debug for Redaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redaction")
            .field("secret_len", &self.secret.len())
            .field("replacement_len", &self.replacement.len())
            .finish()
    }
}

/// A request's end-to-end headers, in the order and spelling the client
/// sent them. `Host`, `Content-Length`, `Transfer-Encoding` and hop-by-hop
/// headers are not included: the proxy writes those itself, so a hook cannot
/// change where a request goes or how its body is framed. `Debug` prints
/// names only, never values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, Vec<u8>)>,
}

/// A header name or value that cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The name is empty or has a character a header name cannot have.
    #[error("invalid header name {0:?}")]
    Name(String),
    /// The value contains CR, LF or NUL.
    #[error("invalid value for header {0:?}: it contains CR, LF or NUL")]
    Value(String),
}

impl Headers {
    /// No headers.
    pub fn new() -> Headers {
        Headers::default()
    }

    pub(crate) fn from_entries(entries: Vec<(String, Vec<u8>)>) -> Headers {
        Headers { entries }
    }

    pub(crate) fn into_entries(self) -> Vec<(String, Vec<u8>)> {
        self.entries
    }

    /// Every header, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.entries.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// Replaces every `name` header with one carrying `value` (added at the end if absent).
    pub fn set(&mut self, name: &str, value: &[u8]) -> Result<(), HeaderError> {
        check(name, value)?;
        match self.entries.iter().position(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some(i) => {
                self.entries[i].1 = value.to_vec();
                let mut seen = 0;
                self.entries.retain(|(n, _)| {
                    !n.eq_ignore_ascii_case(name) || {
                        seen += 1;
                        seen == 1
                    }
                });
            }
            None => self.entries.push((name.to_string(), value.to_vec())),
        }
        Ok(())
    }

    /// Adds a header at the end.
    pub fn append(&mut self, name: &str, value: &[u8]) -> Result<(), HeaderError> {
        check(name, value)?;
        self.entries.push((name.to_string(), value.to_vec()));
        Ok(())
    }

    /// Removes every `name` header; returns how many there were.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.entries.len();
        self.entries.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        before - self.entries.len()
    }

    /// Keeps only the headers `keep` returns true for.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &[u8]) -> bool) {
        self.entries.retain(|(n, v)| keep(n, v));
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries.iter().map(|(n, _)| n)).finish()
    }
}

/// RFC 9110 `tchar`.
pub(crate) fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check(name: &str, value: &[u8]) -> Result<(), HeaderError> {
    if !is_token(name) {
        return Err(HeaderError::Name(name.to_string()));
    }
    if value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(HeaderError::Value(name.to_string()));
    }
    Ok(())
}
