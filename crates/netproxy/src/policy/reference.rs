//! A naive, obviously-correct matcher: a linear scan over rules with string
//! comparisons. It is the executable specification the compiled index is
//! tested against (and the baseline of the benchmark); never use it to serve.

use std::net::IpAddr;
use std::sync::Arc;

use super::address::{canonical, special_class};
use super::decision::{Decision, Origin, Reason, Request, RuleEntry, Verdict};
use super::host::{parse_target, HostPattern, Target, MAX_NAME_LEN};
use super::index::loopback_nets;
use super::preset::Preset;
use super::rule::{Action, Resource, Rule};

/// Rules in a list, scanned in full for every decision.
#[derive(Debug)]
pub struct LinearPolicy {
    preset: Preset,
    rules: Vec<Arc<RuleEntry>>,
}

/// True if a rule's host pattern covers `name`: the plain, list-walking
/// match ([`HostPattern::matches`]) the compiled index must agree with.
pub fn pattern_matches(pattern: &HostPattern, name: &str) -> bool {
    pattern.matches(name)
}

/// True if a rule's resource covers address `ip` (IP/CIDR, `localhost`, `**`).
pub fn resource_covers_ip(resource: &Resource, ip: IpAddr) -> bool {
    match resource {
        Resource::Net { net, .. } => net.contains(ip),
        Resource::Request(_) => false,
        Resource::Host { pattern, .. } if pattern.is_localhost() => loopback_nets().iter().any(|n| n.contains(ip)),
        Resource::Host { pattern, .. } => *pattern == HostPattern::Everything,
    }
}

impl LinearPolicy {
    /// The same rules, in the same order, as [`super::CompiledPolicy::compile`].
    pub fn new(preset: Preset, rules: &[Rule]) -> LinearPolicy {
        let user = rules.iter().map(|r| RuleEntry { rule: r.clone(), origin: Origin::User });
        let from_preset = preset
            .rules()
            .into_iter()
            .map(|(rule, category)| RuleEntry { rule, origin: Origin::Preset { preset, category } });
        LinearPolicy { preset, rules: user.chain(from_preset).map(Arc::new).collect() }
    }

    fn first(&self, req: &Request<'_>, action: Action, hit: impl Fn(&Rule) -> bool) -> Option<Decision> {
        self.first_of(req, action, |_| true, hit)
    }

    fn first_of(
        &self,
        req: &Request<'_>,
        action: Action,
        origin: impl Fn(&Origin) -> bool,
        hit: impl Fn(&Rule) -> bool,
    ) -> Option<Decision> {
        self.rules
            .iter()
            .filter(|e| origin(&e.origin))
            .find(|e| {
                let r = &e.rule;
                r.action == action && r.applies_to(req.sandbox) && r.port_set().contains(req.port) && hit(r)
            })
            .map(Decision::by_rule)
    }

    /// Same contract as [`super::CompiledPolicy::decide`].
    pub fn decide(&self, req: &Request<'_>) -> Decision {
        let mut buf = [0u8; MAX_NAME_LEN];
        match parse_target(req.host, &mut buf) {
            None => Decision::new(Verdict::Deny, Reason::InvalidHost),
            Some(Target::Ip(ip)) => self.decide_ip(req, None, ip, true),
            Some(Target::Name(name)) => {
                let hit = |r: &Rule| match &r.resource {
                    Resource::Host { pattern, .. } => pattern_matches(pattern, name),
                    Resource::Net { .. } | Resource::Request(_) => false,
                };
                self.first(req, Action::Deny, hit)
                    .or_else(|| self.first(req, Action::Allow, hit))
                    .unwrap_or(Decision::new(Verdict::Deny, Reason::Default(self.preset)))
            }
        }
    }

    /// Same contract as [`super::CompiledPolicy::decide_address`].
    pub fn decide_address(&self, req: &Request<'_>, ip: IpAddr) -> Decision {
        let mut buf = [0u8; MAX_NAME_LEN];
        match parse_target(req.host, &mut buf) {
            None => Decision::new(Verdict::Deny, Reason::InvalidHost),
            Some(Target::Ip(_)) => self.decide_ip(req, None, ip, false),
            Some(Target::Name(name)) => self.decide_ip(req, Some(name), ip, false),
        }
    }

    fn decide_ip(&self, req: &Request<'_>, name: Option<&str>, ip: IpAddr, literal: bool) -> Decision {
        let ip = canonical(ip);
        let covers = |r: &Rule| resource_covers_ip(&r.resource, ip);
        if let Some(deny) = self.first(req, Action::Deny, covers) {
            return deny;
        }
        if let Some(class) = special_class(ip) {
            if class == super::address::AddressClass::Unspecified {
                return Decision::new(Verdict::Deny, Reason::SpecialAddress(ip, class));
            }
            let explicit = |r: &Rule| match (&r.resource, name) {
                (Resource::Host { pattern: HostPattern::Exact(n), .. }, Some(name)) if **n == *name => true,
                (Resource::Host { pattern: HostPattern::Everything, .. }, _) => false,
                (Resource::Net { net, .. }, _) => net.names(class) && net.contains(ip),
                (resource, _) => resource_covers_ip(resource, ip),
            };
            return self
                .first_of(req, Action::Allow, |o| *o == Origin::User, explicit)
                .unwrap_or(Decision::new(Verdict::Deny, Reason::SpecialAddress(ip, class)));
        }
        match (literal, self.first(req, Action::Allow, covers)) {
            (true, Some(allow)) => allow,
            (true, None) => Decision::new(Verdict::Deny, Reason::Default(self.preset)),
            (false, _) => Decision::new(Verdict::Allow, Reason::PublicAddress),
        }
    }
}

/// SplitMix64: a tiny deterministic generator, so random tests and the benchmark
/// see the same workload on every run without an extra dependency.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}
