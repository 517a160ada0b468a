//! The load generator, identical for every scenario: TCP to the upstream or
//! to a proxy (then `CONNECT bench.test:PORT`), TLS to `bench.test` offering
//! only `http/1.1`, then sequential keep-alive `GET /` requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::upstream::{BODY_LEN, HOST};

/// A connection failed; the scenario reports it and stops.
pub type Error = String;

/// How a client reaches `bench.test`.
#[derive(Debug, Clone, Copy)]
pub enum Route {
    /// Straight to the upstream.
    Direct(SocketAddr),
    /// Through an explicit proxy, with CONNECT.
    Proxy(SocketAddr),
}

/// One scenario's client: where to connect and which CA to trust.
pub struct Client {
    route: Route,
    port: u16,
    tls: TlsConnector,
    request: Vec<u8>,
}

impl Client {
    /// A client that reaches `bench.test:port` by `route`, trusting only `ca_pem`.
    pub fn new(route: Route, port: u16, ca_pem: &str) -> Result<Client, Error> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.map_err(|e| format!("bad CA PEM: {e}"))?).map_err(|e| format!("bad CA: {e}"))?;
        }
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Every new connection is a full handshake, whoever terminates it.
        config.resumption = rustls::client::Resumption::disabled();
        let request =
            format!("GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nUser-Agent: moat-egress-bench\r\nAccept: */*\r\n\r\n");
        Ok(Client { route, port, tls: TlsConnector::from(Arc::new(config)), request: request.into_bytes() })
    }

    /// Opens a connection ready for requests (tunnel established, TLS done).
    pub async fn open(&self) -> Result<Conn, Error> {
        let addr = match self.route {
            Route::Direct(a) | Route::Proxy(a) => a,
        };
        let mut tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        if let Route::Proxy(_) = self.route {
            let target = format!("{HOST}:{}", self.port);
            let connect = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
            tcp.write_all(connect.as_bytes()).await.map_err(|e| format!("CONNECT: {e}"))?;
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            // Byte by byte, so no byte of the TLS stream is taken for the reply.
            while !head.ends_with(b"\r\n\r\n") {
                match tcp.read(&mut byte).await {
                    Ok(1) if head.len() < 8192 => head.push(byte[0]),
                    Ok(_) => return Err("the proxy closed during CONNECT".into()),
                    Err(e) => return Err(format!("CONNECT: {e}")),
                }
            }
            if !(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200")) {
                return Err(format!("CONNECT refused: {}", String::from_utf8_lossy(&head).trim()));
            }
        }
        let name = ServerName::try_from(HOST).expect("valid name");
        let tls = self.tls.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
        Ok(Conn { tls, buf: Vec::with_capacity(4096) })
    }

    /// Sends `GET /` on `conn` and reads the whole response.
    pub async fn get(&self, conn: &mut Conn) -> Result<(), Error> {
        conn.tls.write_all(&self.request).await.map_err(|e| format!("send: {e}"))?;
        conn.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = conn.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let len = content_length(&conn.buf[..end])?;
                if conn.buf.len() >= end + 4 + len {
                    if conn.buf.len() > end + 4 + len {
                        return Err("more bytes than the response".into());
                    }
                    return Ok(());
                }
            }
            match conn.tls.read(&mut chunk).await {
                Ok(0) => return Err("closed mid-response".into()),
                Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("receive: {e}")),
            }
        }
    }
}

/// An open connection.
pub struct Conn {
    tls: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

fn content_length(head: &[u8]) -> Result<usize, Error> {
    let text = std::str::from_utf8(head).map_err(|_| "response head is not UTF-8")?;
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!("unexpected response: {}", text.lines().next().unwrap_or("")));
    }
    let len = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .ok_or("response without Content-Length")?;
    if len != BODY_LEN {
        return Err(format!("body of {len} bytes, expected {BODY_LEN}"));
    }
    Ok(len)
}

/// What a steady-state run measured.
pub struct Load {
    /// Requests completed per second over the measured window.
    pub rps: f64,
    /// Latency of each request in the window, sorted.
    pub latencies: Vec<Duration>,
    /// Connections the upstream accepted during the run (warm-up included).
    pub upstream_conns: u64,
}

/// `conns` persistent connections, each sending requests back to back for
/// `warmup + measure`; only requests started after the warm-up count.
pub async fn load(client: Arc<Client>, conns: usize, warmup: Duration, measure: Duration) -> Result<Load, Error> {
    let mut opened = Vec::with_capacity(conns);
    for _ in 0..conns {
        opened.push(client.open().await?);
    }
    let start = Instant::now();
    let (counted_from, end) = (start + warmup, start + warmup + measure);
    let mut tasks = Vec::with_capacity(conns);
    for mut conn in opened {
        let client = Arc::clone(&client);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            loop {
                let t = Instant::now();
                if t >= end {
                    return Ok::<_, Error>(latencies);
                }
                client.get(&mut conn).await?;
                if t >= counted_from {
                    latencies.push(t.elapsed());
                }
            }
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.map_err(|e| e.to_string())??);
    }
    let window = Instant::now().saturating_duration_since(counted_from).max(measure);
    latencies.sort_unstable();
    Ok(Load { rps: latencies.len() as f64 / window.as_secs_f64(), latencies, upstream_conns: 0 })
}

/// New connections one after another: open (CONNECT, TLS) and one `GET /`
/// each; returns the sorted times.
pub async fn setup(client: &Client, count: usize) -> Result<Vec<Duration>, Error> {
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        let mut conn = client.open().await?;
        client.get(&mut conn).await?;
        times.push(t.elapsed());
    }
    times.sort_unstable();
    Ok(times)
}

/// The `p`th percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
