use std::time::Duration;

use moat_secrets::test_utils::TempVault;
use moat_secrets::{CustomService, Scope, Secret, Source, ValueSource};

fn lit(v: &str) -> ValueSource {
    ValueSource::Literal(Secret::new(v))
}

fn sb(name: &str) -> Scope {
    Scope::Sandbox(name.into())
}

#[test]
fn sandbox_value_wins_over_global_and_rm_falls_back() {
    let t = TempVault::new();
    let v = t.open().unwrap();
    assert!(v.resolve("a", "anthropic").unwrap().is_none());
    v.set(&Scope::Global, "anthropic", lit("global-key")).unwrap();
    v.set(&sb("a"), "anthropic", lit("a-key")).unwrap();
    assert_eq!(v.resolve("a", "anthropic").unwrap().unwrap().expose(), "a-key");
    assert_eq!(v.resolve("b", "anthropic").unwrap().unwrap().expose(), "global-key");
    assert!(v.rm(&sb("a"), "anthropic").unwrap());
    assert!(!v.rm(&sb("a"), "anthropic").unwrap());
    assert_eq!(v.resolve("a", "anthropic").unwrap().unwrap().expose(), "global-key");
    v.set(&Scope::Global, "anthropic", lit("rotated")).unwrap();
    assert_eq!(v.resolve("a", "anthropic").unwrap().unwrap().expose(), "rotated");
}

#[test]
fn another_handle_sees_changes_at_once() {
    let t = TempVault::new();
    let writer = t.open().unwrap();
    let reader = t.open().unwrap();
    assert!(reader.resolve("s", "groq").unwrap().is_none());
    writer.set(&Scope::Global, "groq", lit("one")).unwrap();
    assert_eq!(reader.resolve("s", "groq").unwrap().unwrap().expose(), "one");
    writer.set(&Scope::Global, "groq", lit("two")).unwrap();
    assert_eq!(reader.resolve("s", "groq").unwrap().unwrap().expose(), "two");
    writer.rm(&Scope::Global, "groq").unwrap();
    assert!(reader.resolve("s", "groq").unwrap().is_none());
}

#[test]
fn list_shows_sources_never_values() {
    let t = TempVault::new();
    let v = t.open().unwrap();
    v.set(&Scope::Global, "openai", lit("sk-proj-verysecret")).unwrap();
    let cmd = ValueSource::Command { cmd: "gh auth token".into(), ttl: Duration::from_secs(300) };
    v.set(&sb("x"), "github", cmd).unwrap();
    let mut list = v.list().unwrap();
    list.sort_by(|a, b| a.service.cmp(&b.service));
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].service, "github");
    assert_eq!(list[0].scope, sb("x"));
    assert_eq!(list[0].source, Source::Command { cmd: "gh auth token".into(), ttl: Duration::from_secs(300) });
    assert_eq!(list[1].source, Source::Literal);
    assert!(!format!("{list:?}").contains("verysecret"));
    assert!(!format!("{v:?}").contains("verysecret"));
    assert!(!format!("{:?}", v.resolve("x", "openai").unwrap()).contains("verysecret"));
}

#[test]
fn unknown_service_lists_known_ones() {
    let t = TempVault::new();
    let v = t.open().unwrap();
    let e = v.set(&Scope::Global, "antropic", lit("x")).unwrap_err().to_string();
    assert!(e.contains("antropic") && e.contains("anthropic, openai, github"), "{e}");
    assert!(v.resolve("s", "nope").is_err());
    assert!(v.placeholder("nope", "s").is_err());
}

#[test]
fn custom_service_persists_and_gets_placeholders() {
    let t = TempVault::new();
    let v = t.open().unwrap();
    let custom = CustomService {
        id: "acme".into(),
        hosts: vec!["api.acme.dev".into()],
        header: "Authorization".into(),
        template: "Bearer {}".into(),
    };
    v.add_custom_service(custom.clone()).unwrap();
    v.set(&Scope::Global, "acme", lit("acme-real")).unwrap();
    let again = t.open().unwrap();
    assert_eq!(again.custom_services().unwrap(), vec![custom]);
    assert_eq!(again.resolve("s", "acme").unwrap().unwrap().expose(), "acme-real");
    let ph = again.placeholder("acme", "s").unwrap();
    assert!(ph.starts_with("moat-ph-"));
    assert_eq!(again.is_placeholder_for(&ph, "s").as_deref(), Some("acme"));
    let builtin = CustomService { id: "github".into(), ..again.custom_services().unwrap()[0].clone() };
    assert!(v.add_custom_service(builtin).is_err());
}

#[test]
fn command_source_is_cached_until_ttl_then_rerun() {
    let t = TempVault::new();
    let v = t.open().unwrap();
    let counter = t.root().join("count");
    let cmd = format!("echo x >> {0}; wc -l < {0}", counter.display());
    v.set(&Scope::Global, "github", ValueSource::Command { cmd, ttl: Duration::from_secs(1) }).unwrap();
    let first = v.resolve("s", "github").unwrap().unwrap();
    let cached = v.resolve("s", "github").unwrap().unwrap();
    assert_eq!(first.expose(), "1");
    assert_eq!(cached.expose(), "1", "re-run before the TTL");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(v.resolve("s", "github").unwrap().unwrap().expose(), "2", "not re-run after the TTL");
}

#[test]
fn failing_command_is_a_clear_error() {
    let t = TempVault::new();
    let v = t.open().unwrap();
    let cmd = "echo 'gh: not logged in' >&2; exit 1".to_string();
    v.set(&Scope::Global, "github", ValueSource::Command { cmd, ttl: Duration::from_secs(60) }).unwrap();
    let e = v.resolve("s", "github").unwrap_err();
    let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(chain.contains("github") && chain.contains("not logged in"), "{chain}");
}

/// Lines in the file a counting command appends to.
fn runs(counter: &std::path::Path) -> usize {
    std::fs::read_to_string(counter).map_or(0, |s| s.lines().count())
}

#[test]
fn a_ttl_of_zero_runs_the_command_once_for_a_burst_of_requests() {
    let t = TempVault::new();
    let v = std::sync::Arc::new(t.open().unwrap());
    let counter = t.root().join("count");
    let cmd = format!("echo x >> {0}; sleep 0.3; wc -l < {0}", counter.display());
    v.set(&Scope::Global, "github", ValueSource::Command { cmd, ttl: Duration::ZERO }).unwrap();
    // Concurrent requests share one run...
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let v = std::sync::Arc::clone(&v);
            std::thread::spawn(move || v.resolve("s", "github").unwrap().unwrap().expose().to_string())
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), "1");
    }
    // ...and later ones reuse its output for the minimum TTL.
    for _ in 0..20 {
        assert_eq!(v.resolve("s", "github").unwrap().unwrap().expose(), "1");
    }
    assert_eq!(runs(&counter), 1);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(v.resolve("s", "github").unwrap().unwrap().expose(), "2", "re-run after the minimum TTL");
}

#[test]
fn a_failing_command_is_not_rerun_for_every_request() {
    let t = TempVault::new();
    let v = t.open().unwrap();
    let counter = t.root().join("count");
    let cmd = format!("echo x >> {}; echo 'not logged in' >&2; exit 1", counter.display());
    v.set(&Scope::Global, "github", ValueSource::Command { cmd, ttl: Duration::ZERO }).unwrap();
    for _ in 0..10 {
        let e = v.resolve("s", "github").unwrap_err();
        assert!(std::error::Error::source(&e).unwrap().to_string().contains("not logged in"));
    }
    assert_eq!(runs(&counter), 1);
}

#[test]
fn a_command_runs_inside_the_embedders_blocking_section() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SECTIONS: AtomicUsize = AtomicUsize::new(0);
    let t = TempVault::new();
    let options = moat_secrets::VaultOptions {
        blocking: |work| {
            SECTIONS.fetch_add(1, Ordering::SeqCst);
            work();
        },
        ..Default::default()
    };
    let v = t.open_with(options).unwrap();
    v.set(&Scope::Global, "github", ValueSource::Command { cmd: "echo tok".into(), ttl: Duration::from_secs(60) })
        .unwrap();
    v.set(&Scope::Global, "anthropic", lit("literal")).unwrap();
    assert_eq!(v.resolve("s", "github").unwrap().unwrap().expose(), "tok");
    assert_eq!(v.resolve("s", "github").unwrap().unwrap().expose(), "tok");
    assert_eq!(v.resolve("s", "anthropic").unwrap().unwrap().expose(), "literal");
    assert_eq!(SECTIONS.load(Ordering::SeqCst), 1, "only the run blocks; cached and literal values don't");
}
