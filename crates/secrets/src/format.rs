//! The vault file's bytes: a cleartext header, then the entries as JSON
//! sealed with XChaCha20-Poly1305.
//!
//! ```text
//! "MOATVLT" | version (1 byte) | key id (8 bytes) | nonce (24 bytes) | ciphertext+tag
//! ```
//! The first 16 bytes (magic, version, key id) are the AEAD's associated
//! data, so they can't be altered without failing authentication. The key id
//! (derived from the master key) tells "wrong key" apart from "corrupt file".

use std::path::PathBuf;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::catalog::CustomService;
use crate::keystore::MasterKey;
use crate::secret::Secret;

const MAGIC: &[u8; 7] = b"MOATVLT";
const VERSION: u8 = 1;
const HEADER: usize = 16;
const NONCE: usize = 24;

/// Where a value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoredSource {
    Literal { value: Secret },
    Command { cmd: String, ttl_secs: u64 },
}

/// One stored credential. `sandbox: None` is the global scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEntry {
    pub service: String,
    pub sandbox: Option<String>,
    pub source: StoredSource,
    pub updated_at: u64,
}

/// Everything the vault file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultData {
    pub entries: Vec<StoredEntry>,
    pub custom_services: Vec<CustomService>,
}

/// The vault file can't be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the vault {vault} was encrypted with another key than the {key}: restore the matching key file, or move the vault away to start over")]
    WrongKey { vault: PathBuf, key: String },
    #[error(
        "the vault {vault} is corrupt ({reason}); it was left untouched: restore it from a backup or move it away"
    )]
    Corrupt { vault: PathBuf, reason: &'static str },
    #[error("the vault {vault} has format version {version}, which this Moat doesn't know: upgrade Moat")]
    UnsupportedVersion { vault: PathBuf, version: u8 },
}

pub(crate) struct Sealer {
    cipher: XChaCha20Poly1305,
    key_id: [u8; 8],
}

impl Sealer {
    pub(crate) fn new(master: &MasterKey) -> Self {
        let enc = master.derive(b"moat-vault-encryption-v1");
        let id = master.derive(b"moat-vault-key-id-v1");
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&id[..8]);
        Self { cipher: XChaCha20Poly1305::new(enc.as_ref().into()), key_id }
    }

    fn header(&self) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[..7].copy_from_slice(MAGIC);
        h[7] = VERSION;
        h[8..].copy_from_slice(&self.key_id);
        h
    }

    pub(crate) fn seal(&self, data: &VaultData) -> Vec<u8> {
        let plain = Zeroizing::new(serde_json::to_vec(data).expect("vault data always serializes"));
        let mut nonce = [0u8; NONCE];
        getrandom::getrandom(&mut nonce).expect("system random number generator failed");
        let header = self.header();
        let ct = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: &plain, aad: &header })
            .expect("encryption of in-memory data cannot fail");
        let mut out = Vec::with_capacity(HEADER + NONCE + ct.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    pub(crate) fn open(
        &self,
        bytes: &[u8],
        vault: PathBuf,
        key: impl FnOnce() -> String,
    ) -> Result<VaultData, DecodeError> {
        let corrupt = |reason| DecodeError::Corrupt { vault: vault.clone(), reason };
        if bytes.len() < HEADER + NONCE + 16 {
            return Err(corrupt("too short"));
        }
        if &bytes[..7] != MAGIC {
            return Err(corrupt("not a Moat vault"));
        }
        if bytes[7] != VERSION {
            return Err(DecodeError::UnsupportedVersion { vault, version: bytes[7] });
        }
        if bytes[8..HEADER] != self.key_id {
            return Err(DecodeError::WrongKey { vault, key: key() });
        }
        let nonce = XNonce::from_slice(&bytes[HEADER..HEADER + NONCE]);
        let plain = self
            .cipher
            .decrypt(nonce, Payload { msg: &bytes[HEADER + NONCE..], aad: &bytes[..HEADER] })
            .map(Zeroizing::new)
            .map_err(|_| corrupt("authentication failed"))?;
        serde_json::from_slice(&plain).map_err(|_| corrupt("bad contents"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let s = Sealer::new(&MasterKey::from_bytes([7; 32]));
        let data = VaultData {
            entries: vec![StoredEntry {
                service: "xai".into(),
                sandbox: None,
                source: StoredSource::Literal { value: Secret::new("xai-secret") },
                updated_at: 1,
            }],
            custom_services: vec![],
        };
        let bytes = s.seal(&data);
        assert!(!bytes.windows(10).any(|w| w == b"xai-secret"));
        assert_eq!(s.open(&bytes, "v".into(), String::new).unwrap(), data);
        for i in [0, 7, 9, 20, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[i] ^= 1;
            assert!(s.open(&b, "v".into(), String::new).is_err(), "flip at {i}");
        }
        let other = Sealer::new(&MasterKey::from_bytes([8; 32]));
        assert!(matches!(other.open(&bytes, "v".into(), String::new), Err(DecodeError::WrongKey { .. })));
    }
}
