//! Unit tests of the policy engine; pure, no sockets.

mod address;
mod decide;
mod parse;
mod property;
mod request;

use super::{Action, CompiledPolicy, Decision, Preset, Reason, Request, Rule, Scope, Verdict};

/// Parses rules in their textual form, one per line.
pub(super) fn rules(text: &str) -> Vec<Rule> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.parse().unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

pub(super) fn policy(preset: Preset, text: &str) -> CompiledPolicy {
    CompiledPolicy::compile(preset, &rules(text))
}

pub(super) fn decide(p: &CompiledPolicy, sandbox: &str, host: &str, port: u16) -> Decision {
    p.decide(&Request::new(sandbox, host, port))
}

pub(super) fn allowed(p: &CompiledPolicy, sandbox: &str, host: &str, port: u16) -> bool {
    decide(p, sandbox, host, port).is_allowed()
}

/// The rule text that decided, or a panic.
pub(super) fn rule_of(d: &Decision) -> String {
    match &d.reason {
        Reason::Rule(e) => e.rule.to_string(),
        other => panic!("decided by {other:?}, not a rule"),
    }
}

#[test]
fn rule_text_round_trips() {
    for text in [
        "allow network github.com",
        "deny network **.example.com --sandbox web",
        "allow network *.example.com:8080",
        "allow network example.com:*",
        "allow network localhost:8080",
        "allow network 10.0.0.5",
        "allow network 10.0.0.0/8:5432",
        "allow network 2001:db8::/32",
        "allow network [::1]:443",
        "allow network [fd00::/8]:443",
        "deny network **",
    ] {
        let rule: Rule = text.parse().unwrap();
        assert_eq!(rule.to_string(), text);
    }
}

#[test]
fn serde_round_trips_and_is_readable() {
    let rule = Rule::new(Action::Deny, Scope::Sandbox("web".into()), "*.example.com:8080".parse().unwrap());
    let json = serde_json::to_string(&rule).unwrap();
    assert_eq!(json, r#"{"action":"deny","scope":"web","resource":"*.example.com:8080"}"#);
    assert_eq!(serde_json::from_str::<Rule>(&json).unwrap(), rule);
    let global: Rule = serde_json::from_str(r#"{"action":"allow","scope":null,"resource":"[::1]:443"}"#).unwrap();
    assert_eq!(global.scope, Scope::Global);
    assert!(serde_json::from_str::<Rule>(r#"{"action":"allow","scope":null,"resource":"a b"}"#).is_err());
    assert_eq!(serde_json::to_string(&Preset::AllowAll).unwrap(), r#""allow-all""#);
}

#[test]
fn verdict_is_exposed() {
    let p = policy(Preset::DenyAll, "allow network github.com");
    assert_eq!(decide(&p, "s", "github.com", 443).verdict, Verdict::Allow);
}
