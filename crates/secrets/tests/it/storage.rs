use std::fs;
use std::os::unix::fs::PermissionsExt;

use moat_secrets::test_utils::TempVault;
use moat_secrets::{FileKeyStore, Scope, Secret, ValueSource, Vault};

fn lit(v: &str) -> ValueSource {
    ValueSource::Literal(Secret::new(v))
}

fn mode(p: &std::path::Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn files_are_private_and_values_are_not_in_clear() {
    let t = TempVault::new();
    let v = t.open().unwrap();
    v.set(&Scope::Global, "mistral", lit("mistral-plaintext-value")).unwrap();
    assert_eq!(mode(&t.vault_path()), 0o600);
    assert_eq!(mode(&t.key_path()), 0o600);
    assert_eq!(mode(t.vault_path().parent().unwrap()), 0o700);
    let bytes = fs::read(t.vault_path()).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("mistral"));
    let leftovers: Vec<_> = fs::read_dir(t.vault_path().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn wrong_key_names_the_key_file() {
    let t = TempVault::new();
    t.open().unwrap().set(&Scope::Global, "xai", lit("xai-1")).unwrap();
    let other_key = t.root().join("other/key");
    let e = Vault::open(t.vault_path(), &FileKeyStore::new(&other_key)).unwrap_err().to_string();
    assert!(e.contains("another key") && e.contains(&other_key.display().to_string()), "{e}");
}

fn assert_corrupt_is_refused(t: &TempVault, mangle: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = fs::read(t.vault_path()).unwrap();
    mangle(&mut bytes);
    fs::write(t.vault_path(), &bytes).unwrap();
    let e = t.open().unwrap_err().to_string();
    assert!(e.contains("corrupt") && e.contains("left untouched"), "{e}");
    assert_eq!(fs::read(t.vault_path()).unwrap(), bytes);
}

#[test]
fn corrupt_file_is_an_error_and_left_unchanged() {
    for case in 0..3 {
        let t = TempVault::new();
        let v = t.open().unwrap();
        v.set(&Scope::Global, "xai", lit("xai-1")).unwrap();
        v.set(&Scope::Global, "groq", lit("gsk-1")).unwrap();
        match case {
            0 => assert_corrupt_is_refused(&t, |b| b.truncate(b.len() / 2)),
            1 => assert_corrupt_is_refused(&t, |b| {
                let i = b.len() - 5;
                b[i] ^= 0x40;
            }),
            _ => assert_corrupt_is_refused(&t, |b| b.truncate(3)),
        }
        let damaged = fs::read(t.vault_path()).unwrap();
        assert!(v.set(&Scope::Global, "openai", lit("sk-x")).is_err());
        assert!(v.rm(&Scope::Global, "xai").is_err());
        assert!(v.resolve("s", "xai").is_err());
        assert_eq!(fs::read(t.vault_path()).unwrap(), damaged, "case {case}");
    }
}

#[test]
fn concurrent_writers_all_land() {
    let t = TempVault::new();
    t.open().unwrap();
    let services = ["anthropic", "openai", "github", "google", "groq", "mistral", "nebius", "xai"];
    std::thread::scope(|s| {
        for svc in services {
            let t = &t;
            s.spawn(move || {
                let v = t.open().unwrap();
                for i in 0..5 {
                    v.set(&Scope::Sandbox(format!("sb-{i}")), svc, lit(&format!("{svc}-{i}"))).unwrap();
                }
            });
        }
    });
    let v = t.open().unwrap();
    assert_eq!(v.list().unwrap().len(), services.len() * 5);
    for svc in services {
        assert_eq!(v.resolve("sb-4", svc).unwrap().unwrap().expose(), format!("{svc}-4"));
    }
}

#[test]
fn concurrent_processes_all_land() {
    let t = TempVault::new();
    t.open().unwrap();
    let services = ["anthropic", "openai", "github", "google"];
    let children: Vec<_> = services.iter().map(|svc| crate::crash::spawn_child(&t, "set", svc)).collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let v = t.open().unwrap();
    for svc in services {
        for i in 0..10 {
            assert_eq!(v.resolve(&format!("p{i}"), svc).unwrap().unwrap().expose(), format!("{svc}-{i}"));
        }
    }
}
