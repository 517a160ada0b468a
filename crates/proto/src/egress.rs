//! The guest's egress channels: which vsock ports the host serves, what the
//! agent learns at boot, and the one-line header of a redirected connection.
//!
//! The guest has no network device to the outside. Everything it sends leaves
//! through these host vsock ports (CID 2), each answered by the host's policy
//! proxy:
//!
//! | port | what |
//! |---|---|
//! | [`PROXY_PORT`] | the explicit HTTP/CONNECT proxy (`gateway.moat.internal:3128` inside) |
//! | [`TRANSPARENT_PORT`] | any other outbound TCP connection, redirected inside the guest; starts with a [`TransparentHeader`] |
//! | [`DNS_PORT`] | DNS questions, DNS-over-TCP framing (2-byte length + message) |
//! | [`CONFIG_PORT`] | one JSON [`GuestNetConfig`], read by the agent at boot |

use std::net::{Ipv4Addr, SocketAddrV4};

use serde::{Deserialize, Serialize};

/// Host vsock port of the explicit HTTP/CONNECT proxy.
pub const PROXY_PORT: u32 = 3128;
/// Host vsock port for transparently redirected TCP connections.
pub const TRANSPARENT_PORT: u32 = 3129;
/// Host vsock port answering DNS (TCP framing).
pub const DNS_PORT: u32 = 53;
/// Host vsock port serving the boot-time [`GuestNetConfig`].
pub const CONFIG_PORT: u32 = 1026;
/// Largest [`GuestNetConfig`] document the agent reads.
pub const MAX_CONFIG: usize = 256 * 1024;

/// The gateway's name inside the guest.
pub const GATEWAY_NAME: &str = "gateway.moat.internal";
/// The gateway's address inside the guest (on the `moat0` dummy device).
pub const GATEWAY_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The port the explicit proxy listens on inside the guest.
pub const GUEST_PROXY_PORT: u16 = 3128;
/// The port redirected connections land on inside the guest.
pub const GUEST_TRANSPARENT_PORT: u16 = 3129;

/// What the host tells the agent at boot about the way out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNetConfig {
    /// The installation's proxy CA certificate (PEM), trusted system-wide in the guest.
    pub ca_pem: Option<String>,
    /// Extra environment for every process (proxy variables, CA bundle paths).
    pub env: Vec<(String, String)>,
    /// Files to write in the home of the `agent` user (e.g. a credential
    /// placeholder in a tool's config), owned by `agent`, mode 0600.
    #[serde(default)]
    pub home_files: Vec<HomeFile>,
}

/// One file under `/home/agent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeFile {
    /// Path relative to the home folder; no `..`, not absolute.
    pub path: String,
    /// Its content.
    pub content: String,
}

impl HomeFile {
    /// True if `path` stays inside the home folder (relative, no `..` or empty parts).
    pub fn is_safe(&self) -> bool {
        !self.path.is_empty()
            && !self.path.starts_with('/')
            && self.path.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
    }
}

/// The first line of a transparently redirected connection: where the guest
/// process meant to connect (`MOAT-DST 198.18.0.7:443\n`). IPv4 only: the guest
/// has no IPv6 route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransparentHeader {
    /// The original destination.
    pub dst: SocketAddrV4,
}

/// Longest header line, newline included.
pub const MAX_HEADER: usize = 64;

impl TransparentHeader {
    /// The header line, newline included.
    pub fn encode(&self) -> String {
        format!("MOAT-DST {}\n", self.dst)
    }

    /// Parses one header line (with or without its newline). `None` if malformed.
    pub fn parse(line: &[u8]) -> Option<TransparentHeader> {
        if line.len() > MAX_HEADER {
            return None;
        }
        let text = std::str::from_utf8(line).ok()?;
        let text = text.strip_suffix('\n').unwrap_or(text);
        let dst = text.strip_prefix("MOAT-DST ")?.parse().ok()?;
        Some(TransparentHeader { dst })
    }
}

/// The environment every guest process gets so proxy-aware clients use the
/// gateway and trust the installation's CA (when there is one).
pub fn proxy_env(with_ca: bool) -> Vec<(String, String)> {
    let proxy = format!("http://{GATEWAY_NAME}:{GUEST_PROXY_PORT}");
    let no_proxy = format!("localhost,127.0.0.1,::1,{GATEWAY_NAME}");
    let mut env = Vec::new();
    for name in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"] {
        env.push((name.to_string(), proxy.clone()));
    }
    for name in ["no_proxy", "NO_PROXY"] {
        env.push((name.to_string(), no_proxy.clone()));
    }
    if with_ca {
        let bundle = "/etc/ssl/certs/ca-certificates.crt";
        for name in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "GIT_SSL_CAINFO", "PIP_CERT", "CURL_CA_BUNDLE"] {
            env.push((name.to_string(), bundle.to_string()));
        }
        env.push(("NODE_EXTRA_CA_CERTS".to_string(), CA_PATH.to_string()));
    }
    env
}

/// Where the agent writes the installation's CA certificate inside the guest.
pub const CA_PATH: &str = "/usr/local/share/ca-certificates/moat-egress.crt";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_garbage() {
        let h = TransparentHeader { dst: "198.18.0.7:443".parse().unwrap() };
        assert_eq!(h.encode(), "MOAT-DST 198.18.0.7:443\n");
        assert_eq!(TransparentHeader::parse(h.encode().as_bytes()), Some(h));
        for bad in [&b"MOAT-DST example.com:443\n"[..], b"GET / HTTP/1.1\r\n", b"MOAT-DST 1.2.3.4\n", b"", &[0xff; 10]]
        {
            assert_eq!(TransparentHeader::parse(bad), None, "{bad:?}");
        }
        assert_eq!(TransparentHeader::parse(&[b'M'; MAX_HEADER + 1]), None);
    }

    #[test]
    fn home_files_stay_in_the_home() {
        let f = |p: &str| HomeFile { path: p.into(), content: String::new() };
        assert!(f(".config/gh/hosts.yml").is_safe());
        for bad in ["", "/etc/passwd", "../root/x", ".config/../../x", "a//b", "./a"] {
            assert!(!f(bad).is_safe(), "{bad}");
        }
    }

    #[test]
    fn proxy_env_points_at_the_gateway_and_the_ca() {
        let env = proxy_env(true);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("https_proxy"), Some("http://gateway.moat.internal:3128"));
        assert!(get("NO_PROXY").unwrap().contains("gateway.moat.internal"));
        assert_eq!(get("NODE_EXTRA_CA_CERTS"), Some(CA_PATH));
        assert!(proxy_env(false).iter().all(|(k, _)| k != "SSL_CERT_FILE"));
    }
}
