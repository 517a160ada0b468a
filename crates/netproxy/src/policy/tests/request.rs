//! Request rules: deny wins, an `allow request` makes a host allow-listed,
//! other hosts and sandboxes are untouched, ambiguous paths are refused.

use super::super::{Action, Reason, Rule, Scope};
use super::{policy, rules, Preset, Request};

fn decide(text: &str, sandbox: &str, host: &str, method: &str, path: &str) -> Option<(bool, String)> {
    let p = policy(Preset::Balanced, text);
    p.decide_request(&Request::new(sandbox, host, 443), method, path).map(|d| (d.is_allowed(), d.to_string()))
}

#[test]
fn a_deny_refuses_only_what_it_names() {
    let text = "deny request DELETE api.github.com/repos/**";
    let (allowed, why) = decide(text, "s", "api.github.com", "DELETE", "/repos/a/b").unwrap();
    assert!(!allowed && why.contains("deny request DELETE api.github.com/repos/**"), "{why}");
    assert!(!decide(text, "s", "API.GitHub.com.", "delete", "/repos/a").unwrap().0, "any spelling of host and method");
    assert_eq!(decide(text, "s", "api.github.com", "GET", "/repos/a"), None, "other methods: no opinion");
    assert_eq!(decide(text, "s", "api.github.com", "DELETE", "/user"), None);
    assert_eq!(decide(text, "s", "github.com", "DELETE", "/repos/a"), None, "other hosts");
}

#[test]
fn an_allow_makes_its_host_allow_listed_and_deny_still_wins() {
    let text = "allow request GET,HEAD api.github.com/repos/**\ndeny request * api.github.com/repos/secret/**";
    assert!(decide(text, "s", "api.github.com", "GET", "/repos/a").unwrap().0);
    let (allowed, why) = decide(text, "s", "api.github.com", "POST", "/repos/a").unwrap();
    assert!(!allowed && why.contains("none covers"), "{why}");
    assert!(!decide(text, "s", "api.github.com", "GET", "/repos/secret/x").unwrap().0);
    assert_eq!(decide(text, "s", "uploads.github.com", "POST", "/x"), None);
}

#[test]
fn rules_for_one_sandbox_leave_the_others_alone() {
    let text = "deny request POST api.openai.com --sandbox web";
    assert!(!decide(text, "web", "api.openai.com", "POST", "/v1/files").unwrap().0);
    assert_eq!(decide(text, "ci", "api.openai.com", "POST", "/v1/files"), None);
    let p = policy(Preset::Balanced, text);
    assert!(p.reads_requests(&Request::new("web", "api.openai.com", 443)));
    assert!(!p.reads_requests(&Request::new("ci", "api.openai.com", 443)), "no reason to intercept for ci");
    assert!(!p.reads_requests(&Request::new("web", "example.com", 443)));
}

#[test]
fn a_path_that_reads_two_ways_is_denied_where_request_rules_apply() {
    let text = "deny request DELETE api.github.com/repos/*/keep";
    for path in ["/repos/a/../a/keep", "/repos/a%2Fkeep", "/repos//a/keep"] {
        let (allowed, why) = decide(text, "s", "api.github.com", "GET", path).unwrap();
        assert!(!allowed && why.contains("read two ways"), "{path}: {why}");
    }
    assert!(!decide(text, "s", "api.github.com", "DELETE", "/repos/%61/keep").unwrap().0, "escapes decoded");
    assert_eq!(decide(text, "s", "elsewhere.test", "GET", "/a/../b"), None, "hosts without request rules: no opinion");
}

#[test]
fn request_rules_never_open_a_host_and_print_as_they_parse() {
    let p = policy(Preset::DenyAll, "allow request GET api.example.test");
    assert!(!p.decide(&Request::new("s", "api.example.test", 443)).is_allowed(), "only network rules open hosts");
    for text in
        ["deny request DELETE api.github.com/repos/**", "allow request GET,HEAD **.example.com:8080 --sandbox web"]
    {
        let rule: Rule = text.parse().unwrap();
        assert_eq!(rule.to_string(), text);
        let json = serde_json::to_string(&rule).unwrap();
        assert_eq!(serde_json::from_str::<Rule>(&json).unwrap(), rule, "{json}");
    }
    let list = Rule::parse_requests(Action::Deny, &Scope::Global, "DELETE", "a.test/**,b.test").unwrap();
    assert_eq!(list, rules("deny request DELETE a.test/**\ndeny request DELETE b.test"));
    let err = Rule::parse_requests(Action::Deny, &Scope::Global, "DELETE", "10.0.0.1").unwrap_err();
    assert!(err.to_string().contains("not IP addresses"), "{err}");
    assert!(matches!(
        policy(Preset::Balanced, "allow request GET a.test").decide_request(&Request::new("s", "a.test", 443), "PUT", "/"),
        Some(d) if d.reason == Reason::NoRequestRule
    ));
}
