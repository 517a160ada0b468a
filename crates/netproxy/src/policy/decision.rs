//! Requests, decisions, and what to type to change a denial.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use super::address::AddressClass;
use super::host::{parse_target, HostPattern, Target, MAX_NAME_LEN};
use super::preset::Preset;
use super::rule::{Action, Ports, Resource, Rule, Scope};
use super::IpNet;

/// A connection a sandbox wants to make, before or after name resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The sandbox's name.
    pub sandbox: &'a str,
    /// The host as the client sent it: a name (any case, optional trailing
    /// dot) or an IP literal (`1.2.3.4`, `::1`, `[::1]`).
    pub host: &'a str,
    /// The destination port.
    pub port: u16,
}

impl<'a> Request<'a> {
    /// A request.
    pub fn new(sandbox: &'a str, host: &'a str, port: u16) -> Request<'a> {
        Request { sandbox, host, port }
    }
}

/// Where a rule came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Added by the user (`moat policy allow|deny …`).
    User,
    /// Part of a preset.
    Preset {
        /// Which preset.
        preset: Preset,
        /// The category within it, e.g. `package-registries`.
        category: &'static str,
    },
}

/// A rule inside a compiled policy, with its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleEntry {
    /// The rule.
    pub rule: Rule,
    /// Where it came from.
    pub origin: Origin,
}

impl fmt::Display for RuleEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::User => write!(f, "rule '{}'", self.rule),
            Origin::Preset { preset, category } => {
                write!(f, "preset {preset} ({category}): '{}'", self.rule)
            }
        }
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Let it through.
    Allow,
    /// Refuse it.
    Deny,
}

/// Why a decision was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A rule matched. For an allow, the most specific allow rule; for a
    /// deny, the most specific deny rule (sandbox rules are named before global).
    Rule(Arc<RuleEntry>),
    /// No rule matched; the preset denies by default.
    Default(Preset),
    /// The address is special and no exact host or IP/CIDR rule names it.
    SpecialAddress(IpAddr, AddressClass),
    /// After resolution: the address is public, the name was already allowed.
    PublicAddress,
    /// The host is neither a valid name nor an IP literal.
    InvalidHost,
    /// `allow request` rules name the host and none matches the request.
    NoRequestRule,
    /// Request rules name the host and the request's path can be read two ways.
    AmbiguousPath(&'static str),
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny.
    pub verdict: Verdict,
    /// Which rule, preset or check decided it.
    pub reason: Reason,
}

impl Decision {
    pub(crate) fn new(verdict: Verdict, reason: Reason) -> Decision {
        Decision { verdict, reason }
    }

    pub(crate) fn by_rule(entry: &Arc<RuleEntry>) -> Decision {
        let verdict = match entry.rule.action {
            Action::Allow => Verdict::Allow,
            Action::Deny => Verdict::Deny,
        };
        Decision::new(verdict, Reason::Rule(Arc::clone(entry)))
    }

    /// True if the connection may proceed.
    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }

    /// For a denial, what would allow `req`; `None` for an allow or an invalid host.
    pub fn remedy(&self, req: &Request<'_>) -> Option<Remedy> {
        if self.is_allowed() || self.reason == Reason::InvalidHost {
            return None;
        }
        if let Reason::NoRequestRule | Reason::AmbiguousPath(_) = self.reason {
            return None;
        }
        if let Reason::Rule(entry) = &self.reason {
            if entry.rule.resource.kind() == "request" {
                return None;
            }
        }
        let mut buf = [0u8; MAX_NAME_LEN];
        let allow = match parse_target(req.host, &mut buf)? {
            Target::Name(name) => Resource::Host {
                pattern: HostPattern::Exact(name.into()),
                ports: match req.port {
                    80 | 443 if name != "localhost" => Ports::Default,
                    p => Ports::One(p),
                },
            },
            Target::Ip(ip) => Resource::Net { net: IpNet::host(ip), ports: Ports::One(req.port) },
        };
        let remove = match &self.reason {
            Reason::Rule(entry) if entry.origin == Origin::User => Some(entry.rule.clone()),
            _ => None,
        };
        Some(Remedy { remove, allow, sandbox: req.sandbox.to_string() })
    }
}

impl fmt::Display for Decision {
    /// One line for the log and the 403 page.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.verdict {
            Verdict::Allow => "allowed",
            Verdict::Deny => "denied",
        };
        match &self.reason {
            Reason::Rule(entry) => write!(f, "{verb} by {entry}"),
            Reason::Default(preset) => {
                write!(f, "{verb}: no rule allows it (preset {preset} denies by default)")
            }
            Reason::SpecialAddress(ip, class) => {
                write!(f, "{verb}: {ip} is {class}; only a rule naming the host or address exactly can allow it")
            }
            Reason::PublicAddress => write!(f, "{verb}: resolved to a public address"),
            Reason::InvalidHost => write!(f, "{verb}: not a valid host name or IP address"),
            Reason::NoRequestRule => {
                write!(f, "{verb}: `allow request` rules name this host and none covers this request")
            }
            Reason::AmbiguousPath(why) => {
                write!(f, "{verb}: request rules name this host and {why}, so the path could be read two ways")
            }
        }
    }
}

/// What to run to allow a denied request: possibly remove the deny rule
/// that matched, then add an allow rule for exactly that host (or address)
/// and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remedy {
    /// The user's deny rule that matched. Removing it is necessary; another
    /// deny rule may also match, which the next denial will name.
    pub remove: Option<Rule>,
    /// The resource to allow.
    pub allow: Resource,
    /// The sandbox that was denied.
    pub sandbox: String,
}

impl Remedy {
    /// Shell commands, scoped to the denied sandbox (`for_sandbox`) or to
    /// every sandbox, e.g. `moat policy allow network api.example.com --sandbox web`.
    pub fn commands(&self, for_sandbox: bool) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(rule) = &self.remove {
            out.push(format!(
                "moat policy rm {} network {}{}",
                rule.action,
                quote(&rule.resource.to_string()),
                scope_flag(&rule.scope)
            ));
        }
        let scope = match for_sandbox {
            true => Scope::Sandbox(self.sandbox.clone()),
            false => Scope::Global,
        };
        out.push(format!("moat policy allow network {}{}", quote(&self.allow.to_string()), scope_flag(&scope)));
        out
    }
}

fn scope_flag(scope: &Scope) -> String {
    match scope {
        Scope::Global => String::new(),
        Scope::Sandbox(name) => format!(" --sandbox {}", quote(name)),
    }
}

/// Quotes `s` for a POSIX shell if it has anything but plain characters.
fn quote(s: &str) -> Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._-:/@%+=,".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("'{}'", s.replace('\'', r"'\''")))
    }
}
