//! The compiled index agrees with the naive linear matcher on random input.

use std::mem::discriminant;
use std::net::IpAddr;

use super::super::reference::{pattern_matches, resource_covers_ip, LinearPolicy, SplitMix64};
use super::super::{Action, CompiledPolicy, Decision, Preset, Reason, Request, Resource, Rule, Scope, Verdict};

type Rng = SplitMix64;

trait Pick {
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str;
}

impl Pick for SplitMix64 {
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const LABELS: &[&str] = &["a", "b", "ex", "com", "net", "localhost"];
const IPS: &[&str] = &[
    "8.8.8.8",
    "8.8.4.4",
    "10.0.0.1",
    "10.1.2.3",
    "127.0.0.1",
    "100.64.0.1",
    "169.254.169.254",
    "192.168.0.9",
    "::1",
    "::ffff:10.0.0.1",
    "::ffff:8.8.8.8",
    "2606:4700::1",
    "2606:4700:1::1",
    "fd00::1",
    "64:ff9b::a00:1",
    "2002:808:808::1",
];
const NETS: &[&str] =
    &["10.0.0.0/8", "10.0.0.0/16", "8.8.0.0/16", "0.0.0.0/0", "127.0.0.0/8", "2606:4700::/32", "fd00::/8", "::/0"];
const PORTS: &[&str] = &["", "", ":80", ":443", ":22", ":*"];
const REQ_PORTS: &[u16] = &[80, 443, 22, 8080];
const SANDBOXES: &[&str] = &["s1", "s2", "s3"];

fn name(rng: &mut Rng) -> String {
    let n = 1 + rng.below(4);
    (0..n).map(|_| rng.pick(LABELS)).collect::<Vec<_>>().join(".")
}

/// IPv6 needs brackets when a port follows.
fn addr(a: &str, port: &str) -> String {
    if a.contains(':') && !port.is_empty() {
        format!("[{a}]{port}")
    } else {
        format!("{a}{port}")
    }
}

fn random_rule(rng: &mut Rng) -> Rule {
    let port = rng.pick(PORTS);
    let text = match rng.below(8) {
        0 | 1 => format!("{}{port}", name(rng)),
        2 => format!("*.{}{port}", name(rng)),
        3 => format!("**.{}{port}", name(rng)),
        4 if rng.below(4) == 0 => format!("**{port}"),
        5 => addr(rng.pick(IPS), port),
        6 => addr(rng.pick(NETS), port),
        _ => format!("localhost{port}"),
    };
    let resource: Resource = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
    let action = if rng.below(3) == 0 { Action::Deny } else { Action::Allow };
    let scope = match rng.below(3) {
        0 => Scope::Global,
        i => Scope::Sandbox(SANDBOXES[i - 1].to_string()),
    };
    Rule::new(action, scope, resource)
}

/// Same verdict and kind of reason; a named rule really matches.
fn agree(fast: &Decision, slow: &Decision, req: &Request<'_>, ip: Option<IpAddr>, context: &str) {
    assert_eq!(fast.verdict, slow.verdict, "{context}: fast {fast}, slow {slow}");
    assert_eq!(discriminant(&fast.reason), discriminant(&slow.reason), "{context}: fast {fast}, slow {slow}");
    if let Reason::Rule(entry) = &fast.reason {
        let rule = &entry.rule;
        assert_eq!(rule.action == Action::Allow, fast.verdict == Verdict::Allow, "{context}");
        assert!(rule.applies_to(req.sandbox) && rule.port_set().contains(req.port), "{context}: {rule}");
        let host = req.host.trim_start_matches('[').trim_end_matches(']');
        let covers = match (&rule.resource, ip.or_else(|| host.parse().ok())) {
            (resource, Some(ip)) if resource_covers_ip(resource, ip) => true,
            (Resource::Host { pattern, .. }, _) => pattern_matches(pattern, &host.to_ascii_lowercase()),
            _ => false,
        };
        assert!(covers, "{context}: {rule} does not match");
    }
}

#[test]
fn compiled_matcher_agrees_with_linear_reference() {
    let mut rng = SplitMix64(0x5eed);
    let mut checked = 0;
    let mut seen = [0usize; 3];
    for round in 0..300 {
        let preset = [Preset::AllowAll, Preset::DenyAll, Preset::Balanced][round % 3];
        let rules: Vec<Rule> = (0..rng.below(40)).map(|_| random_rule(&mut rng)).collect();
        let fast = CompiledPolicy::compile(preset, &rules);
        let slow = LinearPolicy::new(preset, &rules);
        for _ in 0..200 {
            let host = match rng.below(3) {
                0 => rng.pick(IPS).to_string(),
                _ => name(&mut rng),
            };
            let req = Request::new(rng.pick(SANDBOXES), &host, REQ_PORTS[rng.below(REQ_PORTS.len())]);
            let context =
                format!("round {round}, {req:?}, rules {:?}", rules.iter().map(Rule::to_string).collect::<Vec<_>>());
            let d = fast.decide(&req);
            seen[match (&d.verdict, &d.reason) {
                (Verdict::Allow, _) => 0,
                (Verdict::Deny, Reason::Rule(_)) => 1,
                _ => 2,
            }] += 1;
            agree(&d, &slow.decide(&req), &req, None, &context);
            let ip: IpAddr = rng.pick(IPS).parse().unwrap();
            agree(&fast.decide_address(&req, ip), &slow.decide_address(&req, ip), &req, Some(ip), &context);
            checked += 2;
        }
    }
    assert_eq!(checked, 120_000);
    assert!(seen.iter().all(|&n| n > 5_000), "allows, rule denies, other denies: {seen:?}");
}
