//! The `moat-vmm` binary as `sandbox-core` will run it: a child process
//! driven through its control socket.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use moat_vmm::{ApiClient, VmState};

use crate::util::{build_guest, e2e_available};

const WITHIN: Duration = Duration::from_secs(10);

fn moat_vmm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_moat-vmm"))
}

/// Connects once the child has bound its socket.
fn connect(socket: &Path, child: &mut Child) -> ApiClient {
    let deadline = Instant::now() + WITHIN;
    loop {
        if let Ok(api) = ApiClient::connect(socket, WITHIN) {
            return api;
        }
        assert!(child.try_wait().unwrap().is_none(), "moat-vmm exited before serving its socket");
        assert!(Instant::now() < deadline, "moat-vmm never served {}", socket.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait(mut child: Child) -> Output {
    let deadline = Instant::now() + WITHIN;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "moat-vmm did not exit");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

/// Starts `moat-vmm` on the counter guest built into `dir`, with `extra`
/// arguments, its control socket at `dir/api.sock` and its serial output in
/// `dir/serial`; returns the child and those two paths.
fn spawn_counter(dir: &Path, extra: &[&OsStr]) -> (Child, PathBuf, PathBuf) {
    let (kernel, socket, serial) = (dir.join("counter"), dir.join("api.sock"), dir.join("serial"));
    std::fs::write(&kernel, build_guest("counter")).unwrap();
    let child = moat_vmm()
        .args(["--mem-mib", "16"])
        .args(extra)
        .arg("--kernel")
        .arg(&kernel)
        .arg("--api-socket")
        .arg(&socket)
        .arg("--serial")
        .arg(&serial)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, socket, serial)
}

#[test]
fn the_binary_serves_its_socket_and_exits_when_the_guest_powers_off() {
    if !e2e_available("the_binary_serves_its_socket_and_exits_when_the_guest_powers_off", true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut child, socket, serial) = spawn_counter(dir.path(), &["--vcpus".as_ref(), "2".as_ref()]);
    let mut api = connect(&socket, &mut child);
    assert_eq!(api.status().unwrap(), VmState::Running);
    let deadline = Instant::now() + WITHIN;
    while std::fs::metadata(&serial).unwrap().len() == 0 {
        assert!(Instant::now() < deadline, "no serial output reached the file");
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = api.stats().unwrap();
    assert_eq!(stats.vcpus.len(), 2);
    assert_eq!(api.shutdown().unwrap(), VmState::ShuttingDown);
    let output = wait(child);
    assert!(output.status.success(), "{output:?}");
    let serial = std::fs::read_to_string(&serial).unwrap();
    assert!(serial.starts_with("0x0\n0x1\n") && serial.ends_with("bye\n"), "{serial:?}");
    assert!(!socket.exists(), "the socket is removed on exit");
}

#[test]
fn stop_ends_the_process() {
    if !e2e_available("stop_ends_the_process", true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (kernel, socket) = (dir.path().join("spam"), dir.path().join("api.sock"));
    std::fs::write(&kernel, build_guest("spam")).unwrap();
    let mut child = moat_vmm()
        .args(["--mem-mib", "16", "--serial", "none", "--kernel"])
        .arg(&kernel)
        .arg("--api-socket")
        .arg(&socket)
        .spawn()
        .unwrap();
    let mut api = connect(&socket, &mut child);
    assert_eq!(api.stop().unwrap(), VmState::Stopped);
    assert!(wait(child).status.success());
}

#[test]
fn the_guests_exit_code_and_serial_output_come_through() {
    if !e2e_available("the_guests_exit_code_and_serial_output_come_through", true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hello = dir.path().join("hello");
    std::fs::write(&hello, build_guest("hello")).unwrap();
    let output = moat_vmm().args(["--mem-mib", "16", "--kernel"]).arg(&hello).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello from guest\n");
    assert_eq!(output.status.code(), Some(0));

    // mov al, 7; out 0xf4, al
    let flat = dir.path().join("exit7");
    std::fs::write(&flat, [0xb0, 0x07, 0xe6, 0xf4]).unwrap();
    let output = moat_vmm().args(["--mem-mib", "16", "--format", "flat", "--kernel"]).arg(&flat).output().unwrap();
    assert_eq!(output.status.code(), Some(7));

    // jmp $ with a one-second budget.
    std::fs::write(&flat, [0xeb, 0xfe]).unwrap();
    let args = ["--mem-mib", "16", "--format", "flat", "--timeout-secs", "1", "--kernel"];
    let output = moat_vmm().args(args).arg(&flat).output().unwrap();
    assert_eq!(output.status.code(), Some(124));

    let output = moat_vmm().args(["--vcpus", "0", "--kernel"]).arg(&flat).output().unwrap();
    assert_eq!(output.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("moat-vmm: invalid VM config: a VM has 1..="), "{stderr}");
}

#[test]
fn rlimits_bound_the_serial_log_and_the_fds() {
    if !e2e_available("rlimits_bound_the_serial_log_and_the_fds", true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (spam, serial) = (dir.path().join("spam"), dir.path().join("serial"));
    std::fs::write(&spam, build_guest("spam")).unwrap();
    let output = moat_vmm()
        .args(["--mem-mib", "16", "--timeout-secs", "1", "--rlimit-fsize", "1000", "--kernel"])
        .arg(&spam)
        .arg("--serial")
        .arg(&serial)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(124), "timed out rather than killed by SIGXFSZ: {output:?}");
    assert_eq!(std::fs::metadata(&serial).unwrap().len(), 1000, "the log stops at the limit");

    let output = moat_vmm().args(["--rlimit-nofile", "4", "--kernel"]).arg(&spam).output().unwrap();
    assert_eq!(output.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Too many open files"), "{stderr}");
}

/// One `Name:\tvalue` line of `/proc/PID/status`.
fn proc_status(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap_or_default();
    line[field.len() + 1..].split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn a_jailed_vmm_has_an_empty_root_no_network_no_privileges_and_still_runs_its_guest() {
    if !e2e_available("a_jailed_vmm_has_an_empty_root_no_network_no_privileges_and_still_runs_its_guest", true) {
        return;
    }
    // SAFETY: geteuid only reads this process's credentials.
    if unsafe { libc::geteuid() } != 0 {
        let msg = "a_jailed_vmm_…: the jail needs root";
        assert!(std::env::var("MOAT_REQUIRE_E2E").as_deref() != Ok("1"), "{msg} (MOAT_REQUIRE_E2E=1)");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("SKIPPED {msg}\n").as_bytes());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let jail = dir.path().join("jail");
    std::fs::create_dir(&jail).unwrap();
    std::fs::write(jail.join("left-in-the-folder"), "hidden by the jail's tmpfs").unwrap();
    let ids = ["--jail-uid", "65534", "--jail-gid", "65534"].map(OsStr::new);
    let (mut child, socket, serial) =
        spawn_counter(dir.path(), &[&[OsStr::new("--jail"), jail.as_os_str()], &ids[..]].concat());
    // A failed assertion must not leave a spinning VMM behind.
    let killer = KillOnDrop(child.id());
    let mut api = connect(&socket, &mut child);
    // The socket answers before the jail closes: wait until the guest runs.
    let deadline = Instant::now() + WITHIN;
    while std::fs::metadata(&serial).unwrap().len() < 16 {
        assert!(Instant::now() < deadline, "the jailed guest printed nothing");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = child.id();

    assert_eq!(proc_status(pid, "Uid"), "65534 65534 65534 65534");
    assert_eq!(proc_status(pid, "Gid"), "65534 65534 65534 65534");
    assert_eq!(proc_status(pid, "Groups"), "");
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(proc_status(pid, caps), "0000000000000000", "{caps}");
    }
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");
    let vcpu = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| t.unwrap().path())
        .find(|t| std::fs::read_to_string(t.join("comm")).is_ok_and(|c| c.trim() == "moat-vcpu0"))
        .expect("a vCPU thread");
    let vcpu_status = std::fs::read_to_string(vcpu.join("status")).unwrap();
    assert!(vcpu_status.lines().any(|l| l == "Seccomp:\t2"), "the vCPU thread is filtered: {vcpu_status}");
    assert_eq!(std::fs::read_link(format!("/proc/{pid}/root")).unwrap(), jail);
    let inside: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/root")).unwrap().collect();
    assert!(inside.is_empty(), "the jail's root is empty: {inside:?}");
    for ns in ["mnt", "net", "ipc", "uts"] {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(theirs, ours, "{ns} namespace");
    }

    // Still a working VMM: its control socket, stats from files opened
    // before the jail, and a clean stop.
    let stats = api.stats().unwrap();
    assert!(stats.rss_bytes > 0 && !stats.vcpus.is_empty(), "{stats:?}");
    assert_eq!(api.stop().unwrap(), VmState::Stopped);
    let output = wait(child);
    std::mem::forget(killer);
    assert!(output.status.success(), "{output:?}");
    assert!(std::fs::read_to_string(jail.join("left-in-the-folder")).is_ok(), "the host's folder is untouched");
}

/// Kills a child process when dropped (a test that panics).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill with a pid and a signal number only.
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}

#[test]
fn a_vm_launched_paused_runs_only_once_started() {
    if !e2e_available("a_vm_launched_paused_runs_only_once_started", true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut child, socket, serial) = spawn_counter(dir.path(), &["--paused".as_ref()]);
    let killer = KillOnDrop(child.id());
    let mut api = connect(&socket, &mut child);
    assert_eq!(api.status().unwrap(), VmState::Paused, "built and serving, not running");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::metadata(&serial).unwrap().len(), 0, "the guest ran before `start`");
    let stats = api.stats().unwrap();
    assert!(stats.vcpus.iter().all(|v| v.cpu_ns < 50_000_000), "held vCPUs burn no CPU: {stats:?}");

    assert_eq!(api.start().unwrap(), VmState::Running);
    let deadline = Instant::now() + WITHIN;
    while std::fs::metadata(&serial).unwrap().len() == 0 {
        assert!(Instant::now() < deadline, "the guest did not run after `start`");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(api.stop().unwrap(), VmState::Stopped);
    let output = wait(child);
    std::mem::forget(killer);
    assert!(output.status.success(), "{output:?}");
}
