//! The per-installation certificate authority that signs the certificates
//! the proxy shows on intercepted connections. The guest trusts it; nothing
//! else should.
//!
//! Generated once and kept as one PEM file (private key, then certificate)
//! with mode 0600, created atomically: written to a temporary file, synced,
//! then hard-linked into place, so two processes starting at once agree on
//! one CA. Leaf certificates are minted per host on first use and kept in a
//! bounded in-memory cache.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

/// The CA file inside the folder given to [`CertificateAuthority::load_or_create`].
pub const CA_FILE: &str = "ca.pem";
/// How many leaf certificates are cached by default.
pub const DEFAULT_LEAF_CACHE: usize = 1024;
/// How long a leaf certificate is valid; cached ones are replaced after a day.
const LEAF_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
const LEAF_REFRESH: Duration = Duration::from_secs(24 * 3600);

/// The CA could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading or writing the CA file failed.
    #[error("cannot access the proxy CA at {path}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The CA file is readable by other users.
    #[error("the proxy CA key {0} is readable by other users; run 'chmod 600' on it")]
    Permissions(PathBuf),
    /// The CA file does not hold a matching key and certificate.
    #[error(
        "the proxy CA file {0} is not a PEM private key followed by its certificate; move it away to generate a new CA"
    )]
    Corrupt(PathBuf),
    /// Generating keys or certificates failed.
    #[error("cannot generate the proxy CA")]
    Generate(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The proxy's CA and its cache of minted leaf certificates.
pub struct CertificateAuthority {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    leaves: Mutex<LeafCache>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new CA that lives only in memory (tests, throwaway proxies).
    pub fn generate() -> Result<CertificateAuthority, CaError> {
        let key = KeyPair::generate().map_err(generate)?;
        let cert = ca_params(&key).self_signed(&key).map_err(generate)?;
        Ok(CertificateAuthority::assemble(key, cert.pem(), cert.der().clone()))
    }

    /// Loads the CA kept in `dir` (see [`CA_FILE`]), creating the folder
    /// (0700) and the CA the first time.
    pub fn load_or_create(dir: &Path) -> Result<CertificateAuthority, CaError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CaError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(CA_FILE);
        if !path.exists() {
            let key = KeyPair::generate().map_err(generate)?;
            let cert = ca_params(&key).self_signed(&key).map_err(generate)?;
            let text = format!("{}{}", key.serialize_pem(), cert.pem());
            let tmp = dir.join(format!(".{CA_FILE}.{}.tmp", std::process::id()));
            write_private(&tmp, text.as_bytes()).map_err(io_err(&tmp))?;
            let linked = fs::hard_link(&tmp, &path);
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => sync_dir(dir).map_err(io_err(dir))?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {} // Another process won; use its CA.
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        CertificateAuthority::load(&path)
    }

    fn load(path: &Path) -> Result<CertificateAuthority, CaError> {
        let meta = fs::metadata(path).map_err(|source| CaError::Io { path: path.to_path_buf(), source })?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(CaError::Permissions(path.to_path_buf()));
        }
        let text = fs::read(path).map_err(|source| CaError::Io { path: path.to_path_buf(), source })?;
        let corrupt = || CaError::Corrupt(path.to_path_buf());
        let key_der = PrivateKeyDer::from_pem_slice(&text).map_err(|_| corrupt())?;
        let key = KeyPair::try_from(&key_der).map_err(|_| corrupt())?;
        let cert_der = CertificateDer::from_pem_slice(&text).map_err(|_| corrupt())?;
        let public = rcgen::PublicKeyData::der_bytes(&key);
        if !cert_der.windows(public.len()).any(|w| w == public) {
            return Err(corrupt());
        }
        // What the guest trusts is written from the parsed certificate alone,
        // never cut from the file: whatever order its blocks come in, no other
        // block (the key above all) can ride along.
        let cert_pem = certificate_pem(&cert_der);
        Ok(CertificateAuthority::assemble(key, cert_pem, cert_der))
    }

    fn assemble(key: KeyPair, cert_pem: String, cert_der: CertificateDer<'static>) -> CertificateAuthority {
        let issuer = Issuer::new(ca_params(&key), key);
        let leaves = Mutex::new(LeafCache { capacity: DEFAULT_LEAF_CACHE, entries: HashMap::new() });
        CertificateAuthority { cert_pem, cert_der, issuer, leaves }
    }

    /// Sets how many leaf certificates are cached (at least one).
    pub fn with_leaf_cache(self, capacity: usize) -> CertificateAuthority {
        self.leaves.lock().unwrap_or_else(|e| e.into_inner()).capacity = capacity.max(1);
        self
    }

    /// The CA certificate in PEM form, for the guest's trust store.
    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A TLS server configuration presenting a certificate for `host`,
    /// minted now or taken from the cache.
    pub(crate) fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, CaError> {
        let now = Instant::now();
        if let Some(config) = self.leaves.lock().unwrap_or_else(|e| e.into_inner()).get(host, now) {
            return Ok(config);
        }
        let config = Arc::new(self.mint(host)?);
        self.leaves.lock().unwrap_or_else(|e| e.into_inner()).insert(host, Arc::clone(&config), now);
        Ok(config)
    }

    fn mint(&self, host: &str) -> Result<rustls::ServerConfig, CaError> {
        let key = KeyPair::generate().map_err(generate)?;
        let mut params = CertificateParams::new(vec![host.to_string()]).map_err(generate)?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, host);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + LEAF_VALIDITY;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate)?;
        let chain = vec![cert.der().clone(), self.cert_der.clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(generate)?
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .map_err(generate)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// The CA's parameters, derived from its key alone so a loaded CA signs with
/// exactly the name its certificate carries.
fn ca_params(key: &KeyPair) -> CertificateParams {
    let mut params = CertificateParams::default();
    let id = params.key_identifier(key);
    let tag: String = id.iter().take(4).map(|b| format!("{b:02x}")).collect();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "Moat");
    params.distinguished_name.push(DnType::CommonName, format!("Moat sandbox proxy CA {tag}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    params
}

fn generate(e: impl std::error::Error + Send + Sync + 'static) -> CaError {
    CaError::Generate(Box::new(e))
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Leaf configurations by host, bounded; the oldest goes first when full.
struct LeafCache {
    capacity: usize,
    entries: HashMap<String, (Instant, Arc<rustls::ServerConfig>)>,
}

impl LeafCache {
    fn get(&self, host: &str, now: Instant) -> Option<Arc<rustls::ServerConfig>> {
        let (made, config) = self.entries.get(host)?;
        (now.duration_since(*made) < LEAF_REFRESH).then(|| Arc::clone(config))
    }

    fn insert(&mut self, host: &str, config: Arc<rustls::ServerConfig>, now: Instant) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(host) {
            let oldest = self.entries.iter().min_by_key(|(_, (made, _))| *made).map(|(h, _)| h.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(host.to_string(), (now, config));
    }
}

/// One certificate as PEM, from its DER bytes.
fn certificate_pem(der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            b64.push(if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i) & 63) as usize] } else { b'=' });
        }
    }
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_created_once_with_a_private_key_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_dir = dir.path().join("ca");
        let first = CertificateAuthority::load_or_create(&ca_dir).expect("create");
        let mode = fs::metadata(ca_dir.join(CA_FILE)).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = CertificateAuthority::load_or_create(&ca_dir).expect("load");
        assert_eq!(first.certificate_pem(), again.certificate_pem());
        assert!(first.certificate_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!first.certificate_pem().contains("PRIVATE KEY"));
    }

    #[test]
    fn only_the_certificate_is_handed_out_whatever_the_order_of_the_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = CertificateAuthority::load_or_create(dir.path()).expect("create");
        let path = dir.path().join(CA_FILE);
        let text = fs::read_to_string(&path).expect("read");
        let key_at = text.find("-----BEGIN PRIVATE KEY-----").expect("key block");
        let cert_at = text.find("-----BEGIN CERTIFICATE-----").expect("cert block");
        let (key, cert) = if key_at < cert_at {
            (&text[key_at..cert_at], &text[cert_at..])
        } else {
            (&text[key_at..], &text[cert_at..key_at])
        };
        // A user's file: certificate first, then the key, with a comment between.
        write_private(&path, format!("{cert}# the key\n{key}").as_bytes()).expect("write");
        let loaded = CertificateAuthority::load_or_create(dir.path()).expect("load");
        assert!(!loaded.certificate_pem().contains("PRIVATE KEY"), "{}", loaded.certificate_pem());
        assert_eq!(loaded.certificate_pem(), made.certificate_pem());
        assert_eq!(CertificateDer::from_pem_slice(loaded.certificate_pem().as_bytes()).expect("pem"), made.cert_der);
    }

    #[test]
    fn a_readable_or_corrupt_ca_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        CertificateAuthority::load_or_create(dir.path()).expect("create");
        let path = dir.path().join(CA_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(CertificateAuthority::load_or_create(dir.path()), Err(CaError::Permissions(_))));
        write_private(&path, b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").expect("write");
        assert!(matches!(CertificateAuthority::load_or_create(dir.path()), Err(CaError::Corrupt(_))));
    }

    #[test]
    fn leaves_are_cached_and_bounded() {
        let ca = CertificateAuthority::generate().expect("ca").with_leaf_cache(2);
        let a = ca.server_config("a.example.test").expect("leaf");
        assert!(Arc::ptr_eq(&a, &ca.server_config("a.example.test").expect("leaf")));
        ca.server_config("b.example.test").expect("leaf");
        ca.server_config("c.example.test").expect("leaf");
        let cache = ca.leaves.lock().expect("lock");
        assert_eq!(cache.entries.len(), 2);
        assert!(!cache.entries.contains_key("a.example.test"));
    }
}
