//! Where a request says it is going: `host:port` authorities and HTTP
//! request targets, parsed strictly (the client is the guest).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// A host and optional port, normalized: a name is lowercase without a
/// trailing dot; an IPv6 literal is kept without brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authority {
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
}

impl Authority {
    /// Parses `host`, `host:port`, `[v6]` or `[v6]:port`. No user info, no
    /// characters outside letters, digits, `.`, `-` and `_` in a name.
    pub(crate) fn parse(s: &str) -> Option<Authority> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (inner, after) = rest.split_once(']')?;
            let ip: Ipv6Addr = inner.parse().ok()?;
            let port = match after {
                "" => None,
                _ => Some(parse_port(after.strip_prefix(':')?)?),
            };
            (ip.to_string(), port)
        } else {
            let (host, port) = match s.split_once(':') {
                Some((h, p)) => (h, Some(parse_port(p)?)),
                None => (s, None),
            };
            let host = host.strip_suffix('.').unwrap_or(host);
            let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_';
            if host.is_empty() || host.len() > 253 || !host.bytes().all(ok) {
                return None;
            }
            (host.to_ascii_lowercase(), port)
        };
        Some(Authority { host, port })
    }

    /// The port, or `default` if none was written.
    pub(crate) fn port_or(&self, default: u16) -> u16 {
        self.port.unwrap_or(default)
    }
}

/// Prints `host:port`, bracketing IPv6 literals.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostPort<'a>(pub(crate) &'a str, pub(crate) u16);

impl fmt::Display for HostPort<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.contains(':') {
            true => write!(f, "[{}]:{}", self.0, self.1),
            false => write!(f, "{}:{}", self.0, self.1),
        }
    }
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&p| p != 0)
}

/// The IP address `host` spells, if it is an IP literal.
pub(crate) fn ip_literal(host: &str) -> Option<IpAddr> {
    host.parse().ok()
}

/// An absolute-form target, `http://authority/path?query`, split into the
/// authority and the origin-form path to send upstream.
pub(crate) fn absolute_http(target: &str) -> Result<(Authority, String), &'static str> {
    let scheme_end = target.find("://").ok_or("a proxy request needs an absolute URI (http://host/path)")?;
    let scheme = &target[..scheme_end];
    if scheme.eq_ignore_ascii_case("https") {
        return Err("https:// URIs go through CONNECT, not a plain proxy request");
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err("only http:// URIs can be proxied");
    }
    let rest = &target[scheme_end + 3..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = Authority::parse(&rest[..end]).ok_or("the URI's host is not a valid host[:port]")?;
    let path = match &rest[end..] {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    check_path(&path)?;
    Ok((authority, path))
}

/// Checks an origin-form target (`/path?query`).
pub(crate) fn check_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("the request target must be a path starting with '/'");
    }
    if path.contains('#') {
        return Err("the request target contains a fragment");
    }
    Ok(())
}

/// True if a `Host` header value names the same host and port as `authority`
/// (ports compared after applying `default`).
pub(crate) fn host_matches(host_header: &str, authority: &Authority, default: u16) -> bool {
    Authority::parse(host_header)
        .is_some_and(|h| h.host == authority.host && h.port_or(default) == authority.port_or(default))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        let a = Authority::parse("API.Example.test.:8443").expect("parses");
        assert_eq!((a.host.as_str(), a.port), ("api.example.test", Some(8443)));
        let a = Authority::parse("[::1]:443").expect("parses");
        assert_eq!((a.host.as_str(), a.port), ("::1", Some(443)));
        for bad in ["", ":80", "a:0", "a:65536", "a:+1", "user@host", "a b", "[::1", "[1.2.3.4]", "a:1:2", "é.test"] {
            assert_eq!(Authority::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn absolute_targets() {
        let (a, p) = absolute_http("http://x.test:81/a?b").expect("parses");
        assert_eq!((a.host.as_str(), a.port, p.as_str()), ("x.test", Some(81), "/a?b"));
        assert_eq!(absolute_http("HTTP://x.test?q").expect("parses").1, "/?q");
        assert_eq!(absolute_http("http://x.test").expect("parses").1, "/");
        for bad in ["/path", "https://x.test/", "ftp://x.test/", "http://u@x.test/", "http://x.test/#f"] {
            assert!(absolute_http(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_header_matching_applies_default_ports() {
        let a = Authority::parse("x.test").expect("parses");
        assert!(host_matches("X.test:80", &a, 80));
        assert!(!host_matches("x.test:8080", &a, 80));
        assert!(!host_matches("y.test", &a, 80));
        assert_eq!(HostPort("::1", 443).to_string(), "[::1]:443");
    }
}
