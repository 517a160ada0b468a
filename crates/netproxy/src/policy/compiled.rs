//! A policy compiled for fast decisions, and the decision procedure itself.
//!
//! Order of precedence, for a host name (before resolution):
//! 1. any matching deny rule (global or the sandbox's) denies;
//! 2. else any matching allow rule allows;
//! 3. else the preset's default (deny).
//!
//! For an IP — an IP literal in [`CompiledPolicy::decide`], or each resolved
//! address in [`CompiledPolicy::decide_address`]:
//! 1. a matching deny rule (IP/CIDR or `**`) denies;
//! 2. a special address (see [`AddressClass`](super::AddressClass)) is allowed only by an allow
//!    rule that names it explicitly: an IP/CIDR rule, `localhost`, or an
//!    exact-name rule for the host that resolved to it. Wildcards — `*.x`,
//!    `**.x`, `**` — never reach special addresses, so DNS rebinding through an
//!    allowed wildcard domain cannot reach the host or the LAN;
//! 3. else, for an IP literal, allow rules and the default as for names; for a
//!    resolved address, public is allowed (the name was already allowed).
//!
//! Request rules (`deny request DELETE api.github.com/**`) are not part of
//! those decisions: [`CompiledPolicy::decide_request`] applies them to each
//! HTTP request the proxy reads, after its host was allowed.

use std::net::IpAddr;
use std::sync::Arc;

use super::address::{canonical, special_class, AddressClass};
use super::decision::{Decision, Origin, Reason, Request, RuleEntry, Verdict};
use super::host::{parse_target, HostPattern, Target, MAX_NAME_LEN};
use super::index::{FxMap, Hits, Table};
use super::preset::Preset;
use super::request::{path_segments, RequestTarget};
use super::rule::{Action, Resource, Rule, Scope};

/// An immutable, indexed policy: a preset plus user rules.
#[derive(Debug)]
pub struct CompiledPolicy {
    preset: Preset,
    rules: Vec<Arc<RuleEntry>>,
    /// The request rules, in `rules`' order (few; scanned in full).
    requests: Vec<Arc<RuleEntry>>,
    global: Table,
    sandboxes: FxMap<Box<str>, Table>,
}

impl CompiledPolicy {
    /// Indexes `preset`'s rules and the user's `rules`.
    pub fn compile(preset: Preset, rules: &[Rule]) -> CompiledPolicy {
        Self::compile_extended(preset, &[], rules)
    }

    /// Like [`compile`](Self::compile), with allow rules that extend the
    /// `balanced` preset (the hosts a sandbox's agent needs, category
    /// `agent`). Under the other presets they add nothing and are left out:
    /// `allow-all` has them, and `deny-all` means only the user's rules.
    pub fn compile_extended(preset: Preset, extension: &[Rule], rules: &[Rule]) -> CompiledPolicy {
        let extension = if preset == Preset::Balanced { extension } else { &[] };
        let extension =
            extension.iter().filter(|r| r.action == super::rule::Action::Allow).map(|r| (r.clone(), "agent"));
        let preset_rules = preset
            .rules()
            .into_iter()
            .chain(extension)
            .map(|(rule, category)| RuleEntry { rule, origin: Origin::Preset { preset, category } });
        let user_rules = rules.iter().map(|rule| RuleEntry { rule: rule.clone(), origin: Origin::User });
        let mut policy = CompiledPolicy {
            preset,
            rules: Vec::new(),
            requests: Vec::new(),
            global: Table::default(),
            sandboxes: FxMap::default(),
        };
        for entry in user_rules.chain(preset_rules).map(Arc::new) {
            match &entry.rule.scope {
                Scope::Global => policy.global.insert(Arc::clone(&entry)),
                Scope::Sandbox(name) => {
                    policy.sandboxes.entry(name.as_str().into()).or_default().insert(Arc::clone(&entry))
                }
            }
            if matches!(entry.rule.resource, Resource::Request(_)) {
                policy.requests.push(Arc::clone(&entry));
            }
            policy.rules.push(entry);
        }
        policy
    }

    /// The request rules about `req`'s host and port for its sandbox (none,
    /// without allocating, when the policy has no request rules).
    fn request_rules(&self, req: &Request<'_>) -> Vec<(&Arc<RuleEntry>, &RequestTarget)> {
        if self.requests.is_empty() {
            return Vec::new();
        }
        let mut buf = [0u8; MAX_NAME_LEN];
        let name = match parse_target(req.host, &mut buf) {
            Some(Target::Name(name)) => Some(name),
            _ => None,
        };
        let about = |t: &RequestTarget| match name {
            Some(name) => t.covers_host(name, req.port),
            None => t.host == HostPattern::Everything,
        };
        let rules = self.requests.iter().filter_map(|entry| match &entry.rule.resource {
            Resource::Request(t) if entry.rule.applies_to(req.sandbox) && about(t) => Some((entry, t)),
            _ => None,
        });
        rules.collect()
    }

    /// True if a request rule is about `req`'s host: the proxy must read its
    /// requests (terminate its TLS) for the rule to apply.
    pub fn reads_requests(&self, req: &Request<'_>) -> bool {
        !self.request_rules(req).is_empty()
    }

    /// Decides one HTTP request to `req`'s host (which [`decide`](Self::decide)
    /// allowed) by the request rules: `None` if none is about that host.
    /// A matching deny denies; if any `allow request` rule is about the
    /// host, one of them must match. `target` is the request target as sent
    /// (origin form); a path that can be read two ways is denied.
    pub fn decide_request(&self, req: &Request<'_>, method: &str, target: &str) -> Option<Decision> {
        let rules = self.request_rules(req);
        if rules.is_empty() {
            return None;
        }
        let segments = match path_segments(target) {
            Ok(s) => s,
            Err(why) => return Some(Decision::new(Verdict::Deny, Reason::AmbiguousPath(why))),
        };
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let hit = |action| rules.iter().find(|(e, t)| e.rule.action == action && t.covers_request(method, &segments));
        if let Some((deny, _)) = hit(Action::Deny) {
            return Some(Decision::by_rule(deny));
        }
        if let Some((allow, _)) = hit(Action::Allow) {
            return Some(Decision::by_rule(allow));
        }
        match rules.iter().any(|(e, _)| e.rule.action == Action::Allow) {
            true => Some(Decision::new(Verdict::Deny, Reason::NoRequestRule)),
            false => None,
        }
    }

    /// The preset this policy was built on.
    pub fn preset(&self) -> Preset {
        self.preset
    }

    /// Every rule, user rules first, then the preset's.
    pub fn rules(&self) -> &[Arc<RuleEntry>] {
        &self.rules
    }

    fn tables<'a>(&'a self, sandbox: &str) -> impl Iterator<Item = &'a Table> {
        self.sandboxes.get(sandbox).into_iter().chain([&self.global])
    }

    fn default_deny(&self) -> Decision {
        Decision::new(Verdict::Deny, Reason::Default(self.preset))
    }

    /// Decides a request by host name or IP literal. Allocation-free. For a
    /// name that is allowed, the caller resolves it and checks every address
    /// with [`CompiledPolicy::decide_address`] before connecting.
    pub fn decide(&self, req: &Request<'_>) -> Decision {
        let mut buf = [0u8; MAX_NAME_LEN];
        match parse_target(req.host, &mut buf) {
            None => Decision::new(Verdict::Deny, Reason::InvalidHost),
            Some(Target::Ip(ip)) => self.decide_ip(req, None, ip, true),
            Some(Target::Name(name)) => {
                let mut hits = Hits::default();
                for table in self.tables(req.sandbox) {
                    table.name_hits(name, req.port, &mut hits);
                }
                match hits.deny.or(hits.allow) {
                    Some(entry) => Decision::by_rule(&entry.rule),
                    None => self.default_deny(),
                }
            }
        }
    }

    /// Checks one address that `req.host` resolved to (or that the proxy is
    /// about to connect to). Deny rules on addresses apply; special addresses
    /// need an explicit rule; public addresses pass. Call it only after
    /// [`CompiledPolicy::decide`] allowed `req`.
    pub fn decide_address(&self, req: &Request<'_>, ip: IpAddr) -> Decision {
        let mut buf = [0u8; MAX_NAME_LEN];
        let name = match parse_target(req.host, &mut buf) {
            Some(Target::Name(name)) => Some(name),
            Some(Target::Ip(_)) => None,
            None => return Decision::new(Verdict::Deny, Reason::InvalidHost),
        };
        self.decide_ip(req, name, ip, false)
    }

    fn decide_ip(&self, req: &Request<'_>, name: Option<&str>, ip: IpAddr, literal: bool) -> Decision {
        let ip = canonical(ip);
        let mut hits = Hits::default();
        for table in self.tables(req.sandbox) {
            table.ip_hits(ip, req.port, &mut hits);
        }
        if let Some(deny) = hits.deny {
            return Decision::by_rule(&deny.rule);
        }
        if let Some(class) = special_class(ip) {
            // "This host": no rule opens it (a rule can't name it; a wider one doesn't count).
            if class == super::address::AddressClass::Unspecified {
                return Decision::new(Verdict::Deny, Reason::SpecialAddress(ip, class));
            }
            return self
                .explicit_allow(req, name, ip, class)
                .unwrap_or(Decision::new(Verdict::Deny, Reason::SpecialAddress(ip, class)));
        }
        match (literal, hits.allow) {
            (true, Some(allow)) => Decision::by_rule(&allow.rule),
            (true, None) => self.default_deny(),
            (false, _) => Decision::new(Verdict::Allow, Reason::PublicAddress),
        }
    }

    /// A user's allow rule naming `ip` or `name` exactly, if any. A preset's
    /// names never count: that a host the preset allows resolved to a special
    /// address is no reason to reach it.
    /// An address rule counts only if it names that kind of address on
    /// purpose (`0.0.0.0/0` covers loopback without naming it).
    fn explicit_allow(
        &self,
        req: &Request<'_>,
        name: Option<&str>,
        ip: IpAddr,
        class: AddressClass,
    ) -> Option<Decision> {
        let mut hits = Hits::naming(class);
        for table in self.tables(req.sandbox) {
            table.net_hits(ip, req.port, &mut hits);
            if let Some(name) = name {
                table.exact_hits(name, req.port, &mut hits);
            }
        }
        hits.allow.map(|e| Decision::by_rule(&e.rule))
    }
}
