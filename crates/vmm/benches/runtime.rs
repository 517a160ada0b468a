//! The monitor's runtime costs, with QEMU's microvm machine side by side
//! where it can do the same thing:
//!
//! - **start → ready**, in CPU-ms of the whole VMM process (all threads,
//!   read through `clock_getcpuclockid` at the moment of readiness):
//!   "API ready" is the first answer on the control socket (QEMU: the QMP
//!   greeting); "guest ready" is the guest's first serial byte.
//! - **RSS overhead** with 1 vCPU / 128 MiB: the process's resident memory
//!   minus guest RAM's resident pages, both read from `/proc/<pid>/smaps`
//!   the same way for both VMMs (moat-vmm's own `stats` figure too).
//! - **VMs per second**: build + run + tear down of a guest that exits at
//!   once, in-process (`build_microvm`), and as a process per VM.
//!
//! `cargo bench -p moat-vmm --bench runtime` prints the figures (medians);
//! under `cargo test --all-targets` each case runs a couple of times only,
//! as a smoke test. Nothing here asserts a timing.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use moat_vmm::{build_microvm, ApiClient, Payload, RunOutcome, VmConfig};

/// `mov dx, 0x3f8; mov al, 'r'; out dx, al; cli; 1: hlt; jmp 1b`
const READY_PAYLOAD: &[u8] = &[0x66, 0xba, 0xf8, 0x03, 0xb0, 0x72, 0xee, 0xfa, 0xf4, 0xeb, 0xfd];
/// `out 0xf4, al` (exit code 0 from a zeroed RAX)
const EXIT_PAYLOAD: &[u8] = &[0xe6, 0xf4];
const MEM_MIB: u32 = 128;
const WITHIN: Duration = Duration::from_secs(20);

struct Sample {
    api_cpu_ms: f64,
    guest_cpu_ms: Option<f64>,
    overhead_kib: u64,
    self_reported_kib: Option<u64>,
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (runs, rate_for) = if bench { (15, Duration::from_secs(3)) } else { (2, Duration::from_millis(200)) };
    if !Path::new("/dev/kvm").exists() {
        println!("runtime bench: SKIPPED (no /dev/kvm)");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let payload = dir.path().join("ready.bin");
    std::fs::write(&payload, READY_PAYLOAD).expect("write payload");

    println!("runtime bench: 1 vCPU, {MEM_MIB} MiB, medians of {runs} runs");
    let moat: Vec<Sample> = (0..runs).map(|i| moat_start(&payload, &dir.path().join(format!("m{i}.sock")))).collect();
    let qemu: Option<Vec<Sample>> =
        qemu_available().then(|| (0..runs).map(|i| qemu_start(&dir.path().join(format!("q{i}.sock")))).collect());

    let median_of =
        |samples: &[Sample], f: &dyn Fn(&Sample) -> Option<f64>| median(samples.iter().filter_map(f).collect());
    let m_api = median_of(&moat, &|s| Some(s.api_cpu_ms));
    let m_guest = median_of(&moat, &|s| s.guest_cpu_ms);
    let m_rss = median_of(&moat, &|s| Some(s.overhead_kib as f64));
    let m_self = median_of(&moat, &|s| s.self_reported_kib.map(|k| k as f64));
    println!("  start → API ready     moat-vmm {m_api:7.2} CPU-ms{}", versus(&qemu, m_api, &|s| Some(s.api_cpu_ms)));
    println!("  start → guest's byte  moat-vmm {m_guest:7.2} CPU-ms");
    println!(
        "  RSS overhead          moat-vmm {m_rss:7.0} KiB{}",
        versus(&qemu, m_rss, &|s| Some(s.overhead_kib as f64))
    );
    println!("    (moat-vmm's own `stats`: {m_self:.0} KiB)");

    let in_process = vms_per_second(rate_for);
    println!("  VMs built+run+dropped in-process: {in_process:7.1} /s");
    let per_process = processes_per_second(&dir.path().join("exit.bin"), rate_for);
    println!("  moat-vmm processes start→exit:    {per_process:7.1} /s");
}

fn versus(baseline: &Option<Vec<Sample>>, ours: f64, f: &dyn Fn(&Sample) -> Option<f64>) -> String {
    match baseline {
        None => "   (QEMU baseline: not available)".into(),
        Some(samples) => {
            let theirs = median(samples.iter().filter_map(f).collect());
            format!("   QEMU microvm {theirs:7.2}   ratio moat/QEMU {:.2}", ours / theirs)
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One moat-vmm process: spawn, wait for the API, then the guest's byte.
fn moat_start(payload: &Path, socket: &Path) -> Sample {
    let mut child = Command::new(env!("CARGO_BIN_EXE_moat-vmm"))
        .args(["--format", "flat", "--mem-mib", &MEM_MIB.to_string(), "--kernel"])
        .arg(payload)
        .arg("--api-socket")
        .arg(socket)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn moat-vmm");
    let clock = cpu_clock(&child);
    let deadline = Instant::now() + WITHIN;
    let mut api = loop {
        if let Ok(mut api) = ApiClient::connect(socket, WITHIN) {
            if api.status().is_ok() {
                break api;
            }
        }
        assert!(Instant::now() < deadline, "moat-vmm never answered");
        std::thread::yield_now();
    };
    let api_cpu_ms = cpu_ms(clock);
    let mut byte = [0u8; 1];
    child.stdout.as_mut().expect("stdout").read_exact(&mut byte).expect("the guest's byte");
    let guest_cpu_ms = Some(cpu_ms(clock));
    let self_reported_kib = api.stats().ok().map(|s| s.vmm_overhead_bytes() >> 10);
    let overhead_kib = smaps_overhead_kib(&child);
    api.stop().expect("stop");
    finish(child);
    Sample { api_cpu_ms, guest_cpu_ms, overhead_kib, self_reported_kib }
}

fn qemu_available() -> bool {
    Command::new("qemu-system-x86_64").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// One QEMU microvm: spawn, wait for the QMP greeting.
fn qemu_start(socket: &Path) -> Sample {
    let qmp = format!("unix:{},server=on,wait=off", socket.display());
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-M", "microvm", "-nodefaults", "-no-user-config", "-display", "none", "-accel", "kvm"])
        .args(["-m", &MEM_MIB.to_string(), "-smp", "1", "-qmp", &qmp])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn qemu");
    let clock = cpu_clock(&child);
    let deadline = Instant::now() + WITHIN;
    let mut stream = loop {
        if let Ok(stream) = UnixStream::connect(socket) {
            break stream;
        }
        assert!(Instant::now() < deadline, "QEMU never served QMP");
        std::thread::yield_now();
    };
    let mut greeting = [0u8; 1];
    stream.read_exact(&mut greeting).expect("QMP greeting");
    let api_cpu_ms = cpu_ms(clock);
    std::thread::sleep(Duration::from_millis(100)); // let the firmware settle
    let overhead_kib = smaps_overhead_kib(&child);
    let _ = child.kill();
    finish(child);
    Sample { api_cpu_ms, guest_cpu_ms: None, overhead_kib, self_reported_kib: None }
}

fn cpu_clock(child: &Child) -> libc::clockid_t {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `child` is our live child process and `clock` a valid place
    // for the id.
    let rc = unsafe { libc::clock_getcpuclockid(child.id() as libc::pid_t, &mut clock) };
    assert_eq!(rc, 0, "clock_getcpuclockid");
    clock
}

fn cpu_ms(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    assert_eq!(unsafe { libc::clock_gettime(clock, &mut ts) }, 0, "clock_gettime");
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

/// Resident KiB of the process outside guest RAM: every mapping's `Rss`
/// except the mappings of guest-RAM size (≥ MEM_MIB).
fn smaps_overhead_kib(child: &Child) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", child.id())).expect("smaps");
    let (mut total, mut size) = (0u64, 0u64);
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next().and_then(|v| v.parse::<u64>().ok())) {
            (Some("Size:"), Some(kib)) => size = kib,
            (Some("Rss:"), Some(kib)) if size < u64::from(MEM_MIB) << 10 => total += kib,
            _ => {}
        }
    }
    total
}

fn finish(mut child: Child) {
    let deadline = Instant::now() + WITHIN;
    while child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "the VMM did not exit");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn vms_per_second(run_for: Duration) -> f64 {
    let config = VmConfig { mem_mib: MEM_MIB, ..VmConfig::default() };
    let (start, mut vms) = (Instant::now(), 0u32);
    while start.elapsed() < run_for || vms == 0 {
        let mut vm = build_microvm(&config, Payload::Flat(EXIT_PAYLOAD)).expect("build");
        assert_eq!(vm.run().expect("run").outcome, RunOutcome::Exited(0));
        vms += 1;
    }
    f64::from(vms) / start.elapsed().as_secs_f64()
}

fn processes_per_second(payload: &Path, run_for: Duration) -> f64 {
    std::fs::write(payload, EXIT_PAYLOAD).expect("write payload");
    let (start, mut vms) = (Instant::now(), 0u32);
    while start.elapsed() < run_for || vms == 0 {
        let status = Command::new(env!("CARGO_BIN_EXE_moat-vmm"))
            .args(["--format", "flat", "--mem-mib", &MEM_MIB.to_string(), "--kernel"])
            .arg(payload)
            .status()
            .expect("run moat-vmm");
        assert!(status.success());
        vms += 1;
    }
    f64::from(vms) / start.elapsed().as_secs_f64()
}
