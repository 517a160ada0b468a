//! Rules as users write them: `allow|deny network RESOURCE[,RESOURCE…]`.
//!
//! The textual form is stable: `Display` prints what `FromStr` reads, so
//! `policy ls` output can be pasted back and the lead can store rules as text
//! or as JSON (serde: `{"action":"allow","scope":null,"resource":"github.com"}`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::address::IpNet;
use super::host::{HostPattern, NameProblem};
use super::request::{RequestProblem, RequestTarget};

/// The forms a resource can take, shown with every parse error.
pub const VALID_FORMS: &str = "valid forms: example.com, *.example.com (one label), \
**.example.com (any depth), ** (everything), example.com:8080, example.com:* (any port), \
localhost:8080, 10.0.0.5, 10.0.0.0/8, 10.0.0.0/8:5432, 2001:db8::/32, [::1]:443, [fd00::/8]:443";

/// Allow or deny. Deny always beats allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Let matching connections through.
    Allow,
    /// Refuse matching connections, whatever else allows them.
    Deny,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        })
    }
}

/// Which sandboxes a rule applies to. Serialized as `null` or the sandbox name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "Option<String>", into = "Option<String>")]
pub enum Scope {
    /// Every sandbox.
    Global,
    /// One sandbox, by name.
    Sandbox(String),
}

impl From<Option<String>> for Scope {
    fn from(name: Option<String>) -> Scope {
        name.map_or(Scope::Global, Scope::Sandbox)
    }
}

impl From<Scope> for Option<String> {
    fn from(scope: Scope) -> Option<String> {
        match scope {
            Scope::Global => None,
            Scope::Sandbox(name) => Some(name),
        }
    }
}

/// The ports a rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ports {
    /// No port written. See [`Rule::port_set`] for what that means.
    Default,
    /// `:*`, every port.
    Any,
    /// `:PORT`.
    One(u16),
}

/// The ports a rule actually covers once its action and resource are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortSet {
    /// 80 and 443.
    Web,
    /// Every port.
    Any,
    /// One port.
    One(u16),
}

impl PortSet {
    /// True if `port` is covered.
    pub fn contains(self, port: u16) -> bool {
        match self {
            PortSet::Web => port == 80 || port == 443,
            PortSet::Any => true,
            PortSet::One(p) => p == port,
        }
    }
}

/// What a rule is about: hosts by name, or addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// A host name pattern (`example.com`, `*.example.com`, `**`, `localhost`).
    Host {
        /// Which names.
        pattern: HostPattern,
        /// Which ports.
        ports: Ports,
    },
    /// An address or network (`10.0.0.5`, `10.0.0.0/8`, `[::1]:443`).
    Net {
        /// Which addresses.
        net: IpNet,
        /// Which ports.
        ports: Ports,
    },
    /// Requests to a host by method and path (`DELETE api.github.com/**`):
    /// a request rule, which filters what network rules let through.
    Request(RequestTarget),
}

impl Resource {
    /// The ports written in the rule.
    pub fn ports(&self) -> Ports {
        match self {
            Resource::Host { ports, .. } | Resource::Net { ports, .. } => *ports,
            Resource::Request(t) => t.ports,
        }
    }

    /// `network` or `request`: the word after `allow|deny`.
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::Request(_) => "request",
            _ => "network",
        }
    }

    /// True if the resource names specific hosts or addresses (an exact host
    /// or an IP/CIDR), which is what re-enables special addresses.
    pub fn is_explicit(&self) -> bool {
        matches!(self, Resource::Net { .. } | Resource::Host { pattern: HostPattern::Exact(_), .. })
    }
}

/// What is wrong with a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceProblem {
    /// The host part is not a valid name or pattern.
    Name(NameProblem),
    /// The port is not `*` or a number from 1 to 65535.
    BadPort(String),
    /// The address or prefix length does not parse.
    BadAddress,
    /// A CIDR has bits set past its prefix.
    HostBitsSet(IpNet),
    /// An IPv6 address with a port must be bracketed.
    UnbracketedIpv6Port,
    /// `0.0.0.0/8` or `::`: "this host", which no rule opens.
    ThisHost(IpNet),
}

impl fmt::Display for ResourceProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceProblem::Name(p) => p.fmt(f),
            ResourceProblem::BadPort(p) => {
                write!(f, "port {p:?} is not '*' or a number from 1 to 65535")
            }
            ResourceProblem::BadAddress => f.write_str("not a valid IP address or prefix length"),
            ResourceProblem::HostBitsSet(net) => {
                write!(f, "bits are set past the prefix length; did you mean {net}?")
            }
            ResourceProblem::UnbracketedIpv6Port => {
                f.write_str("write an IPv6 address with a port in brackets, like [::1]:443")
            }
            ResourceProblem::ThisHost(net) => write!(
                f,
                "{net} means \"this host\": a connection to it reaches the host's own services, so no rule \
                 opens it; for a service on your machine allow localhost:PORT (host.moat.internal inside)"
            ),
        }
    }
}

/// A resource in `allow|deny network …` could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid network resource {input:?}: {problem} ({VALID_FORMS})")]
pub struct ResourceError {
    /// The resource as written.
    pub input: String,
    /// What is wrong with it.
    pub problem: ResourceProblem,
}

fn parse_port(s: &str) -> Result<Ports, ResourceProblem> {
    match s {
        "*" => Ok(Ports::Any),
        _ => match s.parse::<u16>() {
            Ok(p) if p != 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(Ports::One(p)),
            _ => Err(ResourceProblem::BadPort(s.to_string())),
        },
    }
}

fn parse_net(s: &str, v6_only: bool) -> Result<IpNet, ResourceProblem> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = match (addr.parse::<Ipv6Addr>(), v6_only) {
        (Ok(v6), _) => IpAddr::V6(v6),
        (Err(_), true) => return Err(ResourceProblem::BadAddress),
        (Err(_), false) => IpAddr::V4(addr.parse::<Ipv4Addr>().map_err(|_| ResourceProblem::BadAddress)?),
    };
    let Some(prefix) = prefix else {
        return Ok(IpNet::host(addr));
    };
    let prefix: u8 = match prefix.parse() {
        Ok(p) if prefix.bytes().all(|b| b.is_ascii_digit()) => p,
        _ => return Err(ResourceProblem::BadAddress),
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(ResourceProblem::BadAddress);
    }
    IpNet::new(addr, prefix).ok_or_else(|| {
        let fixed = super::address::mask(addr, prefix);
        ResourceProblem::HostBitsSet(IpNet::new(fixed, prefix).unwrap_or(IpNet::host(fixed)))
    })
}

fn parse_resource(s: &str) -> Result<Resource, ResourceProblem> {
    let resource = parse_resource_text(s)?;
    match &resource {
        Resource::Net { net, .. } if is_this_host(net) => Err(ResourceProblem::ThisHost(*net)),
        _ => Ok(resource),
    }
}

/// Whether `net` lies inside `0.0.0.0/8` or is `::` (a wider net, such as
/// all of IPv4, is a different matter).
fn is_this_host(net: &IpNet) -> bool {
    match net.addr() {
        std::net::IpAddr::V4(a) => net.prefix() >= 8 && a.octets()[0] == 0,
        std::net::IpAddr::V6(a) => net.prefix() == 128 && a.is_unspecified(),
    }
}

fn parse_resource_text(s: &str) -> Result<Resource, ResourceProblem> {
    if s.is_empty() {
        return Err(ResourceProblem::Name(NameProblem::Empty));
    }
    if !s.is_ascii() {
        return Err(ResourceProblem::Name(NameProblem::NonAscii));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (inner, after) = rest.split_once(']').ok_or(ResourceProblem::BadAddress)?;
        let net = parse_net(inner, true)?;
        let ports = match after {
            "" => Ports::Default,
            _ => match after.strip_prefix(':') {
                Some(p) => parse_port(p)?,
                None => return Err(ResourceProblem::BadAddress),
            },
        };
        return Ok(Resource::Net { net, ports });
    }
    if s.matches(':').count() > 1 {
        return match parse_net(s, true) {
            Ok(net) => Ok(Resource::Net { net, ports: Ports::Default }),
            Err(_) if s.ends_with('*') => Err(ResourceProblem::UnbracketedIpv6Port),
            Err(e) => Err(e),
        };
    }
    let (base, ports) = match s.rsplit_once(':') {
        Some((b, p)) => (b, parse_port(p)?),
        None => (s, Ports::Default),
    };
    let looks_numeric = base.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'/');
    if base.contains('/') || (looks_numeric && base.parse::<Ipv4Addr>().is_ok()) {
        return Ok(Resource::Net { net: parse_net(base, false)?, ports });
    }
    let pattern = HostPattern::parse(base).map_err(ResourceProblem::Name)?;
    Ok(Resource::Host { pattern, ports })
}

impl FromStr for Resource {
    type Err = ResourceError;

    fn from_str(s: &str) -> Result<Resource, ResourceError> {
        parse_resource(s.trim()).map_err(|problem| ResourceError { input: s.to_string(), problem })
    }
}

/// Parses a comma-separated list (`github.com,*.npmjs.org`); every item must be valid.
pub fn parse_resources(list: &str) -> Result<Vec<Resource>, ResourceError> {
    list.split(',').map(str::parse).collect()
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ports::Default => Ok(()),
            Ports::Any => f.write_str(":*"),
            Ports::One(p) => write!(f, ":{p}"),
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Host { pattern, ports } => write!(f, "{pattern}{ports}"),
            Resource::Net { net, ports: Ports::Default } => write!(f, "{net}"),
            Resource::Net { net, ports } if net.addr().is_ipv6() => write!(f, "[{net}]{ports}"),
            Resource::Net { net, ports } => write!(f, "{net}{ports}"),
            Resource::Request(t) => write!(f, "{t}"),
        }
    }
}

impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Resource, D::Error> {
        let s = String::deserialize(d)?;
        // Only a request target has a space (between its methods, written
        // in capitals as they are printed, and its host).
        let canonical = |m: &str| m.bytes().all(|b| b.is_ascii_uppercase() || b"*,-".contains(&b));
        match s.split_once(' ') {
            Some((methods, target)) if canonical(methods) => {
                RequestTarget::parse(methods, target).map(Resource::Request).map_err(serde::de::Error::custom)
            }
            _ => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// One rule: `allow network github.com`, optionally for one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Rule {
    /// Allow or deny.
    pub action: Action,
    /// Every sandbox, or one.
    pub scope: Scope,
    /// What it matches.
    pub resource: Resource,
}

impl Rule {
    /// A rule.
    pub fn new(action: Action, scope: Scope, resource: Resource) -> Rule {
        Rule { action, scope, resource }
    }

    /// One rule per resource in a comma-separated list, as `moat policy allow
    /// network a,b --sandbox NAME` gives them.
    pub fn parse_list(action: Action, scope: &Scope, list: &str) -> Result<Vec<Rule>, ResourceError> {
        let resources = parse_resources(list)?;
        Ok(resources.into_iter().map(|r| Rule::new(action, scope.clone(), r)).collect())
    }

    /// One request rule per target in a comma-separated list, as `moat
    /// policy deny request DELETE api.github.com/**,api.gitlab.com/**` gives them.
    pub fn parse_requests(action: Action, scope: &Scope, methods: &str, targets: &str) -> Result<Vec<Rule>, RuleError> {
        targets
            .split(',')
            .map(|t| {
                let target = RequestTarget::parse(methods, t)
                    .map_err(|problem| RuleError::Request { input: format!("{methods} {t}"), problem })?;
                Ok(Rule::new(action, scope.clone(), Resource::Request(target)))
            })
            .collect()
    }

    /// The ports this rule covers. A port written in the rule is exact. With
    /// no port: an allow for a host name covers 80 and 443; `**`, addresses
    /// and networks, and every deny cover all ports (a deny never leaves a
    /// back door open on another port).
    pub fn port_set(&self) -> PortSet {
        match (self.resource.ports(), self.action, &self.resource) {
            (Ports::One(p), _, _) => PortSet::One(p),
            (Ports::Any, _, _) => PortSet::Any,
            (Ports::Default, Action::Deny, _) => PortSet::Any,
            (Ports::Default, Action::Allow, Resource::Net { .. }) => PortSet::Any,
            (Ports::Default, Action::Allow, Resource::Host { pattern: HostPattern::Everything, .. }) => PortSet::Any,
            (Ports::Default, Action::Allow, Resource::Host { .. }) => PortSet::Web,
            (Ports::Default, _, Resource::Request(_)) => PortSet::Any,
        }
    }

    /// Refuses a new rule that would open more than its author likely
    /// meant: an allow for an address or network reaching loopback, private,
    /// link-local or metadata addresses with no port written (which would
    /// open every port there). Checked when a rule is added, not when stored
    /// rules are read, so a policy written before the check keeps working.
    pub fn check_new(&self) -> Result<(), RuleRefused> {
        match (&self.action, &self.resource) {
            (Action::Allow, Resource::Net { net, ports: Ports::Default }) if net.covers_special() => {
                Err(RuleRefused { rule: self.to_string(), net: *net })
            }
            _ => Ok(()),
        }
    }

    /// True if the rule applies to `sandbox`.
    pub fn applies_to(&self, sandbox: &str) -> bool {
        match &self.scope {
            Scope::Global => true,
            Scope::Sandbox(name) => name == sandbox,
        }
    }
}

impl fmt::Display for Rule {
    /// `allow network github.com` or `deny network **.example.com --sandbox web`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.action, self.resource.kind(), self.resource)?;
        match &self.scope {
            Scope::Global => Ok(()),
            Scope::Sandbox(name) => write!(f, " --sandbox {name}"),
        }
    }
}

/// A new rule [`Rule::check_new`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{rule}` would open every port of {net}, which reaches loopback, private or metadata addresses; \
     name the port ({example}:5432) or, if every port is meant, say so ({example}:*)",
    example = port_example(net)
)]
pub struct RuleRefused {
    /// The rule as asked for, as text.
    pub rule: String,
    /// Its network.
    pub net: IpNet,
}

fn port_example(net: &IpNet) -> String {
    match net.addr().is_ipv6() {
        true => format!("[{net}]"),
        false => net.to_string(),
    }
}

/// A rule's textual form could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Not `allow|deny network RESOURCE [--sandbox NAME]`.
    #[error(
        "invalid rule {0:?}: expected 'allow|deny network RESOURCE [--sandbox NAME]' \
         or 'allow|deny request METHODS HOST[/PATH] [--sandbox NAME]'"
    )]
    Syntax(String),
    /// The resource is invalid.
    #[error("invalid rule")]
    Resource(#[from] ResourceError),
    /// A request rule's methods or target are invalid.
    #[error("invalid request rule {input:?}: {problem}")]
    Request {
        /// `METHODS TARGET` as written.
        input: String,
        /// What is wrong.
        problem: RequestProblem,
    },
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Rule, RuleError> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let syntax = || RuleError::Syntax(s.to_string());
        let action = match words.first() {
            Some(&"allow") => Action::Allow,
            Some(&"deny") => Action::Deny,
            _ => return Err(syntax()),
        };
        let scope = match words.as_slice() {
            [_, "network", _] | [_, "request", _, _] => Scope::Global,
            [_, "network", _, "--sandbox", name] | [_, "request", _, _, "--sandbox", name] => {
                Scope::Sandbox(name.to_string())
            }
            _ => return Err(syntax()),
        };
        if words[1] == "request" {
            let target = RequestTarget::parse(words[2], words[3])
                .map_err(|problem| RuleError::Request { input: format!("{} {}", words[2], words[3]), problem })?;
            return Ok(Rule::new(action, scope, Resource::Request(target)));
        }
        Ok(Rule::new(action, scope, words[2].parse()?))
    }
}
