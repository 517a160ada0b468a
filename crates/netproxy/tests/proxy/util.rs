//! Shared fixture: upstream servers on loopback addresses, a resolver that
//! maps the test names to them, a recording sink, and small clients.
//!
//! Every name resolves to a 127.0.0.x address. Loopback is special to the
//! policy, so tests that expect a connection add an address rule naming it
//! ([`ADDRESS_RULES`]); the DNS-rebinding test leaves it out.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use moat_netproxy::log::{ConnectionRecord, ConnectionSink};
use moat_netproxy::policy::{Policy, Preset, Rule};
use moat_netproxy::proxy::{CertificateAuthority, Intercept, Limits, Proxy, ProxyConfig, StaticResolver};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub const SANDBOX: &str = "web";
pub const API: &str = "api.example.test";
pub const EVIL: &str = "evil.example.test";
pub const RAW: &str = "raw.example.test";
pub const API_IP: [u8; 4] = [127, 0, 0, 2];
pub const EVIL_IP: [u8; 4] = [127, 0, 0, 3];
pub const RAW_IP: [u8; 4] = [127, 0, 0, 4];
/// Rules naming the loopback addresses the test servers listen on.
pub const ADDRESS_RULES: &str = "allow network 127.0.0.2\nallow network 127.0.0.3\nallow network 127.0.0.4";
/// Names the upstream certificate covers.
const CERT_NAMES: [&str; 5] = [API, EVIL, "a.example.test", "a.b.example.test", "rebind.example.test"];
const WAIT: Duration = Duration::from_secs(10);

/// A CA for the test's upstream servers (the proxy trusts it via config).
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "upstream test CA");
        let cert = params.self_signed(&key).expect("self-signed");
        TestCa { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        self.server_config_with(names, provider())
    }

    /// A server that takes only P-256 key exchange: a client that guessed
    /// X25519 (rustls' first choice) gets a HelloRetryRequest.
    fn retrying_server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let mut p256 = rustls::crypto::ring::default_provider();
        p256.kx_groups = vec![rustls::crypto::ring::kx_group::SECP256R1];
        self.server_config_with(names, Arc::new(p256))
    }

    fn server_config_with(
        &self,
        names: &[&str],
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().expect("key");
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .expect("config");
        Arc::new(config)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A request an upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A test server and what it saw.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<Mutex<Vec<Seen>>>,
    /// Raw servers: every byte received.
    pub raw: Arc<Mutex<Vec<u8>>>,
}

impl Upstream {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.requests.lock().expect("lock").clone()
    }

    pub fn raw(&self) -> Vec<u8> {
        self.raw.lock().expect("lock").clone()
    }

    async fn bind(ip: [u8; 4]) -> (TcpListener, Upstream) {
        let listener = TcpListener::bind((IpAddr::from(ip), 0)).await.expect("bind");
        let up = Upstream {
            addr: listener.local_addr().expect("addr"),
            connections: Arc::default(),
            requests: Arc::default(),
            raw: Arc::default(),
        };
        (listener, up)
    }

    /// An HTTP (or, with `tls`, HTTPS) server that answers `echo METHOD URI`.
    async fn http(ip: [u8; 4], tls: Option<Arc<rustls::ServerConfig>>) -> Upstream {
        let (listener, up) = Upstream::bind(ip).await;
        let server = up.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                server.connections.fetch_add(1, Ordering::SeqCst);
                let (requests, tls) = (Arc::clone(&server.requests), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(config) => {
                            if let Ok(stream) = TlsAcceptor::from(config).accept(tcp).await {
                                serve_echo(stream, requests).await;
                            }
                        }
                        None => serve_echo(tcp, requests).await,
                    }
                });
            }
        });
        up
    }

    /// A raw server: records bytes; answers an HTTP request head with a
    /// fixed response ([`FIXED_RESPONSE`]), echoes anything else.
    async fn raw_server(ip: [u8; 4]) -> Upstream {
        Upstream::serve_tcp(ip, |mut tcp, raw| async move {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = tcp.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                raw.lock().expect("lock").extend_from_slice(&buf[..n]);
                seen.extend_from_slice(&buf[..n]);
                let http = seen.first().is_some_and(u8::is_ascii_uppercase);
                if http && seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let _ = tcp.write_all(FIXED_RESPONSE).await;
                    break;
                }
                if !http && tcp.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        })
        .await
    }

    /// A WebSocket-style server: reads one request head (recorded in
    /// `raw`), answers `101 Switching Protocols` with the protocol the head's
    /// `Upgrade` names — or `h2c` when it names none, like a server that
    /// switches unasked — and then echoes every byte. For `/echo-auth` it
    /// first sends the request's `Authorization` value (in two writes).
    async fn websocket(ip: [u8; 4], tls: Option<Arc<rustls::ServerConfig>>) -> Upstream {
        Upstream::serve_tcp(ip, move |tcp, raw| {
            let tls = tls.clone();
            async move {
                match tls {
                    Some(config) => {
                        if let Ok(stream) = TlsAcceptor::from(config).accept(tcp).await {
                            websocket_session(stream, raw).await;
                        }
                    }
                    None => websocket_session(tcp, raw).await,
                }
            }
        })
        .await
    }

    /// A TCP server on `ip` running `handle` for each connection (with the
    /// shared record of raw bytes), counting connections.
    async fn serve_tcp<F, Fut>(ip: [u8; 4], handle: F) -> Upstream
    where
        F: Fn(TcpStream, Arc<Mutex<Vec<u8>>>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (listener, up) = Upstream::bind(ip).await;
        let server = up.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                server.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(handle(tcp, Arc::clone(&server.raw)));
            }
        });
        up
    }
}

/// A TLS server that reflects each request back in the shape its path asks
/// for, like a service that echoes what it was sent: `/length` (the request
/// head as a `Content-Length` body), `/chunked` (the same in 5-byte chunks,
/// each its own TLS record), `/header` (the `Authorization` value in the
/// reason phrase and an `X-Echo` header, empty body), `/gzip` (the head,
/// labelled `Content-Encoding: gzip`). Request heads are recorded in `raw`.
async fn reflector(ip: [u8; 4], tls: Arc<rustls::ServerConfig>) -> Upstream {
    Upstream::serve_tcp(ip, move |tcp, raw| {
        let tls = Arc::clone(&tls);
        async move {
            let Ok(mut stream) = TlsAcceptor::from(tls).accept(tcp).await else { return };
            loop {
                let Some(head) = read_request_head(&mut stream).await else { return };
                raw.lock().expect("lock").extend_from_slice(&head);
                let text = String::from_utf8_lossy(&head).into_owned();
                let path = text.split(' ').nth(1).unwrap_or_default().to_string();
                let auth = text
                    .lines()
                    .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("authorization")))
                    .map(|(_, v)| v.trim().to_string())
                    .unwrap_or_default();
                let answer = match path.as_str() {
                    "/chunked" => {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").await;
                        for piece in head.chunks(5) {
                            let chunk = [format!("{:x}\r\n", piece.len()).as_bytes(), piece, b"\r\n"].concat();
                            let _ = stream.write_all(&chunk).await;
                            let _ = stream.flush().await;
                        }
                        b"0\r\n\r\n".to_vec()
                    }
                    "/header" => format!("HTTP/1.1 401 bad key {auth}\r\nX-Echo: {auth}\r\nContent-Length: 0\r\n\r\n")
                        .into_bytes(),
                    "/gzip" => [
                        format!("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n", head.len())
                            .as_bytes(),
                        &head,
                    ]
                    .concat(),
                    _ => [format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", head.len()).as_bytes(), &head]
                        .concat(),
                };
                if stream.write_all(&answer).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
            }
        }
    })
    .await
}

/// A server that answers any first bytes with a HelloRetryRequest and then
/// records everything else the client sends (in `raw`, after the first read).
async fn hello_retry_server(ip: [u8; 4]) -> Upstream {
    Upstream::serve_tcp(ip, |mut tcp, raw| async move {
        let mut buf = [0u8; 4096];
        if !matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {
            return;
        }
        let mut hrr = vec![22, 3, 3, 0, 42, 2, 0, 0, 38, 3, 3];
        hrr.extend(HELLO_RETRY_RANDOM);
        hrr.extend([0, 0x13, 0x01, 0]);
        if tcp.write_all(&hrr).await.is_err() {
            return;
        }
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
            raw.lock().expect("lock").extend_from_slice(&buf[..n]);
        }
    })
    .await
}

/// RFC 8446 §4.1.3.
const HELLO_RETRY_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91, 0xc2, 0xa2, 0x11,
    0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// The ClientHello rustls would send to `name` (the first flight, as bytes).
pub fn client_hello(name: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = ServerName::try_from(name.to_string()).expect("server name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("hello");
    out
}

/// A request head read byte by byte (so nothing after it is consumed); `None` if the stream ends first.
async fn read_request_head<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(head)
}

async fn websocket_session<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, raw: Arc<Mutex<Vec<u8>>>) {
    let Some(head) = read_request_head(&mut stream).await else { return };
    raw.lock().expect("lock").extend_from_slice(&head);
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let protocol = text
        .lines()
        .find_map(|l| l.strip_prefix("upgrade:").map(|v| v.trim().to_string()))
        .unwrap_or_else(|| "h2c".to_string());
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: {protocol}\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: test\r\n\r\n"
    );
    if stream.write_all(answer.as_bytes()).await.is_err() {
        return;
    }
    if text.starts_with("get /echo-auth ") {
        // Sends the request's Authorization value back in two pieces, apart.
        let original = String::from_utf8_lossy(&head).into_owned();
        let auth = original
            .lines()
            .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("authorization")))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let (a, b) = auth.as_bytes().split_at(auth.len() / 2);
        let _ = stream.write_all(a).await;
        let _ = stream.flush().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let _ = stream.write_all(b).await;
        let _ = stream.write_all(b"\n").await;
        let _ = stream.flush().await;
    }
    let (mut r, mut w) = tokio::io::split(stream);
    let _ = tokio::io::copy(&mut r, &mut w).await;
}

/// What the raw server answers to an HTTP request.
pub const FIXED_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

async fn serve_echo<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(stream: S, requests: Arc<Mutex<Vec<Seen>>>) {
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let requests = Arc::clone(&requests);
        async move {
            let method = req.method().to_string();
            let uri = req.uri().to_string();
            let headers = req
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            let body = req.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
            let text = format!("echo {method} {uri} {}", body.len());
            requests.lock().expect("lock").push(Seen { headers, body });
            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(text))))
        }
    });
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
}

/// Records what the proxy logs.
#[derive(Default)]
pub struct VecSink(Mutex<Vec<ConnectionRecord>>);

impl ConnectionSink for VecSink {
    fn record(&self, record: ConnectionRecord) {
        self.0.lock().expect("lock").push(record);
    }
}

impl VecSink {
    /// Waits until at least `n` records arrived; returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<ConnectionRecord> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let records = self.0.lock().expect("lock").clone();
            if records.len() >= n || tokio::time::Instant::now() > deadline {
                assert!(records.len() >= n, "expected {n} records, got {records:#?}");
                return records;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A proxy with upstream servers behind it.
pub struct Fixture {
    pub proxy: Proxy,
    pub policy: Arc<Policy>,
    pub sink: Arc<VecSink>,
    pub upstream_ca: String,
    pub api_tls: Upstream,
    pub api_http: Upstream,
    pub evil_tls: Upstream,
    pub evil_http: Upstream,
    pub raw: Upstream,
    /// Answers `101` and echoes, on the API's address.
    pub ws: Upstream,
    /// The same over TLS.
    pub ws_tls: Upstream,
    /// Reflects requests back over TLS ([`reflector`]), on the API's address.
    pub reflect: Upstream,
    /// The echo server over TLS that makes clients retry their hello, on the API's address.
    pub retry_tls: Upstream,
    /// Answers with a HelloRetryRequest, records the rest ([`hello_retry_server`]), on the API's address.
    pub hello_retry: Upstream,
}

impl Fixture {
    pub async fn start() -> Fixture {
        Fixture::with_intercept(None).await
    }

    pub async fn with_intercept(intercept: Option<Arc<dyn Intercept>>) -> Fixture {
        Fixture::with(intercept, |_| {}).await
    }

    /// A fixture whose proxy's limits `limits` adjusts.
    pub async fn with(intercept: Option<Arc<dyn Intercept>>, limits: impl FnOnce(&mut Limits)) -> Fixture {
        let ca = TestCa::new();
        let tls = ca.server_config(&CERT_NAMES);
        let api_tls = Upstream::http(API_IP, Some(Arc::clone(&tls))).await;
        let api_http = Upstream::http(API_IP, None).await;
        let reflect = reflector(API_IP, Arc::clone(&tls)).await;
        let retry_tls = Upstream::http(API_IP, Some(ca.retrying_server_config(&CERT_NAMES))).await;
        let hello_retry = hello_retry_server(API_IP).await;
        let evil_tls = Upstream::http(EVIL_IP, Some(Arc::clone(&tls))).await;
        let evil_http = Upstream::http(EVIL_IP, None).await;
        let raw = Upstream::raw_server(RAW_IP).await;
        let ws = Upstream::websocket(API_IP, None).await;
        let ws_tls = Upstream::websocket(API_IP, Some(Arc::clone(&tls))).await;
        let resolver = StaticResolver::new()
            .with(API, [IpAddr::from(API_IP)])
            .with("a.example.test", [IpAddr::from(API_IP)])
            .with("a.b.example.test", [IpAddr::from(API_IP)])
            .with("rebind.example.test", [IpAddr::from(API_IP)])
            .with(EVIL, [IpAddr::from(EVIL_IP)])
            .with(RAW, [IpAddr::from(RAW_IP)]);
        let policy = Arc::new(Policy::new(Preset::DenyAll, &[]));
        let sink = Arc::new(VecSink::default());
        let proxy_ca = Arc::new(CertificateAuthority::generate().expect("proxy CA"));
        let mut config = ProxyConfig::new(Arc::clone(&policy), proxy_ca, Arc::clone(&sink) as Arc<dyn ConnectionSink>);
        config.resolver = Arc::new(resolver);
        config.intercept = intercept;
        config.extra_roots_pem = vec![ca.pem.clone()];
        config.limits.first_byte_timeout = Duration::from_millis(300);
        limits(&mut config.limits);
        let proxy = Proxy::new(config).expect("proxy");
        Fixture {
            proxy,
            policy,
            sink,
            upstream_ca: ca.pem,
            api_tls,
            api_http,
            evil_tls,
            evil_http,
            raw,
            ws,
            ws_tls,
            reflect,
            retry_tls,
            hello_retry,
        }
    }

    /// Replaces the rules (one per line) on top of `preset`.
    pub fn rules(&self, preset: Preset, text: &str) {
        let rules: Vec<Rule> =
            text.lines().filter(|l| !l.trim().is_empty()).map(|l| l.parse().expect("rule")).collect();
        self.policy.update(preset, &rules);
    }

    /// A connection to the explicit proxy.
    pub fn client(&self) -> UnixStream {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let proxy = self.proxy.clone();
        tokio::spawn(async move { proxy.serve(theirs, SANDBOX).await });
        ours
    }

    /// A transparently redirected connection.
    pub fn transparent(&self, original_dst: SocketAddr, hint: Option<&str>) -> UnixStream {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let proxy = self.proxy.clone();
        let hint = hint.map(str::to_string);
        tokio::spawn(async move { proxy.serve_transparent(theirs, SANDBOX, original_dst, hint).await });
        ours
    }
}

/// An HTTP response as the client saw it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Reads a whole response up to end of stream (requests say `Connection: close`).
pub async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> Response {
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut all)).await.expect("response in time").ok();
    parse_response(&all)
}

pub fn parse_response(all: &[u8]) -> Response {
    let text = String::from_utf8_lossy(all).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = match head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        true => dechunk(body),
        false => body.to_string(),
    };
    Response { status, head: head.to_string(), body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size, 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Reads exactly `n` bytes, within the test's patience.
pub async fn read_n<S: AsyncRead + Unpin>(stream: &mut S, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(WAIT, stream.read_exact(&mut buf)).await.expect("bytes in time").expect("read");
    buf
}

/// Reads until the proxy closes, within the test's patience.
pub async fn read_rest<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await.expect("closed in time");
    rest
}

/// Reads one response framed by `Content-Length`, leaving the connection open.
pub async fn read_one<S: AsyncRead + Unpin>(stream: &mut S) -> Response {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.extend(read_n(stream, 1).await);
    }
    let response = parse_response(&head);
    let length = response.head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
    });
    let body = read_n(stream, length.expect("a Content-Length")).await;
    Response { body: String::from_utf8_lossy(&body).into_owned(), ..response }
}

/// Sends raw bytes and reads the response to the end.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, request: &str) -> Response {
    stream.write_all(request.as_bytes()).await.expect("write");
    read_response(stream).await
}

/// Sends CONNECT and reads the response head (the whole response if not 200).
pub async fn connect(stream: &mut UnixStream, target: &str) -> Response {
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(WAIT, stream.read(&mut byte)).await.expect("head in time") {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let mut response = parse_response(&head);
    if response.status != 200 {
        response.body = read_response(stream).await.head;
    }
    response
}

/// A TLS client over `stream` trusting only `roots_pem`; `name` may be an IP (no SNI).
pub async fn tls<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    name: &str,
    roots_pem: &str,
) -> std::io::Result<TlsStream<S>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots.add(cert.expect("pem")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(name.to_string()).expect("server name");
    tokio::time::timeout(WAIT, TlsConnector::from(Arc::new(config)).connect(name, stream))
        .await
        .expect("handshake in time")
}

/// `GET path` with `Connection: close` and extra header lines.
pub fn get(target: &str, host: &str, extra: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
}
