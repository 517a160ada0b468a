//! Sandbox start-up and exec latency, side by side with bare QEMU.
//!
//! * cold: `moat run shell DIR -- true` on a new sandbox (create, boot, exec);
//! * the supervisor's breakdown of that boot (devices, monitor, guest, agent);
//! * baseline: `qemu-system-x86_64` with the command line the QEMU backend builds
//!   (same kernel, initramfs, disks, vsock device; no virtio-fs share, no daemon,
//!   supervisor or mkfs), timed until the same ready line;
//! * warm: `moat exec NAME true`, and the same exec through the library without the CLI.
//!
//! Usage: `cargo xtask bench` (or run this binary with `MOAT_AGENT_BIN` set).
//! Prints median and p95 of each, and the ratios.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use moat_sandbox_core::agent::{AgentConn, ExecRequest};
use moat_sandbox_core::backend::{
    find_tool, Accel, BackendKind, DeviceSockets, Hypervisor, LayerDisk, Qemu, Share, Tool, VmConfig,
};
use moat_sandbox_core::images::CachedImages;

const COLD_RUNS: usize = 5;
const WARM_RUNS: usize = 50;

fn main() {
    let moat = std::env::var_os("MOAT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::current_exe().unwrap().parent().unwrap().join("moat"));
    let home = tempfile::Builder::new().prefix("moat-bench-").tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let run = |args: &[&str], cwd: &Path| {
        let out = Command::new(&moat)
            .args(args)
            .current_dir(cwd)
            .env("MOAT_HOME", home.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "moat {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    // Start the daemon outside the measurements (it is a once-per-login cost).
    run(&["daemon", "start"], scratch.path());

    let mut cold = Vec::new();
    let mut breakdowns = Vec::new();
    for i in 0..COLD_RUNS {
        let ws = scratch.path().join(format!("w{i}"));
        std::fs::create_dir_all(&ws).unwrap();
        let t = Instant::now();
        run(&["run", "--name", &format!("cold{i}"), "-m", "1g", "--cpus", "1", "shell", ".", "--", "true"], &ws);
        cold.push(t.elapsed());
        let list: serde_json::Value = serde_json::from_slice(&run(&["ls", "--json"], &ws)).unwrap();
        let s = list.as_array().unwrap().iter().find(|s| s["name"] == format!("cold{i}")).unwrap();
        breakdowns.push(s["status"]["boot"].clone());
        if i + 1 < COLD_RUNS {
            run(&["rm", &format!("cold{i}")], &ws);
        }
    }

    let warm_name = format!("cold{}", COLD_RUNS - 1);
    let mut warm = Vec::new();
    for _ in 0..WARM_RUNS {
        let t = Instant::now();
        run(&["exec", &warm_name, "true"], scratch.path());
        warm.push(t.elapsed());
    }
    let list: serde_json::Value = serde_json::from_slice(&run(&["ls", "--json"], scratch.path())).unwrap();
    let vsock = list[0]["vsock_socket"].as_str().unwrap().to_string();
    let mut warm_lib = Vec::new();
    for _ in 0..WARM_RUNS {
        let t = Instant::now();
        let req = ExecRequest { argv: vec!["true".into()], ..Default::default() };
        AgentConn::connect(vsock.as_ref()).unwrap().exec(&req).unwrap().wait(|_| {}, |_| {}).unwrap();
        warm_lib.push(t.elapsed());
    }
    run(&["rm", "--all"], scratch.path());
    run(&["daemon", "stop"], scratch.path());

    let bare: Vec<Duration> = (0..COLD_RUNS).map(|_| bare_qemu_boot(scratch.path())).collect();

    println!("\n== moat lifecycle benchmark ({COLD_RUNS} cold runs, {WARM_RUNS} warm) ==");
    println!("{:<44} {:>10} {:>10}", "", "median", "p95");
    row("cold: moat run shell . -- true", &cold);
    row("baseline: bare qemu boot to the ready line", &bare);
    row("warm: moat exec NAME true", &warm);
    row("warm: library exec (no CLI, no daemon)", &warm_lib);
    println!("\ncold / bare qemu boot: {:.2}x", ratio(&cold, &bare));
    println!("warm CLI / library exec: {:.2}x", ratio(&warm, &warm_lib));
    println!("\ncold-path breakdown (ms since the supervisor started; guest uptime as the guest counts it):");
    for b in &breakdowns {
        println!("  {b}");
    }
}

fn row(name: &str, samples: &[Duration]) {
    println!("{name:<44} {:>8.1}ms {:>8.1}ms", ms(percentile(samples, 50)), ms(percentile(samples, 95)));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ratio(a: &[Duration], b: &[Duration]) -> f64 {
    ms(percentile(a, 50)) / ms(percentile(b, 50))
}

fn percentile(samples: &[Duration], p: usize) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    s[((s.len() - 1) * p).div_ceil(100).min(s.len() - 1)]
}

/// QEMU by hand: same kernel, initramfs, disks, vsock device; no share, no Moat.
fn bare_qemu_boot(scratch: &Path) -> Duration {
    let images = CachedImages::from_env().unwrap().ensure("shell").unwrap();
    let dir = tempfile::tempdir_in(scratch).unwrap();
    let state = dir.path().join("state.ext4");
    std::fs::File::create(&state).unwrap().set_len(1 << 30).unwrap();
    let mkfs = Command::new(find_tool(Tool::MkfsExt4).unwrap()).args(["-q", "-F"]).arg(&state).status().unwrap();
    assert!(mkfs.success());
    let vsock_backend = dir.path().join("vb.sock");
    let mut backend = Command::new(find_tool(Tool::VsockBackend).unwrap())
        .args(["--guest-cid", "3", "--socket"])
        .arg(&vsock_backend)
        .arg("--uds-path")
        .arg(dir.path().join("v.sock"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while !vsock_backend.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let vm = VmConfig {
        name: "bare".into(),
        backend: BackendKind::Qemu,
        accel: Accel::Tcg,
        cpus: 1,
        memory_mib: 1024,
        kernel: images.kernel.clone(),
        initramfs: images.initramfs.clone(),
        root_disk: images.rootfs.clone(),
        state_disk: state.clone(),
        layers: images.layers.iter().map(|path| LayerDisk { path: path.clone(), dir: None }).collect(),
        shares: Vec::<Share>::new(),
        egress: None,
        agent_hosts: Vec::new(),
        run_dir: dir.path().into(),
    };
    // The very command the QEMU backend builds, minus Moat around it.
    let sockets = DeviceSockets { vsock: vsock_backend.clone(), fs: Vec::new() };
    let mut cmd = Qemu::locate().unwrap().command(&vm, &sockets).unwrap();
    let t = Instant::now();
    let mut qemu = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(qemu.stdout.take().unwrap()).lines();
    let elapsed = loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("moat-agent: ready") => break t.elapsed(),
            Some(_) => {}
            None => panic!("bare qemu exited before the ready line"),
        }
    };
    let _ = qemu.kill();
    let _ = qemu.wait();
    let _ = backend.kill();
    let _ = backend.wait();
    elapsed
}
