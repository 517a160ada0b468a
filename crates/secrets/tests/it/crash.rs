//! Child processes: the test binary re-invoked with `MOAT_SECRETS_CHILD`
//! set runs [`child_main`] instead of a normal test.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use moat_secrets::test_utils::TempVault;
use moat_secrets::{FileKeyStore, Scope, Secret, ValueSource, Vault};

const ENV: &str = "MOAT_SECRETS_CHILD";

/// Re-runs this test binary as a child doing `mode` on `t`'s vault.
pub fn spawn_child(t: &TempVault, mode: &str, arg: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash::child_main", "--nocapture", "--test-threads=1"])
        .env(ENV, format!("{mode}\n{arg}\n{}\n{}", t.vault_path().display(), t.key_path().display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Not a test of its own: a no-op unless `MOAT_SECRETS_CHILD` is set.
#[test]
fn child_main() {
    let Ok(spec) = std::env::var(ENV) else { return };
    let parts: Vec<&str> = spec.lines().collect();
    let (mode, arg, vault, key) = (parts[0], parts[1], parts[2], parts[3]);
    let v = Vault::open(vault, &FileKeyStore::new(key)).unwrap();
    match mode {
        "set" => {
            for i in 0..10 {
                let value = ValueSource::Literal(Secret::new(format!("{arg}-{i}")));
                v.set(&Scope::Sandbox(format!("p{i}")), arg, value).unwrap();
            }
        }
        "loop" => {
            // Sets anthropic=N then openai=N, for N = 1, 2, … until killed.
            for n in 1u64.. {
                for svc in ["anthropic", "openai"] {
                    v.set(&Scope::Global, svc, ValueSource::Literal(Secret::new(format!("{n}")))).unwrap();
                }
            }
        }
        _ => panic!("unknown child mode {mode}"),
    }
}

fn pseudo_random(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn kill_9_mid_write_leaves_old_or_new_state() {
    let t = TempVault::new();
    let v = t.open().unwrap();
    v.set(&Scope::Global, "xai", ValueSource::Literal(Secret::new("untouched"))).unwrap();
    let mut seed = std::process::id() as u64 | 1;
    let mut last = 0u64;
    for round in 0..8 {
        let mut child = spawn_child(&t, "loop", "");
        std::thread::sleep(Duration::from_millis(150 + pseudo_random(&mut seed) % 150));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let fresh = t.open().unwrap_or_else(|e| panic!("round {round}: vault unreadable after kill: {e}"));
        assert_eq!(fresh.resolve("s", "xai").unwrap().unwrap().expose(), "untouched");
        let a: u64 = fresh.resolve("s", "anthropic").unwrap().map_or(0, |s| s.expose().parse().unwrap());
        let o: u64 = fresh.resolve("s", "openai").unwrap().map_or(0, |s| s.expose().parse().unwrap());
        // Writes are sequential: anthropic=N is written before openai=N.
        assert!(a == o || a == o + 1, "round {round}: anthropic {a}, openai {o}");
        last = last.max(a);
        eprintln!("round {round}: killed after {a} writes");
    }
    assert!(last > 0, "the child never wrote: the test proved nothing");
    // The next write sweeps temp files the killed writers left behind.
    v.set(&Scope::Global, "xai", ValueSource::Literal(Secret::new("after"))).unwrap();
    let dir = t.vault_path().parent().unwrap().to_path_buf();
    let temps =
        std::fs::read_dir(dir).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains(".tmp."));
    assert_eq!(temps.count(), 0);
}
