//! Placeholder tokens: fake credentials in each service's own format that the
//! guest sees instead of the real ones.
//!
//! Scheme: `prefix + body + check`, all in the format's alphabet and at its
//! placeholder length. `body` (len − 8 chars) is HMAC-SHA256 of
//! `(service, sandbox)` under a key derived from the installation's master
//! key; `check` (8 chars, ~47 bits) is HMAC of `(prefix, body)`. So a
//! placeholder is stable across restarts, different per sandbox and per
//! installation, unguessable without the key, and recognisable as "ours"
//! without any state (a real token passes the check with p ≈ 2⁻⁴⁷).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::catalog::TokenFormat;
use crate::keystore::MasterKey;

const CHECK_LEN: usize = 8;

/// Derives and checks placeholders for one installation.
pub struct Placeholders {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Placeholders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Placeholders(…)")
    }
}

impl Placeholders {
    pub fn new(master: &MasterKey) -> Self {
        Self { key: master.derive(b"moat-placeholder-v1") }
    }

    /// The placeholder for `service` in `sandbox`, shaped like `format`.
    pub fn make(&self, service: &str, sandbox: &str, format: &TokenFormat) -> String {
        let body_len = format.len.saturating_sub(CHECK_LEN);
        let body = self.chars(&[b"body", service.as_bytes(), sandbox.as_bytes()], format, body_len);
        let check = self.check(format, &body);
        format!("{}{body}{check}", format.prefix)
    }

    /// Whether `value` is a placeholder of this installation in `format`.
    pub fn is_ours(&self, value: &str, format: &TokenFormat) -> bool {
        let Some(rest) = value.strip_prefix(format.prefix) else {
            return false;
        };
        if rest.len() != format.len || !rest.bytes().all(|c| format.alphabet.contains(c)) {
            return false;
        }
        let (body, check) = rest.split_at(format.len - CHECK_LEN);
        self.check(format, body) == check
    }

    fn check(&self, format: &TokenFormat, body: &str) -> String {
        self.chars(&[b"check", format.prefix.as_bytes(), body.as_bytes()], format, CHECK_LEN)
    }

    /// `n` characters of the format's alphabet from an HMAC stream over
    /// `parts` (length-prefixed so parts can't run into each other).
    fn chars(&self, parts: &[&[u8]], format: &TokenFormat, n: usize) -> String {
        let alphabet = format.alphabet.chars();
        // Largest multiple of the alphabet size ≤ 256: rejection sampling
        // keeps every character equally likely.
        let limit = 256 - 256 % alphabet.len();
        let mut out = String::with_capacity(n);
        let mut counter = 0u32;
        while out.len() < n {
            let mut mac = Hmac::<Sha256>::new_from_slice(self.key.as_ref()).expect("any key length");
            for p in parts {
                mac.update(&(p.len() as u64).to_be_bytes());
                mac.update(p);
            }
            mac.update(&counter.to_be_bytes());
            counter += 1;
            for b in mac.finalize().into_bytes() {
                if (b as usize) < limit && out.len() < n {
                    out.push(alphabet[b as usize % alphabet.len()] as char);
                }
            }
        }
        out
    }
}
