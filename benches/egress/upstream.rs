//! The upstream every scenario talks to: HTTPS for `bench.test` on
//! loopback, keep-alive, answering every request with the same small body.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio_rustls::TlsAcceptor;

/// The name the upstream's certificate is for; resolved to 127.0.0.1 by
/// each proxy's own means (a static resolver, an addon, a hosts file).
pub const HOST: &str = "bench.test";
/// Bytes in the response body.
pub const BODY_LEN: usize = 100;

/// The CA that signs the upstream's certificate. Clients trust it when
/// the TLS they see is the upstream's own (direct and tunnelled); the
/// intercepting proxies trust it for their upstream side.
pub struct TestCa {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "moat egress bench upstream CA");
        let cert = params.self_signed(&key).expect("self-signed CA");
        TestCa { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().expect("leaf key");
        let params = CertificateParams::new(vec![HOST.to_string()]).expect("leaf params");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_no_client_auth()
                .with_single_cert(vec![cert.der().clone()], key)
                .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// A running upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    accepted: Arc<AtomicU64>,
}

impl Upstream {
    /// TCP connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

/// Starts the upstream on `rt`.
pub fn start(rt: &Runtime, ca: &TestCa) -> Upstream {
    let acceptor = TlsAcceptor::from(ca.server_config());
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind the upstream");
    let addr = listener.local_addr().expect("upstream address");
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&accepted);
    rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve(tls).await;
                }
            });
        }
    });
    Upstream { addr, accepted }
}

fn response() -> Vec<u8> {
    let mut r =
        format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {BODY_LEN}\r\n\r\n").into_bytes();
    r.extend(std::iter::repeat_n(b'x', BODY_LEN - 1));
    r.push(b'\n');
    r
}

/// Answers each request head (bodiless GETs only) with the fixed response,
/// until the client closes.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let response = response();
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            if stream.write_all(&response).await.is_err() {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
