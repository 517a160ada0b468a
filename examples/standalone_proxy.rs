//! `moat-netproxy` on its own: the policy proxy for a tool that has nothing
//! to do with VMs. [`serve`] takes a listener and a policy and answers every
//! client as an HTTP/CONNECT proxy, deciding each connection and handing a
//! record of it to a sink; the `proxy` example wraps it in a command.

use std::io;
use std::sync::Arc;

use moat_netproxy::log::{ConnectionRecord, ConnectionSink};
use moat_netproxy::proxy::{CertificateAuthority, Proxy, ProxyConfig, StaticResolver};
use moat_netproxy::{Policy, Preset, Rule};
use tokio::net::TcpListener;

/// What the proxy enforces.
#[derive(Debug, Clone)]
pub struct Options {
    /// What is allowed when no rule says otherwise.
    pub preset: Preset,
    /// `allow|deny network …` rules on top of the preset.
    pub rules: Vec<Rule>,
    /// `/etc/hosts`-format pins the proxy resolves before asking the host's
    /// resolver (a rule must still name a loopback or private address).
    pub hosts: String,
}

/// The policy, live: change it with [`Policy::update`] while [`serve`] runs.
pub fn policy(options: &Options) -> Arc<Policy> {
    Arc::new(Policy::new(options.preset, &options.rules))
}

/// A proxy for `policy` that reports to `sink`, with its own throwaway CA
/// (it intercepts nothing here: no credential injection is configured).
pub fn proxy(
    policy: Arc<Policy>,
    options: &Options,
    sink: Arc<dyn ConnectionSink>,
) -> Result<Proxy, Box<dyn std::error::Error + Send + Sync>> {
    let ca = Arc::new(CertificateAuthority::generate()?);
    let mut config = ProxyConfig::new(policy, ca, sink);
    config.resolver = Arc::new(StaticResolver::from_hosts(&options.hosts).or_system());
    Ok(Proxy::new(config)?)
}

/// Answers every client of `listener` until accepting fails; `client` names
/// them in records.
pub async fn serve(listener: TcpListener, proxy: Proxy, client: &str) -> io::Result<()> {
    loop {
        let (tcp, _) = listener.accept().await?;
        let (proxy, client) = (proxy.clone(), client.to_string());
        tokio::spawn(async move { proxy.serve(tcp, &client).await });
    }
}

/// Prints one line per record on stdout.
#[derive(Debug, Default)]
pub struct PrintSink;

impl ConnectionSink for PrintSink {
    fn record(&self, r: ConnectionRecord) {
        let rule = r.rule.as_deref().unwrap_or("-");
        println!("{:?} {} {}:{} ({rule}) up {} down {}", r.verdict, r.method, r.host, r.port, r.bytes_up, r.bytes_down);
    }
}
