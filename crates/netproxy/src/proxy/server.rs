//! [`Proxy`]: configuration and the two entry points.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::log::{ConnectionSink, LogMode};
use crate::policy::Policy;

use super::admission::{Admission, Admit, Slot};
use super::ca::CertificateAuthority;
use super::forward::{self, Mode, Next};
use super::intercept::Intercept;
use super::io::Conn;
use super::resolve::{Resolve, SystemResolver};
use super::{connect, reply, transparent};

/// How long a refused connection's 503 may take to write; then it is dropped.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

/// Timeouts and sizes. The defaults suit interactive agents; every wait on
/// the guest is bounded, waits on an upstream are generous (models think).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// For a connection's first request head.
    pub head_timeout: Duration,
    /// Between requests on a kept-alive connection, and between body reads from the guest.
    pub idle_timeout: Duration,
    /// For the TLS ClientHello after a CONNECT, and for the TLS handshake with the guest.
    pub hello_timeout: Duration,
    /// How long a tunnel's client may stay silent before it is taken for a
    /// protocol in which the server speaks first.
    pub first_byte_timeout: Duration,
    /// Each of: resolving a name, connecting, the TLS handshake with an upstream.
    pub connect_timeout: Duration,
    /// How long an upstream may stay silent while a response is awaited or streamed.
    pub response_timeout: Duration,
    /// The largest request or response head, in bytes.
    pub max_head: usize,
    /// How long a relayed tunnel or WebSocket may carry no byte either way
    /// before it is cut. Longer than any silence of a working connection (a
    /// model thinking is bounded by `response_timeout`); it frees the slots
    /// of connections the guest abandoned.
    pub tunnel_idle_timeout: Duration,
    /// Connections this proxy serves at once; more are refused (503 on the
    /// explicit proxy, closed when transparent) and logged once per
    /// [`REFUSALS_LOGGED_EVERY`](super::REFUSALS_LOGGED_EVERY). Moat runs one proxy per sandbox, so this
    /// is the sandbox's share of the host.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            head_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            hello_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(300),
            max_head: 64 * 1024,
            tunnel_idle_timeout: Duration::from_secs(3600),
            max_connections: 512,
        }
    }
}

/// Everything a [`Proxy`] needs.
pub struct ProxyConfig {
    /// The live policy; every decision reads its current snapshot.
    pub policy: Arc<Policy>,
    /// Signs the certificates shown on intercepted connections.
    pub ca: Arc<CertificateAuthority>,
    /// Resolves names (the proxy never lets a library resolve for it).
    pub resolver: Arc<dyn Resolve>,
    /// Receives one record per connection or request.
    pub sink: Arc<dyn ConnectionSink>,
    /// Decides what is intercepted and rewrites those requests; `None`
    /// intercepts nothing.
    pub intercept: Option<Arc<dyn Intercept>>,
    /// PEM certificates trusted for upstream TLS besides the system's.
    pub extra_roots_pem: Vec<String>,
    /// Timeouts and sizes.
    pub limits: Limits,
}

impl ProxyConfig {
    /// A configuration with the system resolver, no interception, only the
    /// system's trust roots and default limits.
    pub fn new(policy: Arc<Policy>, ca: Arc<CertificateAuthority>, sink: Arc<dyn ConnectionSink>) -> ProxyConfig {
        ProxyConfig {
            policy,
            ca,
            resolver: Arc::new(SystemResolver),
            sink,
            intercept: None,
            extra_roots_pem: Vec::new(),
            limits: Limits::default(),
        }
    }
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("intercept", &self.intercept.is_some())
            .field("extra_roots", &self.extra_roots_pem.len())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// [`Proxy::new`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// An extra trust root is not a PEM certificate rustls accepts.
    #[error("extra trust root #{0} is not a valid PEM certificate")]
    TrustRoot(usize),
    /// Building the TLS client configuration failed.
    #[error("cannot configure upstream TLS")]
    Tls(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A connection slot taken by [`Proxy::reserve`]; freed when dropped.
pub struct Reserved {
    _slot: Slot,
}

impl fmt::Debug for Reserved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reserved")
    }
}

/// The egress proxy. Cheap to clone; serve each connection in its own task.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy").field("limits", &self.inner.limits).finish_non_exhaustive()
    }
}

/// What every connection shares.
pub(crate) struct Inner {
    pub(crate) policy: Arc<Policy>,
    pub(crate) ca: Arc<CertificateAuthority>,
    pub(crate) resolver: Arc<dyn Resolve>,
    pub(crate) sink: Arc<dyn ConnectionSink>,
    pub(crate) intercept: Option<Arc<dyn Intercept>>,
    pub(crate) limits: Limits,
    pub(crate) tls_client: Arc<rustls::ClientConfig>,
    admission: Admission,
}

impl Proxy {
    /// A proxy; loads the system's trust roots for upstream TLS.
    pub fn new(config: ProxyConfig) -> Result<Proxy, ProxyError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        for (i, pem) in config.extra_roots_pem.iter().enumerate() {
            let mut any = false;
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|_| ProxyError::TrustRoot(i))?;
                roots.add(cert).map_err(|_| ProxyError::TrustRoot(i))?;
                any = true;
            }
            if !any {
                return Err(ProxyError::TrustRoot(i));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ProxyError::Tls(Box::new(e)))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let inner = Inner {
            policy: config.policy,
            ca: config.ca,
            resolver: config.resolver,
            sink: config.sink,
            intercept: config.intercept,
            admission: Admission::new(config.limits.max_connections),
            limits: config.limits,
            tls_client: Arc::new(tls),
        };
        Ok(Proxy { inner: Arc::new(inner) })
    }

    /// The CA certificate (PEM) the guest must trust for intercepted hosts.
    pub fn ca_certificate_pem(&self) -> &str {
        self.inner.ca.certificate_pem()
    }

    /// Serves one connection from `sandbox` to the explicit proxy
    /// (`HTTP_PROXY`/`HTTPS_PROXY`): plain-HTTP requests in absolute form
    /// and CONNECT tunnels. Returns when the connection ends; every outcome
    /// is in the connection log.
    pub async fn serve<S>(&self, stream: S, sandbox: &str)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut client = Conn::new(Box::new(stream));
        let _slot = match self.inner.admission.admit(&self.inner.sink, sandbox, LogMode::Http) {
            Admit::In(slot) => slot,
            Admit::Refused => {
                let busy = reply::too_many_connections(self.inner.limits.max_connections);
                let _ = tokio::time::timeout(REFUSAL_WRITE, client.write_all(&busy)).await;
                return;
            }
        };
        let mut mode = Mode::Proxy;
        if let Next::Connect(req) = forward::serve_http(&self.inner, &mut client, sandbox, &mut mode).await {
            connect::explicit(&self.inner, client, sandbox, req).await;
        }
    }

    /// Serves one connection the guest redirected transparently (its client
    /// knew of no proxy). `original_dst` is where it was headed; `name_hint`
    /// is the name the guest's DNS answered for that address, if any. The
    /// host is the TLS server name, else the HTTP `Host`, else the hint,
    /// else the address itself; a server name or `Host` that differs from
    /// the hint is refused. The upstream port is `original_dst`'s.
    pub async fn serve_transparent<S>(
        &self,
        stream: S,
        sandbox: &str,
        original_dst: SocketAddr,
        name_hint: Option<String>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some(slot) = self.reserve(sandbox) else {
            return; // Closed: a redirected client would not understand a proxy's 503.
        };
        self.serve_transparent_reserved(slot, stream, sandbox, original_dst, name_hint).await;
    }

    /// Takes one of the proxy's [`Limits::max_connections`] slots for a
    /// redirected connection before anything is read from it (say, the
    /// line that names its destination); `None` over the limit (logged, at
    /// most once per 10 s): close the connection.
    pub fn reserve(&self, sandbox: &str) -> Option<Reserved> {
        match self.inner.admission.admit(&self.inner.sink, sandbox, LogMode::Transparent) {
            Admit::In(slot) => Some(Reserved { _slot: slot }),
            Admit::Refused => None,
        }
    }

    /// [`Proxy::serve_transparent`] in a slot [`Proxy::reserve`] took.
    pub async fn serve_transparent_reserved<S>(
        &self,
        reserved: Reserved,
        stream: S,
        sandbox: &str,
        original_dst: SocketAddr,
        name_hint: Option<String>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        transparent::serve(&self.inner, Conn::new(Box::new(stream)), sandbox, original_dst, name_hint).await;
        drop(reserved);
    }
}
