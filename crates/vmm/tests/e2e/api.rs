//! The control API against real VMs: a client drives a running guest
//! through the Unix socket, in-process (`MicroVm::run_with`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use moat_vmm::api::MAX_REQUEST_BYTES;
use moat_vmm::{build_microvm, ApiClient, ApiError, Payload, RunOptions, RunOutcome, RunReport, VmConfig, VmState};

use crate::util::{build_guest, e2e_available};

const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// A VM running `guest` on another thread, serving the API at `socket`.
struct Running {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    thread: JoinHandle<(RunReport, String)>,
}

fn start(guest: &str, vcpus: u8, grace: Duration) -> Running {
    let elf = build_guest(guest);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let config = VmConfig { mem_mib: 16, vcpus, timeout: Duration::from_secs(60), ..VmConfig::default() };
    let mut vm = build_microvm(&config, Payload::Elf(&elf)).unwrap();
    let thread = std::thread::spawn(move || {
        let options = RunOptions { api: Some(listener), shutdown_grace: grace, ..RunOptions::default() };
        let report = vm.run_with(options).unwrap();
        (report, String::from_utf8_lossy(&vm.take_serial_output()).into_owned())
    });
    Running { _dir: dir, socket, thread }
}

fn client(socket: &Path) -> ApiClient {
    ApiClient::connect(socket, ANSWER_WITHIN).unwrap()
}

/// Polls `stats` until the guest has written more than `bytes` serial bytes.
fn wait_for_output_past(api: &mut ApiClient, bytes: u64) -> u64 {
    let deadline = Instant::now() + ANSWER_WITHIN;
    loop {
        let now = api.stats().unwrap().serial_bytes;
        if now > bytes {
            return now;
        }
        assert!(Instant::now() < deadline, "the guest's output stayed at {now} bytes");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn pause_freezes_the_guest_resume_continues_and_shutdown_powers_it_off() {
    if !e2e_available("pause_freezes_the_guest_resume_continues_and_shutdown_powers_it_off", true) {
        return;
    }
    let vm = start("counter", 2, Duration::from_secs(30));
    let mut api = client(&vm.socket);
    assert_eq!(api.status().unwrap(), VmState::Running);
    let running = wait_for_output_past(&mut api, 0);

    assert_eq!(api.pause().unwrap(), VmState::Paused);
    let paused = api.stats().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let still = api.stats().unwrap();
    assert_eq!(still.serial_bytes, paused.serial_bytes, "no output while paused");
    // A parked vCPU thread sleeps on a futex: it may finish entering the
    // wait after `pause` answered (microseconds), then uses no CPU at all.
    let parked_ns = still.vcpus[0].cpu_ns - paused.vcpus[0].cpu_ns;
    assert!(parked_ns < 1_000_000, "a parked vCPU used {parked_ns} ns in 300 ms");
    assert!(paused.serial_bytes >= running);

    assert_eq!(api.resume().unwrap(), VmState::Running);
    wait_for_output_past(&mut api, still.serial_bytes);
    let later = api.stats().unwrap();
    assert_eq!(later.vcpus.len(), 2, "one entry per vCPU");
    assert!(later.vcpus[0].cpu_ns > still.vcpus[0].cpu_ns, "{later:?}");
    assert!(later.guest_ram_bytes > 0 && later.rss_bytes > later.guest_ram_bytes, "{later:?}");
    eprintln!("api: {later:?}, VMM overhead {} KiB", later.vmm_overhead_bytes() >> 10);

    assert_eq!(api.shutdown().unwrap(), VmState::ShuttingDown);
    let (report, out) = vm.thread.join().unwrap();
    assert_eq!(report.outcome, RunOutcome::Exited(0), "the guest powered off itself");
    assert!(out.ends_with("bye\n"), "{:?}", &out[out.len().saturating_sub(40)..]);
    assert!(matches!(api.status(), Err(ApiError::Closed | ApiError::Io(_))), "the socket went with the VM");
}

#[test]
fn stop_ends_the_run_at_once() {
    if !e2e_available("stop_ends_the_run_at_once", true) {
        return;
    }
    let vm = start("counter", 1, Duration::from_secs(30));
    let mut api = client(&vm.socket);
    wait_for_output_past(&mut api, 0);
    assert_eq!(api.pause().unwrap(), VmState::Paused);
    assert_eq!(api.stop().unwrap(), VmState::Stopped, "a paused VM stops too");
    let (report, out) = vm.thread.join().unwrap();
    assert_eq!(report.outcome, RunOutcome::Stopped);
    assert!(!out.contains("bye"), "the guest was not asked");
}

#[test]
fn a_guest_ignoring_the_power_button_is_stopped_after_the_grace_period() {
    if !e2e_available("a_guest_ignoring_the_power_button_is_stopped_after_the_grace_period", true) {
        return;
    }
    let vm = start("spam", 1, Duration::from_millis(300));
    let mut api = client(&vm.socket);
    wait_for_output_past(&mut api, 0);
    let asked = Instant::now();
    assert_eq!(api.shutdown().unwrap(), VmState::ShuttingDown);
    assert_eq!(api.status().unwrap(), VmState::ShuttingDown);
    let refused = api.pause().unwrap_err();
    assert!(refused.to_string().contains("shutting down"), "{refused}");
    let (report, _) = vm.thread.join().unwrap();
    assert_eq!(report.outcome, RunOutcome::Stopped);
    assert!(asked.elapsed() >= Duration::from_millis(300));
}

#[test]
fn bad_requests_get_errors_and_overlong_lines_close_the_connection() {
    if !e2e_available("bad_requests_get_errors_and_overlong_lines_close_the_connection", true) {
        return;
    }
    let vm = start("counter", 1, Duration::from_secs(30));
    let mut raw = UnixStream::connect(&vm.socket).unwrap();
    raw.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
    let mut lines = BufReader::new(raw.try_clone().unwrap());
    let mut answer = String::new();

    raw.write_all(b"reboot\nstatus\n").unwrap();
    lines.read_line(&mut answer).unwrap();
    assert!(answer.starts_with("{\"state\":\"running\",\"error\":\"unknown request"), "{answer}");
    answer.clear();
    lines.read_line(&mut answer).unwrap();
    assert_eq!(answer, "{\"state\":\"running\"}\n", "the connection stays usable");

    raw.write_all(&[b'x'; MAX_REQUEST_BYTES]).unwrap();
    answer.clear();
    lines.read_line(&mut answer).unwrap();
    assert!(answer.contains("too long"), "{answer}");
    answer.clear();
    assert_eq!(lines.read_line(&mut answer).unwrap(), 0, "closed after an overlong line");

    let mut api = client(&vm.socket);
    assert_eq!(api.stop().unwrap(), VmState::Stopped);
    assert_eq!(vm.thread.join().unwrap().0.outcome, RunOutcome::Stopped);
}
