//! A Moat installation of its own for each test: temporary home, its own daemon,
//! real VMs under QEMU. Cleaned up on drop.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The `moat` binary under test.
pub fn moat_bin() -> &'static str {
    env!("CARGO_BIN_EXE_moat")
}

/// Why guest tests can't run here, if they can't.
fn missing_requirement() -> Option<String> {
    static CHECK: OnceLock<Option<String>> = OnceLock::new();
    CHECK
        .get_or_init(|| {
            let agent = std::env::var_os("MOAT_AGENT_BIN")?;
            if !Path::new(&agent).is_file() {
                return Some(format!("MOAT_AGENT_BIN={} is not a file", agent.to_string_lossy()));
            }
            // Images must already be in the cache (`cargo xtask test` makes sure); building
            // a kernel inside a test would take minutes.
            let out = Command::new(moat_bin()).args(["image", "build", "--all"]).stdin(Stdio::null()).output().ok()?;
            if !out.status.success() {
                return Some(format!("guest images unavailable: {}", String::from_utf8_lossy(&out.stderr)));
            }
            None
        })
        .clone()
        .or_else(|| {
            std::env::var_os("MOAT_AGENT_BIN")
                .is_none()
                .then(|| "MOAT_AGENT_BIN is not set (run the tests with `cargo xtask test`)".into())
        })
}

/// A private Moat installation, or `None` (after a loud message) when this machine
/// can't run guests. With `MOAT_REQUIRE_E2E=1`, a missing requirement fails the test.
pub fn moat() -> Option<Moat> {
    if let Some(why) = missing_requirement() {
        if std::env::var("MOAT_REQUIRE_E2E").as_deref() == Ok("1") {
            panic!("MOAT_REQUIRE_E2E=1 but guest tests cannot run: {why}");
        }
        eprintln!("\n!!! SKIPPING guest end-to-end test: {why}\n");
        return None;
    }
    Some(Moat::new())
}

/// A private Moat installation for tests that need the daemon but no guest.
pub fn moat_without_guest() -> Moat {
    Moat::new()
}

pub struct Moat {
    home: tempfile::TempDir,
    /// A scratch folder for workspaces.
    pub scratch: tempfile::TempDir,
}

impl Moat {
    fn new() -> Moat {
        Moat {
            home: tempfile::Builder::new().prefix("moat-e2e-").tempdir().unwrap(),
            scratch: tempfile::tempdir().unwrap(),
        }
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// A new empty workspace folder named `name` under the scratch folder.
    pub fn workspace(&self, name: &str) -> PathBuf {
        let p = self.scratch.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p.canonicalize().unwrap()
    }

    /// `moat` with this installation's environment.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(moat_bin());
        // No session bus: a developer's desktop keyring must not collect test installations' keys.
        c.env("MOAT_HOME", self.home.path())
            .env_remove("MOAT_BACKEND")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .stdin(Stdio::null());
        c
    }

    /// Runs `moat args…`, returning its output. A command that hangs is killed after
    /// five minutes, so a hang fails the test instead of stalling the suite.
    pub fn run(&self, args: &[&str]) -> Output {
        let child = self.cmd().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("running moat");
        let pid = child.id() as i32;
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if done_rx.recv_timeout(std::time::Duration::from_secs(300)).is_err() {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
        let out = child.wait_with_output().expect("waiting for moat");
        let _ = done_tx.send(());
        let _ = watchdog.join();
        assert!(out.status.signal() != Some(libc::SIGKILL), "moat {args:?} hung for 5 minutes and was killed");
        out
    }

    /// Runs `moat args…` and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "moat {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Creates and starts a small sandbox `name` on `workspace`.
    pub fn sandbox(&self, name: &str, workspace: &Path, extra: &[&str]) {
        let mut args = vec!["create", "--name", name, "-m", "1g", "--cpus", "1", "shell"];
        args.push(workspace.to_str().unwrap());
        args.extend_from_slice(extra);
        self.ok(&args);
        self.ok(&["start", name]);
    }

    /// `moat exec NAME sh -c SCRIPT`, asserting success; returns stdout.
    pub fn sh(&self, name: &str, script: &str) -> String {
        self.ok(&["exec", name, "sh", "-c", script])
    }

    /// The run folder status of `name` as `moat ls --json` reports it.
    pub fn status(&self, name: &str) -> serde_json::Value {
        let list: serde_json::Value = serde_json::from_str(&self.ok(&["ls", "--json"])).unwrap();
        list.as_array().unwrap().iter().find(|s| s["name"] == name).cloned().unwrap_or(serde_json::Value::Null)
    }
}

impl Drop for Moat {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--all", "-f"]);
        let _ = self.run(&["daemon", "stop"]);
        // Belt and braces: no supervisor of this home may outlive the test.
        if let Ok(entries) = std::fs::read_dir(self.home.path().join("sandboxes")) {
            for e in entries.flatten() {
                if let Ok(s) = std::fs::read(e.path().join("run/status.json")) {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&s) {
                        if let Some(pid) = v["supervisor_pid"].as_i64().filter(|p| *p > 1) {
                            // SAFETY: kill has no memory-safety preconditions.
                            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                        }
                    }
                }
            }
        }
    }
}

/// stdout of an output as text.
/// Pids whose parent is `ppid`.
pub fn children_of(ppid: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // `pid (comm) state ppid …`; comm may hold spaces, so split after the last ')'.
        let ppid_field = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if ppid_field.and_then(|p| p.parse::<u32>().ok()) == Some(ppid) {
            kids.push(pid);
        }
    }
    kids
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr of an output as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A stand-in server on the host's loopback: a Python fixture that prints one
/// JSON line with its ports, then one JSON line per request it received.
pub struct StandIn {
    child: std::process::Child,
    /// Its first line (the ports).
    pub ports: serde_json::Value,
    /// Every request so far.
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl StandIn {
    /// Runs `tests/e2e/fixtures/<fixture>` with `args` in `dir`.
    pub fn start(fixture: &str, args: &[&std::ffi::OsStr], dir: &Path) -> StandIn {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/fixtures").join(fixture);
        let mut child =
            Command::new("python3").arg(script).args(args).current_dir(dir).stdout(Stdio::piped()).spawn().unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let ports: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = std::sync::Arc::clone(&seen);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                log.lock().unwrap().push(serde_json::from_str(&line).unwrap());
            }
        });
        StandIn { child, ports, seen }
    }

    /// The port named `name` in its first line.
    pub fn port(&self, name: &str) -> u16 {
        self.ports[name].as_u64().unwrap() as u16
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
