//! Moat's proxy, in process: a loopback listener whose connections go to
//! `Proxy::serve`, with a policy allowing only `bench.test:PORT`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use moat_netproxy::log::{ConnectionRecord, ConnectionSink, LogOptions, SqliteLog};
use moat_netproxy::policy::{Policy, Preset, Rule};
use moat_netproxy::proxy::{CertificateAuthority, Headers, Intercept, Proxy, ProxyConfig, Redaction, StaticResolver};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

use crate::upstream::HOST;

/// Which proxy to build.
#[derive(Debug, Clone, Copy)]
pub enum Variant {
    /// CONNECT tunnels, TLS untouched.
    Tunnel,
    /// CONNECT with TLS terminated and one header added to every request.
    Intercept,
}

/// A running proxy.
pub struct Ours {
    pub addr: SocketAddr,
    /// The CA a client must trust for intercepted connections.
    pub ca_pem: String,
}

/// Drops every record: the proxy's own cost without the log's.
struct NoLog;

impl ConnectionSink for NoLog {
    fn record(&self, _record: ConnectionRecord) {}
}

/// Intercepts `bench.test` and adds one header, as credential injection would.
struct AddHeader {
    /// A 108-byte secret (the length of an Anthropic key) and its placeholder.
    redactions: Vec<Redaction>,
}

impl AddHeader {
    fn new() -> AddHeader {
        let secret = format!("sk-ant-api03-{}", "S".repeat(95));
        let placeholder = format!("sk-ant-api03-{}", "P".repeat(95));
        AddHeader { redactions: vec![Redaction::new(secret.into_bytes(), placeholder.into_bytes())] }
    }
}

impl Intercept for AddHeader {
    fn wants(&self, _sandbox: &str, host: &str, _port: u16) -> bool {
        host == HOST
    }

    fn rewrite(&self, _sandbox: &str, _host: &str, headers: &mut Headers) -> Option<String> {
        headers.set("X-Moat-Bench", b"injected").expect("a valid header");
        None
    }

    /// As the credential hook does: every answer is scrubbed of a secret.
    fn redactions(&self, _sandbox: &str, _host: &str) -> Vec<Redaction> {
        self.redactions.clone()
    }
}

/// The connection log to use.
pub enum Log<'a> {
    None,
    Sqlite(&'a Path),
}

/// Starts a proxy on `rt` that allows `bench.test:upstream_port` (resolved
/// to 127.0.0.1) and trusts `upstream_ca_pem` for its upstream TLS.
/// Returns the SQLite log too, if one was asked for, so the caller can
/// report its drops.
pub fn start(
    rt: &Runtime,
    variant: Variant,
    log: Log<'_>,
    upstream_port: u16,
    upstream_ca_pem: &str,
) -> Result<(Ours, Option<Arc<SqliteLog>>), String> {
    // Loopback is refused unless a rule names the host exactly.
    let rule: Rule = format!("allow network {HOST}:{upstream_port}").parse().map_err(|e| format!("rule: {e}"))?;
    let policy = Arc::new(Policy::new(Preset::DenyAll, &[rule]));
    let ca = Arc::new(CertificateAuthority::generate().map_err(|e| format!("CA: {e}"))?);
    let (sink, sqlite): (Arc<dyn ConnectionSink>, _) = match log {
        Log::None => (Arc::new(NoLog), None),
        Log::Sqlite(path) => {
            // The production defaults: bounded rows and queue, a per-sandbox share and rate.
            let db = Arc::new(SqliteLog::open_with(path, LogOptions::default()).map_err(|e| format!("log: {e}"))?);
            (Arc::clone(&db) as Arc<dyn ConnectionSink>, Some(db))
        }
    };
    let mut config = ProxyConfig::new(policy, ca, sink);
    config.resolver = Arc::new(StaticResolver::new().with(HOST, [IpAddr::V4(Ipv4Addr::LOCALHOST)]));
    config.extra_roots_pem = vec![upstream_ca_pem.to_string()];
    if let Variant::Intercept = variant {
        config.intercept = Some(Arc::new(AddHeader::new()));
    }
    let proxy = Proxy::new(config).map_err(|e| format!("proxy: {e}"))?;
    let ca_pem = proxy.ca_certificate_pem().to_string();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let proxy = proxy.clone();
            tokio::spawn(async move { proxy.serve(tcp, "bench").await });
        }
    });
    Ok((Ours { addr, ca_pem }, sqlite))
}
