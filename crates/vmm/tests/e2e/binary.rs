//! The `moat-vmm` binary as `sandbox-core` will run it: a child process
//! driven through its control socket.

use std::path::Path;
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

#[test]
fn the_binary_serves_its_socket_and_exits_when_the_guest_powers_off() {
    if !e2e_available("the_binary_serves_its_socket_and_exits_when_the_guest_powers_off", true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (kernel, socket, serial) = (dir.path().join("counter"), dir.path().join("api.sock"), dir.path().join("serial"));
    std::fs::write(&kernel, build_guest("counter")).unwrap();
    let mut child = moat_vmm()
        .args(["--mem-mib", "16", "--vcpus", "2", "--kernel"])
        .arg(&kernel)
        .arg("--api-socket")
        .arg(&socket)
        .arg("--serial")
        .arg(&serial)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
