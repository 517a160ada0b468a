//! Host names: validation, normalization and the patterns rules use.
//!
//! Names are ASCII and case-insensitive; a trailing dot is ignored. Non-ASCII
//! (Unicode) names are rejected rather than converted: write internationalized
//! names in their punycode form (`xn--bcher-kva.de`), which is what DNS and the
//! TLS SNI carry anyway, so a rule can never silently differ from the name on
//! the wire.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// The longest host name DNS allows, without the trailing dot.
pub const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// What is wrong with a host name (or the host part of a rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameProblem {
    /// Contains a non-ASCII character.
    NonAscii,
    /// Contains a character that host names cannot contain.
    BadChar(char),
    /// Two dots in a row, or a leading dot.
    EmptyLabel,
    /// A label longer than 63 characters.
    LabelTooLong,
    /// More than 253 characters.
    NameTooLong,
    /// A label starts or ends with `-`.
    HyphenAtEdge,
    /// Ends in a numeric label, like an IP address, but is not a valid one.
    NotAnAddress,
    /// `*` or `**` somewhere other than as the whole leftmost label.
    MisplacedWildcard,
    /// `*` alone.
    BareStar,
    /// Nothing at all.
    Empty,
    /// `**.` or `*.` with nothing after the dot.
    DanglingWildcard,
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameProblem::NonAscii => {
                f.write_str("host names must be ASCII; write internationalized names in punycode (xn--...)")
            }
            NameProblem::BadChar(' ') => f.write_str("host names cannot contain spaces"),
            NameProblem::BadChar(c) => write!(f, "host names cannot contain {c:?}"),
            NameProblem::EmptyLabel => f.write_str("empty label (two dots in a row or a leading dot)"),
            NameProblem::LabelTooLong => f.write_str("a label is longer than 63 characters"),
            NameProblem::NameTooLong => f.write_str("the name is longer than 253 characters"),
            NameProblem::HyphenAtEdge => f.write_str("a label starts or ends with '-'"),
            NameProblem::NotAnAddress => f.write_str("looks like an IP address but is not a valid one"),
            NameProblem::MisplacedWildcard => {
                f.write_str("'*' and '**' may only appear as the whole leftmost label (*.example.com, **.example.com)")
            }
            NameProblem::BareStar => {
                f.write_str("'*' alone is not a pattern; use '**' for every host or '*.example.com'")
            }
            NameProblem::Empty => f.write_str("the host is empty"),
            NameProblem::DanglingWildcard => f.write_str(
                "'**.' names no domain; write '**' for every host or '**.example.com' for a domain's subdomains",
            ),
        }
    }
}

/// Checks a normalized (lowercase, no trailing dot) name without wildcards.
pub(crate) fn check_name(name: &str) -> Result<(), NameProblem> {
    if name.is_empty() {
        return Err(NameProblem::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameProblem::NameTooLong);
    }
    let mut last = "";
    for label in name.split('.') {
        if label.is_empty() {
            return Err(NameProblem::EmptyLabel);
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(NameProblem::LabelTooLong);
        }
        if let Some(c) =
            label.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
        {
            return Err(match c {
                '*' => NameProblem::MisplacedWildcard,
                c if !c.is_ascii() => NameProblem::NonAscii,
                c => NameProblem::BadChar(c),
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(NameProblem::HyphenAtEdge);
        }
        last = label;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NameProblem::NotAnAddress);
    }
    Ok(())
}

/// The host part of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// `example.com`: that name only.
    Exact(Box<str>),
    /// `*.example.com`: exactly one more label (`a.example.com`), not
    /// `example.com` and not `a.b.example.com`. Holds `example.com`.
    OneLabel(Box<str>),
    /// `**.example.com`: one or more labels (`a.example.com`,
    /// `a.b.example.com`), not `example.com` itself. Holds `example.com`.
    AnyDepth(Box<str>),
    /// `**`: every host name and every IP address.
    Everything,
}

impl HostPattern {
    /// Parses a host pattern; case-insensitive, a trailing dot is ignored.
    pub fn parse(input: &str) -> Result<HostPattern, NameProblem> {
        if !input.is_ascii() {
            return Err(NameProblem::NonAscii);
        }
        let lower = input.to_ascii_lowercase();
        if lower == "**." || lower == "*." {
            // Not "every host" spelled with a trailing dot: a domain is missing.
            return Err(NameProblem::DanglingWildcard);
        }
        let s = lower.strip_suffix('.').unwrap_or(&lower);
        let (make, rest): (fn(Box<str>) -> HostPattern, &str) = match s {
            "**" => return Ok(HostPattern::Everything),
            "*" => return Err(NameProblem::BareStar),
            _ => match (s.strip_prefix("**."), s.strip_prefix("*.")) {
                (Some(rest), _) => (HostPattern::AnyDepth, rest),
                (None, Some(rest)) => (HostPattern::OneLabel, rest),
                (None, None) => (HostPattern::Exact, s),
            },
        };
        check_name(rest)?;
        Ok(make(rest.into()))
    }

    /// True if the pattern covers `name` (a valid, lowercase name without
    /// trailing dot). The compiled policy looks names up in its index
    /// instead; this is for the few rules kept in a list.
    pub fn matches(&self, name: &str) -> bool {
        let under = |suffix: &str| {
            name.len() > suffix.len() + 1
                && name.ends_with(suffix)
                && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
        };
        match self {
            HostPattern::Exact(n) => **n == *name,
            HostPattern::OneLabel(s) => under(s) && !name[..name.len() - s.len() - 1].contains('.'),
            HostPattern::AnyDepth(s) => under(s),
            HostPattern::Everything => true,
        }
    }

    /// True if the exact name `localhost` (which also names the loopback addresses).
    pub fn is_localhost(&self) -> bool {
        matches!(self, HostPattern::Exact(n) if &**n == "localhost")
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(n) => f.write_str(n),
            HostPattern::OneLabel(n) => write!(f, "*.{n}"),
            HostPattern::AnyDepth(n) => write!(f, "**.{n}"),
            HostPattern::Everything => f.write_str("**"),
        }
    }
}

/// A request's destination after normalization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    /// A valid, lowercase host name without trailing dot.
    Name(&'a str),
    /// An IP literal (`1.2.3.4`, `::1`, `[::1]`).
    Ip(IpAddr),
}

/// Normalizes a host as a client sent it, without allocating: lowercase is
/// written into `buf`. `None` if it is neither an IP literal nor a valid name.
/// The guest's name for the host machine itself: decided (and resolved) as
/// `localhost`, so `allow network localhost:8080` is how a user lets the agent
/// reach `http://host.moat.internal:8080`.
pub const HOST_ALIAS: &str = "host.moat.internal";

pub(crate) fn parse_target<'b>(host: &str, buf: &'b mut [u8; MAX_NAME_LEN]) -> Option<Target<'b>> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(|ip| Target::Ip(IpAddr::V6(ip)));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(Target::Ip(ip));
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    let out = buf.get_mut(..host.len())?;
    for (o, b) in out.iter_mut().zip(host.bytes()) {
        *o = b.to_ascii_lowercase();
    }
    let name = std::str::from_utf8(out).ok()?;
    check_name(name).ok()?;
    if name == HOST_ALIAS {
        return Some(Target::Name("localhost"));
    }
    Some(Target::Name(name))
}
