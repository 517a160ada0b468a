//! Request rules: `allow|deny request METHODS HOST[:PORT][/PATH]`, what a
//! sandbox may do with a service, not only whether it may reach it.
//!
//! `deny request DELETE api.github.com/**` refuses every `DELETE` to GitHub's
//! API; `allow request GET,HEAD api.github.com/repos/**` makes the listed
//! requests the only ones that reach that host (once any `allow request`
//! names a host, a request to it that no such rule covers is denied). Deny
//! wins. Request rules filter what network rules already let through; they
//! never open a host. They see requests the proxy reads: plain HTTP, and TLS
//! it terminates — a host a request rule names is intercepted for that
//! reason alone, so the rule can't be tunnelled around.
//!
//! Methods are a comma-separated list or `*`, compared without case. The
//! path is matched by segments: a literal segment, `*` (exactly one
//! segment) or `**` (any number, none included); no path means every path.
//! The query is not matched. A request whose path could be read two ways
//! (`..` or `.` segments, empty segments, an encoded `/` or `\`) is refused on
//! hosts with request rules; other percent-escapes are decoded before matching.

use std::fmt;

use super::host::{HostPattern, NameProblem};
use super::rule::Ports;

/// The most methods one rule may list.
const MAX_METHODS: usize = 16;

/// Which methods.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Methods {
    /// `*`: every method.
    Any,
    /// These (uppercase).
    Listed(Vec<String>),
}

impl Methods {
    fn matches(&self, method: &str) -> bool {
        match self {
            Methods::Any => true,
            Methods::Listed(list) => list.iter().any(|m| m.eq_ignore_ascii_case(method)),
        }
    }
}

/// One path segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Segment {
    Literal(String),
    /// `*`
    One,
    /// `**`
    Any,
}

/// A path pattern; empty means every path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathPattern(Vec<Segment>);

impl PathPattern {
    fn matches(&self, segments: &[&str]) -> bool {
        self.0.is_empty() || match_from(&self.0, segments)
    }
}

fn match_from(pattern: &[Segment], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((Segment::Any, rest)) => (0..=path.len()).any(|skip| match_from(rest, &path[skip..])),
        Some((Segment::One, rest)) => !path.is_empty() && match_from(rest, &path[1..]),
        Some((Segment::Literal(s), rest)) => path.first() == Some(&s.as_str()) && match_from(rest, &path[1..]),
    }
}

/// What a request rule matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestTarget {
    /// Which methods.
    pub methods: Methods,
    /// Which hosts.
    pub host: HostPattern,
    /// Which ports (none written: every port).
    pub ports: Ports,
    /// Which paths.
    pub path: PathPattern,
}

/// What is wrong with a request rule's target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestProblem {
    /// The methods are not `*` or HTTP method tokens.
    #[error("{0:?} is not '*' or a comma-separated list of HTTP methods like GET,POST")]
    Methods(String),
    /// The host part is invalid.
    #[error("{0}")]
    Host(NameProblem),
    /// Request rules name hosts, not addresses.
    #[error("request rules name hosts (api.example.com, **.example.com), not IP addresses")]
    Address,
    /// The port is not a number or `*`.
    #[error("port {0:?} is not '*' or a number from 1 to 65535")]
    Port(String),
    /// The path pattern is invalid.
    #[error("invalid path {0:?}: write segments separated by '/', each literal, '*' (one) or '**' (any number)")]
    Path(String),
}

impl RequestTarget {
    /// Parses `METHODS` and `HOST[:PORT][/PATH]`.
    pub fn parse(methods: &str, target: &str) -> Result<RequestTarget, RequestProblem> {
        let methods = parse_methods(methods)?;
        let (authority, path) = match target.find('/') {
            Some(i) => (&target[..i], &target[i..]),
            None => (target, ""),
        };
        let (host, ports) = match authority.rsplit_once(':') {
            Some((h, "*")) => (h, Ports::Any),
            Some((h, p)) => match p.parse::<u16>() {
                Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => (h, Ports::One(n)),
                _ => return Err(RequestProblem::Port(p.to_string())),
            },
            None => (authority, Ports::Default),
        };
        if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
            return Err(RequestProblem::Address);
        }
        let host = HostPattern::parse(host).map_err(RequestProblem::Host)?;
        Ok(RequestTarget { methods, host, ports, path: parse_path(path)? })
    }

    /// True if the rule is about `name` on `port` (methods and path aside).
    pub(crate) fn covers_host(&self, name: &str, port: u16) -> bool {
        let port_ok = match self.ports {
            Ports::One(p) => p == port,
            Ports::Any | Ports::Default => true,
        };
        port_ok && self.host.matches(name)
    }

    /// True if `method` and the normalized `segments` match.
    pub(crate) fn covers_request(&self, method: &str, segments: &[&str]) -> bool {
        self.methods.matches(method) && self.path.matches(segments)
    }
}

fn parse_methods(s: &str) -> Result<Methods, RequestProblem> {
    if s == "*" {
        return Ok(Methods::Any);
    }
    let list: Vec<&str> = s.split(',').collect();
    let token = |m: &&str| !m.is_empty() && m.len() <= 32 && m.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-');
    if list.len() > MAX_METHODS || !list.iter().all(token) {
        return Err(RequestProblem::Methods(s.to_string()));
    }
    Ok(Methods::Listed(list.iter().map(|m| m.to_ascii_uppercase()).collect()))
}

fn parse_path(path: &str) -> Result<PathPattern, RequestProblem> {
    if path.is_empty() {
        return Ok(PathPattern(Vec::new()));
    }
    let bad = || RequestProblem::Path(path.to_string());
    let segments = path[1..].split('/').map(|s| match s {
        "*" => Ok(Segment::One),
        "**" => Ok(Segment::Any),
        "." | ".." => Err(bad()),
        s if s.contains('*') || s.bytes().any(|b| !b.is_ascii_graphic() || b"?#%\\".contains(&b)) => Err(bad()),
        s => Ok(Segment::Literal(s.to_string())),
    });
    segments.collect::<Result<Vec<_>, _>>().map(PathPattern)
}

/// The segments of a request's path (query dropped, escapes decoded), or
/// why it can be read more than one way.
pub(crate) fn path_segments(target: &str) -> Result<Vec<String>, &'static str> {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let Some(rest) = path.strip_prefix('/') else { return Err("the path does not start with '/'") };
    let mut out = Vec::new();
    for raw in rest.split('/') {
        let segment = decode(raw)?;
        match segment.as_str() {
            "." | ".." => return Err("the path has '.' or '..' segments"),
            "" if out.len() + 1 < rest.split('/').count() => return Err("the path has an empty segment ('//')"),
            _ => out.push(segment),
        }
    }
    Ok(out)
}

/// Percent-decodes one segment; an encoded `/` or `\` (or a bad escape) is refused.
fn decode(raw: &str) -> Result<String, &'static str> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or("the path has a bad '%' escape")?;
                if byte == b'/' || byte == b'\\' || byte == b'%' {
                    return Err("the path has an encoded '/', '\\' or '%'");
                }
                out.push(byte);
                i += 3;
            }
            b'\\' => return Err("the path has a '\\'"),
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "the path is not UTF-8 once decoded")
}

impl fmt::Display for RequestTarget {
    /// `DELETE api.github.com/repos/**`, `GET,HEAD **.example.com:8080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.methods {
            Methods::Any => f.write_str("*")?,
            Methods::Listed(list) => f.write_str(&list.join(","))?,
        }
        write!(f, " {}{}", self.host, self.ports)?;
        for segment in &self.path.0 {
            match segment {
                Segment::Literal(s) => write!(f, "/{s}")?,
                Segment::One => f.write_str("/*")?,
                Segment::Any => f.write_str("/**")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(methods: &str, t: &str) -> RequestTarget {
        RequestTarget::parse(methods, t).unwrap_or_else(|e| panic!("{methods} {t}: {e}"))
    }

    fn hits(rule: &RequestTarget, method: &str, path: &str) -> bool {
        let segments = path_segments(path).unwrap();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        rule.covers_request(method, &segments)
    }

    #[test]
    fn patterns_match_by_method_and_segment() {
        let del = target("DELETE", "api.github.com/repos/**");
        assert!(hits(&del, "DELETE", "/repos/a/b"));
        assert!(hits(&del, "delete", "/repos"), "'**' matches no segment too; methods ignore case");
        assert!(!hits(&del, "GET", "/repos/a"));
        assert!(!hits(&del, "DELETE", "/user"));
        let one = target("GET,HEAD", "api.github.com/repos/*/issues");
        assert!(hits(&one, "HEAD", "/repos/moat/issues?state=open"));
        assert!(!hits(&one, "GET", "/repos/a/b/issues"));
        assert!(hits(&target("*", "x.test"), "PATCH", "/anything/at/all"));
        assert!(hits(&del, "DELETE", "/repos/%61"), "escapes are decoded before matching");
        assert!(hits(&target("DELETE", "x.test/repos/a"), "DELETE", "/re%70os/a"));
    }

    #[test]
    fn a_path_that_reads_two_ways_is_refused() {
        for path in ["/repos/../user", "/./repos", "/repos//a", "/repos/a%2Fb", "/a%5Cb", "/a\\b", "/a%zz", "/a%25"] {
            assert!(path_segments(path).is_err(), "{path}");
        }
        assert_eq!(path_segments("/repos/a/").unwrap(), ["repos", "a", ""], "a trailing slash is a segment");
        assert_eq!(path_segments("/").unwrap(), [""]);
    }

    #[test]
    fn bad_targets_say_what_is_wrong_and_good_ones_print_as_written() {
        for (m, t) in [
            ("DEL ETE", "a.test"),
            ("", "a.test"),
            ("GET", "10.0.0.1/x"),
            ("GET", "a.test:0"),
            ("GET", "a.test/a*"),
            ("GET", "a.test/../x"),
            ("GET", "a.test/a?b"),
        ] {
            assert!(RequestTarget::parse(m, t).is_err(), "{m} {t}");
        }
        for (m, t) in [("DELETE", "api.github.com/repos/**"), ("GET,HEAD", "**.example.com:8080/*/x"), ("*", "a.test")]
        {
            assert_eq!(target(m, t).to_string(), format!("{m} {t}"));
        }
        assert_eq!(target("get,Post", "A.test").to_string(), "GET,POST a.test");
    }
}
