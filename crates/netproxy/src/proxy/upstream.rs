//! Reaching the upstream: resolve the name ourselves, check every address
//! against the policy, connect only to an address that passed, and (for
//! intercepted connections) verify the upstream's certificate.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::policy::{CompiledPolicy, Decision, Request};

use super::server::Inner;
use super::target::{ip_literal, HostPort};

/// Why the proxy did not reach the upstream.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Every address the name resolved to is refused by policy.
    Denied(Decision),
    /// The name did not resolve, or no allowed address answered.
    Failed(String),
}

/// A TCP connection to an address the policy allowed.
#[derive(Debug)]
pub(crate) struct Connected {
    pub(crate) tcp: TcpStream,
    pub(crate) ip: IpAddr,
}

impl Inner {
    /// Resolves `req.host` (unless it is an IP literal), keeps the addresses
    /// `policy` allows, and connects to the first that answers. Call only
    /// after `policy.decide(req)` allowed the request.
    pub(crate) async fn connect(&self, policy: &CompiledPolicy, req: &Request<'_>) -> Result<Connected, Refusal> {
        let ips = match ip_literal(req.host) {
            Some(ip) => vec![ip],
            None => match tokio::time::timeout(self.limits.connect_timeout, self.resolver.resolve(req.host)).await {
                Ok(Ok(ips)) if !ips.is_empty() => ips,
                Ok(Ok(_)) => return Err(Refusal::Failed(format!("{} has no addresses", req.host))),
                Ok(Err(e)) => return Err(Refusal::Failed(format!("cannot resolve {}: {e}", req.host))),
                Err(_) => return Err(Refusal::Failed(format!("resolving {} timed out", req.host))),
            },
        };
        let mut first_denial = None;
        let mut allowed = Vec::new();
        for ip in ips {
            let decision = policy.decide_address(req, ip);
            match decision.is_allowed() {
                true => allowed.push(ip),
                false => {
                    first_denial.get_or_insert(decision);
                }
            }
        }
        if allowed.is_empty() {
            return Err(first_denial.map_or_else(|| Refusal::Failed("no address".to_string()), Refusal::Denied));
        }
        let mut last_error = String::new();
        for ip in allowed {
            let addr = SocketAddr::new(ip, req.port);
            match tokio::time::timeout(self.limits.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    return Ok(Connected { tcp, ip });
                }
                Ok(Err(e)) => last_error = format!("cannot connect to {}: {e}", HostPort(&ip.to_string(), req.port)),
                Err(_) => last_error = format!("connecting to {} timed out", HostPort(&ip.to_string(), req.port)),
            }
        }
        Err(Refusal::Failed(last_error))
    }

    /// TLS to `host` over `tcp`, verifying the upstream's certificate for
    /// `host` against the system roots and the configured extra roots.
    pub(crate) async fn tls(&self, tcp: TcpStream, host: &str) -> Result<TlsStream<TcpStream>, String> {
        let name =
            ServerName::try_from(host.to_string()).map_err(|_| format!("{host} is not a valid TLS server name"))?;
        let connector = TlsConnector::from(Arc::clone(&self.tls_client));
        match tokio::time::timeout(self.limits.connect_timeout, connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(e)) => Err(format!("TLS with {host} failed: {e}")),
            Err(_) => Err(format!("TLS with {host} timed out")),
        }
    }
}
