use std::sync::Arc;

use super::super::{Origin, Policy, Preset, Reason, Request};
use super::{allowed, decide, policy, rule_of, rules};

#[test]
fn one_star_is_one_label() {
    let p = policy(Preset::DenyAll, "allow network *.example.com");
    assert!(allowed(&p, "s", "a.example.com", 443));
    assert!(allowed(&p, "s", "A.Example.COM.", 443));
    assert!(!allowed(&p, "s", "example.com", 443));
    assert!(!allowed(&p, "s", "a.b.example.com", 443));
    assert!(!allowed(&p, "s", "aexample.com", 443));
}

#[test]
fn two_stars_are_any_depth_but_not_the_apex() {
    let p = policy(Preset::DenyAll, "allow network **.example.com");
    assert!(allowed(&p, "s", "a.example.com", 443));
    assert!(allowed(&p, "s", "a.b.c.example.com", 443));
    assert!(!allowed(&p, "s", "example.com", 443));
    assert!(!allowed(&p, "s", "badexample.com", 443));
    assert!(!allowed(&p, "s", "example.com.evil.net", 443));
}

#[test]
fn everything_matches_names_and_public_ips_on_all_ports() {
    let p = policy(Preset::DenyAll, "allow network **");
    assert!(allowed(&p, "s", "anything.at.all", 22));
    assert!(allowed(&p, "s", "8.8.8.8", 53));
}

#[test]
fn default_and_explicit_ports() {
    let p = policy(
        Preset::DenyAll,
        "allow network example.com\nallow network api.example.com:8443\nallow network any.example.com:*",
    );
    assert!(allowed(&p, "s", "example.com", 80));
    assert!(allowed(&p, "s", "example.com", 443));
    assert!(!allowed(&p, "s", "example.com", 22));
    assert!(allowed(&p, "s", "api.example.com", 8443));
    assert!(!allowed(&p, "s", "api.example.com", 443));
    assert!(allowed(&p, "s", "any.example.com", 5432));
}

#[test]
fn a_deny_without_port_covers_every_port() {
    let p = policy(Preset::AllowAll, "deny network example.com");
    assert!(!allowed(&p, "s", "example.com", 22));
    assert!(!allowed(&p, "s", "example.com", 443));
    let p = policy(Preset::AllowAll, "deny network example.com:22");
    assert!(!allowed(&p, "s", "example.com", 22));
    assert!(allowed(&p, "s", "example.com", 443));
}

#[test]
fn deny_beats_allow_at_every_scope_combination() {
    let scopes = ["", " --sandbox web"];
    for deny_scope in scopes {
        for allow_scope in scopes {
            for (deny, allow) in
                [("example.com", "example.com"), ("**.example.com", "a.example.com"), ("**", "a.example.com")]
            {
                let text = format!("allow network {allow}{allow_scope}\ndeny network {deny}{deny_scope}");
                let p = policy(Preset::Balanced, &text);
                let host = if allow == "example.com" { "example.com" } else { "a.example.com" };
                let d = decide(&p, "web", host, 443);
                assert!(!d.is_allowed(), "{text}: {d}");
                assert_eq!(rule_of(&d), format!("deny network {deny}{deny_scope}"));
            }
        }
    }
}

#[test]
fn deny_beats_allow_for_addresses() {
    let p = policy(Preset::DenyAll, "allow network 10.0.0.0/8 --sandbox web\ndeny network 10.1.0.0/16");
    assert!(allowed(&p, "web", "10.2.0.1", 5432));
    assert_eq!(rule_of(&decide(&p, "web", "10.1.0.1", 5432)), "deny network 10.1.0.0/16");
    let p = policy(Preset::DenyAll, "allow network 2001:db8::/32\ndeny network [2001:db8::/48]:443 --sandbox web");
    assert!(!allowed(&p, "web", "2001:db8::1", 443));
    assert!(allowed(&p, "web", "2001:db8::1", 80));
    assert!(allowed(&p, "other", "2001:db8::1", 443));
    assert!(allowed(&p, "web", "[2001:db8:1::1]", 443));
}

#[test]
fn sandbox_rules_do_not_leak() {
    let p = policy(Preset::DenyAll, "allow network example.com --sandbox web\ndeny network github.com --sandbox ci");
    assert!(allowed(&p, "web", "example.com", 443));
    assert!(!allowed(&p, "ci", "example.com", 443));
    assert!(!allowed(&p, "web2", "example.com", 443));
    let b = policy(Preset::Balanced, "deny network github.com --sandbox ci");
    assert!(!allowed(&b, "ci", "github.com", 443));
    assert!(allowed(&b, "web", "github.com", 443));
}

#[test]
fn presets_decide_by_default() {
    let deny_all = policy(Preset::DenyAll, "");
    assert_eq!(decide(&deny_all, "s", "github.com", 443).reason, Reason::Default(Preset::DenyAll));
    let allow_all = policy(Preset::AllowAll, "");
    assert!(allowed(&allow_all, "s", "example.org", 443));
    let balanced = policy(Preset::Balanced, "");
    for host in ["api.anthropic.com", "registry.npmjs.org", "github.com", "deb.debian.org", "ghcr.io"] {
        assert!(allowed(&balanced, "s", host, 443), "{host}");
    }
    for host in ["storage.googleapis.com", "s3.amazonaws.com", "example.com", "evil.github.com"] {
        assert!(!allowed(&balanced, "s", host, 443), "{host}");
    }
    assert!(!allowed(&balanced, "s", "github.com", 22));
    let d = decide(&balanced, "s", "pypi.org", 443);
    let Reason::Rule(entry) = &d.reason else { panic!("{d}") };
    assert_eq!(entry.origin, Origin::Preset { preset: Preset::Balanced, category: "package-registries" });
    assert_eq!(d.to_string(), "allowed by preset balanced (package-registries): 'allow network pypi.org'");
}

#[test]
fn an_agents_hosts_extend_balanced_for_its_sandbox_only() {
    let copilot = rules("allow network api.githubcopilot.com --sandbox cp\ndeny network pypi.org --sandbox cp");
    for preset in Preset::ALL {
        let live = Policy::extended(preset, copilot.clone(), &rules("deny network api.githubcopilot.com --sandbox no"));
        let p = live.snapshot();
        let reached = allowed(&p, "cp", "api.githubcopilot.com", 443);
        assert_eq!(reached, preset != Preset::DenyAll, "{preset}: deny-all means only the user's rules");
        assert!(!allowed(&p, "other", "api.githubcopilot.com", 443) || preset == Preset::AllowAll, "{preset}");
        assert!(!allowed(&p, "no", "api.githubcopilot.com", 443), "{preset}: a user deny still wins");
        if preset == Preset::Balanced {
            let d = decide(&p, "cp", "api.githubcopilot.com", 443);
            let Reason::Rule(entry) = &d.reason else { panic!("{d}") };
            assert_eq!(entry.origin, Origin::Preset { preset, category: "agent" });
            assert!(allowed(&p, "cp", "pypi.org", 443), "an extension only allows");
        }
        // Kept across a policy change.
        live.update(preset, &[]);
        assert_eq!(
            allowed(&live.snapshot(), "cp", "api.githubcopilot.com", 443),
            preset != Preset::DenyAll,
            "{preset}"
        );
    }
}

#[test]
fn decisions_name_the_most_specific_rule() {
    let p = policy(Preset::DenyAll, "allow network **\nallow network **.example.com\nallow network a.example.com");
    assert_eq!(rule_of(&decide(&p, "s", "a.example.com", 443)), "allow network a.example.com");
    assert_eq!(rule_of(&decide(&p, "s", "b.example.com", 443)), "allow network **.example.com");
    let p = policy(Preset::DenyAll, "allow network 10.0.0.0/8\nallow network 10.1.0.0/16");
    assert_eq!(rule_of(&decide(&p, "s", "10.1.2.3", 1)), "allow network 10.1.0.0/16");
}

#[test]
fn invalid_request_hosts_are_denied() {
    let p = policy(Preset::AllowAll, "");
    for host in ["", "exa mple.com", "bücher.de", "a..b", "[example.com]", "2130706433", "0x7f.1", &"a".repeat(300)] {
        assert_eq!(decide(&p, "s", host, 443).reason, Reason::InvalidHost, "{host:?}");
    }
}

#[test]
fn remedies_are_exact_commands() {
    let p = policy(Preset::Balanced, "deny network **.example.com --sandbox web");
    let req = Request::new("web", "api.example.com", 443);
    let d = p.decide(&req);
    let cmds = d.remedy(&req).unwrap().commands(true);
    assert_eq!(
        cmds,
        [
            "moat policy rm deny network '**.example.com' --sandbox web",
            "moat policy allow network api.example.com --sandbox web",
        ]
    );
    let req = Request::new("my box", "Api.Other.com", 8443);
    let d = p.decide(&req);
    assert_eq!(d.remedy(&req).unwrap().commands(false), ["moat policy allow network api.other.com:8443"]);
    assert_eq!(
        d.remedy(&req).unwrap().commands(true),
        ["moat policy allow network api.other.com:8443 --sandbox 'my box'"]
    );
    let req = Request::new("web", "::1", 3000);
    let d = p.decide(&req);
    assert_eq!(d.remedy(&req).unwrap().commands(false), ["moat policy allow network '[::1]:3000'"]);
    let req = Request::new("web", "localhost", 443);
    assert_eq!(p.decide(&req).remedy(&req).unwrap().commands(false), ["moat policy allow network localhost:443"]);
    let ok = Request::new("web", "github.com", 443);
    assert!(p.decide(&ok).remedy(&ok).is_none());
}

#[test]
fn shared_policy_updates_apply_at_once() {
    let shared = Arc::new(Policy::new(Preset::DenyAll, &[]));
    let req = Request::new("web", "example.com", 443);
    let held = shared.snapshot();
    assert!(!shared.decide(&req).is_allowed());
    shared.update(Preset::DenyAll, &rules("allow network example.com --sandbox web"));
    assert!(shared.decide(&req).is_allowed());
    assert!(!held.decide(&req).is_allowed(), "an old snapshot stays consistent");
    let reader = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || (0..1000).filter(|_| shared.decide(&req).is_allowed()).count())
    };
    for i in 0..50 {
        let preset = if i % 2 == 0 { Preset::AllowAll } else { Preset::DenyAll };
        shared.update(preset, &[]);
    }
    assert!(reader.join().unwrap() <= 1000);
}

#[test]
fn the_host_alias_is_decided_as_localhost() {
    let loopback = "127.0.0.1".parse().unwrap();
    let p = Policy::new(Preset::DenyAll, &["allow network localhost:8080".parse().unwrap()]);
    assert!(p.decide(&Request::new("s", "host.moat.internal", 8080)).is_allowed());
    assert!(p.decide(&Request::new("s", "HOST.moat.internal.", 8080)).is_allowed());
    assert!(!p.decide(&Request::new("s", "host.moat.internal", 8081)).is_allowed(), "only the port the rule names");
    assert!(p.decide_address(&Request::new("s", "host.moat.internal", 8080), loopback).is_allowed());
    let p = Policy::new(Preset::AllowAll, &[]);
    let req = Request::new("s", "host.moat.internal", 80);
    assert!(!p.decide_address(&req, loopback).is_allowed(), "allow-all does not open the host machine");
}
