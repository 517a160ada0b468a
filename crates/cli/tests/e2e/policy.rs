//! `moat policy` without a guest: the rules users type, list, remove and reset.

use crate::harness::{moat_without_guest, stderr};

#[test]
fn rules_are_added_listed_removed_and_reset_with_clear_errors() {
    let m = moat_without_guest();
    assert!(m.ok(&["policy", "ls"]).contains("balanced (default, not chosen yet)"));
    assert_eq!(m.ok(&["policy", "log"]), "no connections logged yet\n");

    let added = m.ok(&["policy", "allow", "network", "api.example.com,**.pypi.org:443"]);
    assert_eq!(added, "   1  allow network api.example.com\n   2  allow network **.pypi.org:443\n");
    m.ok(&["policy", "allow", "network", "api.example.com"]);
    m.ok(&["policy", "deny", "network", "*.evil.test", "--sandbox", "web"]);
    let ls: serde_json::Value = serde_json::from_str(&m.ok(&["policy", "ls", "--json"])).unwrap();
    let rules: Vec<&str> = ls["rules"].as_array().unwrap().iter().map(|r| r["rule"].as_str().unwrap()).collect();
    assert_eq!(
        rules,
        ["allow network api.example.com", "allow network **.pypi.org:443", "deny network *.evil.test --sandbox web"],
        "adding a rule twice keeps one"
    );

    // Mistakes get a message that says what to do, and change nothing.
    let bad = m.run(&["policy", "allow", "network", "exa mple.com"]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(stderr(&bad).contains("valid forms"), "{}", stderr(&bad));
    let bad = m.run(&["policy", "rm", "42"]);
    assert!(stderr(&bad).contains("no rule 42") && stderr(&bad).contains("moat policy ls"), "{}", stderr(&bad));
    let bad = m.run(&["policy", "preset", "open"]);
    assert!(stderr(&bad).contains("allow-all, balanced or deny-all"), "{}", stderr(&bad));

    m.ok(&["policy", "rm", "1"]);
    m.ok(&["policy", "rm", "deny", "network", "*.evil.test", "--sandbox", "web"]);
    assert!(m.ok(&["policy", "ls"]).ends_with("   2  allow network **.pypi.org:443\n"));
    let all = m.ok(&["policy", "ls", "--all"]);
    assert!(all.contains("(balanced: ") && all.contains("api.anthropic.com"), "--all lists the preset's rules");

    assert_eq!(m.ok(&["policy", "reset", "--preset", "deny-all", "-y"]), "removed 1 rule(s); preset: deny-all\n");
    let ls: serde_json::Value = serde_json::from_str(&m.ok(&["policy", "ls", "--json"])).unwrap();
    assert_eq!(ls["preset"], "deny-all");
    assert_eq!(ls["preset_chosen"], true);
    assert!(ls["rules"].as_array().unwrap().is_empty());
}

#[test]
fn custom_services_are_checked_before_they_are_stored() {
    let m = moat_without_guest();
    let bad = m.run(&["secret", "set-custom", "internal", "--host", "*.internal.test"]);
    assert!(stderr(&bad).contains("exact host names"), "{}", stderr(&bad));
    let bad = m.run(&["secret", "set-custom", "internal", "--host", "api.internal.test", "--header", "X-Key: static"]);
    assert!(stderr(&bad).contains("{}"), "{}", stderr(&bad));
    let bad = m.run(&["secret", "set-custom", "github", "--host", "api.internal.test"]);
    assert_eq!(bad.status.code(), Some(125), "a built-in name can't be redefined");
    m.ok(&["secret", "set-custom", "internal", "--host", "api.internal.test", "--header", "X-Key: {}"]);
    m.ok(&["secret", "set", "-g", "internal", "-t", "v4lue"]);
    assert!(m.ok(&["secret", "ls"]).contains("internal"));
}
