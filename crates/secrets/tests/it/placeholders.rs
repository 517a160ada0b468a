use moat_secrets::catalog::{self, Alphabet};
use moat_secrets::test_utils::TempVault;
use moat_secrets::{Scope, Secret, ValueSource};

#[test]
fn placeholders_have_each_services_format() {
    let t = TempVault::new();
    let v = t.open().unwrap();
    for s in catalog::SERVICES {
        let ph = v.placeholder(s.id, "sb1").unwrap();
        let f = s.formats[0];
        let body = ph.strip_prefix(f.prefix).unwrap_or_else(|| panic!("{}: {ph}", s.id));
        assert_eq!(body.len(), f.len, "{}: {ph}", s.id);
        assert!(body.bytes().all(|c| f.alphabet.contains(c)), "{}: {ph}", s.id);
        assert!(f.matches(&ph), "{}", s.id);
    }
    let gh = v.placeholder("github", "sb1").unwrap();
    assert!(gh.starts_with("github_pat_") && gh.len() == 93 && gh[11..].bytes().all(|c| Alphabet::Alnum.contains(c)));
    let g = v.placeholder("google", "sb1").unwrap();
    assert!(g.starts_with("AIza") && g.len() == 39);
    assert!(v.placeholder("anthropic", "sb1").unwrap().starts_with("sk-ant-api03-"));
    assert!(v.placeholder("openai", "sb1").unwrap().starts_with("sk-proj-"));
    assert!(v.placeholder("xai", "sb1").unwrap().starts_with("xai-"));
    assert!(v.placeholder("groq", "sb1").unwrap().starts_with("gsk_"));
}

#[test]
fn stable_per_installation_and_sandbox_distinct_otherwise() {
    let a = TempVault::new();
    let b = TempVault::new();
    let (va, va2, vb) = (a.open().unwrap(), a.open().unwrap(), b.open().unwrap());
    for s in catalog::SERVICES {
        let p = va.placeholder(s.id, "one").unwrap();
        assert_eq!(p, va2.placeholder(s.id, "one").unwrap(), "stable across handles/restarts");
        assert_ne!(p, va.placeholder(s.id, "two").unwrap(), "distinct per sandbox");
        assert_ne!(p, vb.placeholder(s.id, "one").unwrap(), "distinct per installation");
    }
}

#[test]
fn is_placeholder_recognises_ours_only() {
    let a = TempVault::new();
    let b = TempVault::new();
    let va = a.open().unwrap();
    let vb = b.open().unwrap();
    let p = va.placeholder("github", "sb").unwrap();
    assert_eq!(va.is_placeholder(&p), Some(("github".into(), "sb".into())));
    assert_eq!(va.is_placeholder_for(&p, "sb").as_deref(), Some("github"));
    assert_eq!(va.is_placeholder_for(&p, "other"), None);
    assert_eq!(vb.is_placeholder(&p), None, "another installation's placeholder");
    // A fresh handle (a restarted proxy) knows sandboxes from their entries.
    va.set(&Scope::Sandbox("sb2".into()), "xai", ValueSource::Literal(Secret::new("xai-x"))).unwrap();
    let p2 = va.placeholder("anthropic", "sb2").unwrap();
    let fresh = a.open().unwrap();
    assert_eq!(fresh.is_placeholder(&p2), Some(("anthropic".into(), "sb2".into())));
}

#[test]
fn placeholders_are_not_real_credentials_and_real_ones_are_detected() {
    let t = TempVault::new();
    let v = t.open().unwrap();
    let real_gh = format!("ghp_{}", "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE2fG4");
    assert_eq!(real_gh.len(), 40);
    assert!(v.looks_like_real_credential("github", &real_gh));
    assert!(v.looks_like_real_credential("github", &format!("gho_{}", "Z".repeat(36))));
    assert!(v.looks_like_real_credential("google", &format!("AIza{}", "S".repeat(35))));
    assert_eq!(v.is_placeholder(&real_gh), None);
    assert!(!v.looks_like_real_credential("github", "hello"));
    for s in catalog::SERVICES {
        let ph = v.placeholder(s.id, "sb").unwrap();
        assert!(!v.looks_like_real_credential(s.id, &ph), "{}", s.id);
    }
    // Tampering with one character of the body breaks the check.
    let mut ph = v.placeholder("github", "sb").unwrap().into_bytes();
    let i = "github_pat_".len() + 4;
    ph[i] = if ph[i] == b'A' { b'B' } else { b'A' };
    let ph = String::from_utf8(ph).unwrap();
    assert_eq!(v.is_placeholder(&ph), None);
    assert!(v.looks_like_real_credential("github", &ph));
}
