use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use moat_netproxy::proxy::{Headers, Intercept, Redaction};
use moat_secrets::{Scope, Secret, ValueSource};

use super::CredentialInjector;
use crate::credentials::open_vault;
use crate::paths::Home;

struct Fixture {
    _dir: tempfile::TempDir,
    hook: CredentialInjector,
    real_gh: String,
    real_ant: String,
    ph_gh: String,
    ph_ant: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path());
    home.ensure_private().unwrap();
    let vault = open_vault(&home).unwrap();
    let real_gh = format!("ghp_{}", "R".repeat(36));
    vault.set(&Scope::Global, "github", ValueSource::Literal(Secret::new(real_gh.clone()))).unwrap();
    let real_ant = format!("sk-ant-api03-{}", "A".repeat(95));
    vault.set(&Scope::Sandbox("s1".into()), "anthropic", ValueSource::Literal(Secret::new(real_ant.clone()))).unwrap();
    let ph_gh = vault.placeholder("github", "s1").unwrap();
    let ph_ant = vault.placeholder("anthropic", "s1").unwrap();
    Fixture { _dir: dir, hook: CredentialInjector::new(vault), real_gh, real_ant, ph_gh, ph_ant }
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    let mut h = Headers::new();
    for (k, v) in pairs {
        h.append(k, v.as_bytes()).unwrap();
    }
    h
}

fn get(h: &Headers, name: &str) -> Option<String> {
    h.get(name).map(|v| String::from_utf8(v.to_vec()).unwrap())
}

#[test]
fn only_managed_service_hosts_are_intercepted() {
    let f = fixture();
    assert!(f.hook.wants("s1", "api.github.com", 443));
    assert!(f.hook.wants("s2", "api.github.com", 443), "a global credential serves every sandbox");
    assert!(!f.hook.wants("s1", "example.com", 443));
    assert!(!f.hook.wants("s1", "evil-api.github.com", 443), "exact service hosts only");
    assert!(f.hook.wants("s1", "api.anthropic.com", 443));
    assert!(!f.hook.wants("s2", "api.anthropic.com", 443), "s1's own credential is not s2's");
    assert!(!f.hook.wants("s1", "api.openai.com", 443), "no credential, no interception");
}

#[test]
fn the_sandbox_s_placeholder_becomes_the_real_value_in_any_header_shape() {
    let f = fixture();
    let mut h = headers(&[("Authorization", &format!("token {}", f.ph_gh)), ("X-Other", "keep me")]);
    let note = f.hook.rewrite("s1", "api.github.com", &mut h).unwrap();
    assert_eq!(get(&h, "authorization").unwrap(), format!("token {}", f.real_gh));
    assert_eq!(get(&h, "x-other").unwrap(), "keep me");
    assert!(note.contains("injected the github credential"), "{note}");
    assert!(!note.contains(&f.real_gh), "notes never carry values");

    let basic = STANDARD.encode(format!("x-access-token:{}", f.ph_gh));
    let mut h = headers(&[("Authorization", &format!("Basic {basic}"))]);
    f.hook.rewrite("s1", "github.com", &mut h).unwrap();
    let sent = get(&h, "authorization").unwrap();
    let decoded = String::from_utf8(STANDARD.decode(sent.strip_prefix("Basic ").unwrap()).unwrap()).unwrap();
    assert_eq!(decoded, format!("x-access-token:{}", f.real_gh), "git's Basic credentials too");
}

#[test]
fn placeholders_go_nowhere_else_and_guest_supplied_credentials_are_stripped() {
    let f = fixture();
    // Another sandbox's placeholder is not this one's credential.
    let mut h = headers(&[("Authorization", &format!("token {}", f.ph_gh))]);
    assert_eq!(f.hook.rewrite("s2", "api.github.com", &mut h), None);
    assert_eq!(get(&h, "authorization").unwrap(), format!("token {}", f.ph_gh));
    // The anthropic placeholder sent to GitHub stays a placeholder.
    let mut h = headers(&[("Authorization", &format!("Bearer {}", f.ph_ant))]);
    let note = f.hook.rewrite("s1", "api.github.com", &mut h).unwrap();
    assert!(note.contains("placeholder for anthropic"), "{note}");
    assert_eq!(get(&h, "authorization").unwrap(), format!("Bearer {}", f.ph_ant));
    // A real-looking GitHub token the guest brought is removed.
    let smuggled = format!("ghp_{}", "S".repeat(36));
    let mut h = headers(&[("Authorization", &format!("token {smuggled}")), ("Accept", "*/*")]);
    let note = f.hook.rewrite("s1", "api.github.com", &mut h).unwrap();
    assert!(note.contains("stripped"), "{note}");
    assert_eq!(get(&h, "authorization"), None);
    assert_eq!(get(&h, "accept").unwrap(), "*/*");
    // On plain HTTP nothing is rewritten, but the log hears of it.
    let h = headers(&[("Authorization", &format!("token {}", f.ph_gh))]);
    assert!(f.hook.inspect("s1", "example.com", &h).unwrap().contains("plain HTTP"));
    assert_eq!(f.hook.inspect("s1", "example.com", &headers(&[("Accept", "*/*")])), None);
}

#[test]
fn a_custom_service_gets_its_header_set_on_its_own_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path());
    home.ensure_private().unwrap();
    let vault = open_vault(&home).unwrap();
    vault
        .add_custom_service(moat_secrets::catalog::CustomService {
            id: "internal".into(),
            hosts: vec!["api.internal.test".into()],
            header: "X-Api-Key".into(),
            template: "key={}".into(),
        })
        .unwrap();
    let hook = CredentialInjector::new(vault);
    assert!(!hook.wants("s1", "api.internal.test", 443), "defined, but no value yet");
    let vault = open_vault(&home).unwrap();
    vault.set(&Scope::Global, "internal", ValueSource::Literal(Secret::new("s3cret"))).unwrap();
    assert!(hook.wants("s1", "api.internal.test", 443), "the hook sees the vault change at once");
    assert!(!hook.wants("s1", "other.internal.test", 443));
    let mut h = headers(&[("X-Api-Key", "guest-made"), ("Accept", "*/*")]);
    assert!(hook.rewrite("s1", "api.internal.test", &mut h).unwrap().contains("injected"));
    assert_eq!(get(&h, "x-api-key").unwrap(), "key=s3cret");
    assert_eq!(h.len(), 2);
}

#[test]
fn only_the_service_s_own_authentication_headers_get_the_credential() {
    let f = fixture();
    let mut h = headers(&[
        ("Authorization", &format!("token {}", f.ph_gh)),
        ("X-Debug-Echo", &f.ph_gh),
        ("Cookie", &format!("t={} other", f.ph_gh)),
    ]);
    let note = f.hook.rewrite("s1", "api.github.com", &mut h).unwrap();
    assert_eq!(get(&h, "authorization").unwrap(), format!("token {}", f.real_gh));
    assert_eq!(get(&h, "x-debug-echo").unwrap(), f.ph_gh, "a header the service may reflect keeps the placeholder");
    assert_eq!(get(&h, "cookie").unwrap(), format!("t={} other", f.ph_gh));
    assert!(note.contains("placeholder in X-Debug-Echo left as is: only Authorization"), "{note}");
    assert!(!note.contains(&f.real_gh));
    // Anthropic takes an API key in x-api-key and an OAuth token as a bearer token.
    let mut h = headers(&[("x-api-key", &f.ph_ant), ("X-Trace", &f.ph_ant)]);
    f.hook.rewrite("s1", "api.anthropic.com", &mut h).unwrap();
    assert_eq!((get(&h, "x-api-key").unwrap(), get(&h, "x-trace").unwrap()), (f.real_ant.clone(), f.ph_ant.clone()));
    let mut h = headers(&[("Authorization", &format!("Bearer {}", f.ph_ant))]);
    f.hook.rewrite("s1", "api.anthropic.com", &mut h).unwrap();
    assert_eq!(get(&h, "authorization").unwrap(), format!("Bearer {}", f.real_ant));
}

#[test]
fn answers_from_a_service_have_its_real_value_swapped_back_for_the_placeholder() {
    let f = fixture();
    let gh = Redaction::new(f.real_gh.clone().into_bytes(), f.ph_gh.clone().into_bytes());
    assert_eq!(f.hook.redactions("s1", "api.github.com"), vec![gh]);
    let ant = Redaction::new(f.real_ant.clone().into_bytes(), f.ph_ant.clone().into_bytes());
    assert_eq!(f.hook.redactions("s1", "api.anthropic.com"), vec![ant]);
    assert_eq!(f.hook.redactions("s2", "api.anthropic.com"), vec![], "s2 has no anthropic credential");
    assert_eq!(f.hook.redactions("s1", "example.com"), vec![]);
    let debug = format!("{:?}", f.hook.redactions("s1", "api.github.com"));
    assert!(!debug.contains(&f.real_gh), "Debug never prints the value: {debug}");
}
