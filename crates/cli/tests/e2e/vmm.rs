//! `--backend vmm`: sandboxes on moat-vmm, Moat's own KVM monitor, with the
//! same real device back-ends as under QEMU (virtiofsd, moat-vsock).
//!
//! What holds depends on the host. With VMX/SVM the guest boots and the
//! sandbox must work. Without (this project's CI machines: /dev/kvm is PVM)
//! Linux stops early in boot on moat-vmm, so the start must fail with
//! moat-vmm's own reason, leave no process behind, and leave a sandbox that
//! `moat rm` removes. Neither case claims more than it checks.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::{moat, moat_bin, stderr, Moat};

/// Whether the CPU advertises hardware virtualization, as `moat` decides it.
fn hardware_virtualization() -> bool {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    cpuinfo.lines().filter(|l| l.starts_with("flags")).any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// The monitor the supervisor will run: beside `moat` (`cargo xtask build`),
/// or installed. Missing, the test fails when MOAT_REQUIRE_E2E=1 and skips loudly otherwise.
fn moat_vmm_present() -> bool {
    let beside = Path::new(moat_bin()).with_file_name("moat-vmm");
    let installed = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin/moat-vmm"));
    let env = std::env::var_os("MOAT_VMM_BIN").map(PathBuf::from);
    if env.into_iter().chain([beside]).chain(installed).any(|p| p.is_file()) {
        return true;
    }
    let why = "moat-vmm is not built beside moat (run `cargo xtask build` or `cargo build -p moat-vmm`)";
    if std::env::var("MOAT_REQUIRE_E2E").as_deref() == Ok("1") {
        panic!("MOAT_REQUIRE_E2E=1 but {why}");
    }
    eprintln!("\n!!! SKIPPING moat-vmm end-to-end test: {why}\n");
    false
}

/// The run folder of sandbox `name`.
fn run_dir(m: &Moat, name: &str) -> PathBuf {
    let console = m.status(name)["console_log"].as_str().unwrap().to_string();
    Path::new(&console).parent().unwrap().to_path_buf()
}

/// Command lines (argv joined by spaces) of the processes whose argv mentions `dir`.
fn processes_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.to_str().unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if !entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let argv: Vec<String> =
            raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if argv.iter().any(|a| a.contains(needle)) {
            found.push(argv.join(" "));
        }
    }
    found
}

/// Waits until no process mentions `dir`; fails naming the ones left.
fn assert_no_process_left(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_mentioning(dir);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "processes left behind: {left:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connects to moat-vmm's control socket once it serves it (it binds the
/// socket only after building the VM, i.e. after attaching every device).
fn connect_api(socket: &Path) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match UnixStream::connect(socket) {
            Ok(stream) => return stream,
            Err(e) => assert!(Instant::now() < deadline, "moat-vmm never served {}: {e}", socket.display()),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One request on moat-vmm's control socket; returns its one-line JSON answer.
fn api(mut stream: UnixStream, request: &str) -> serde_json::Value {
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    writeln!(stream, "{request}").unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

#[test]
fn a_vmm_sandbox_runs_moat_vmm_with_real_device_back_ends() {
    let Some(m) = moat() else { return };
    if !moat_vmm_present() {
        return;
    }
    let ws = m.workspace("vmm");
    let w = ws.to_str().unwrap();
    let hardware = hardware_virtualization();
    // Without VMX/SVM the guest's early boot is slow in proportion to its RAM: keep it small.
    let memory = if hardware { "1g" } else { "256m" };
    m.ok(&["create", "--name", "v", "--backend", "vmm", "-m", memory, "--cpus", "1", "shell", w]);
    let run = run_dir(&m, "v");

    if hardware {
        // The guest boots: the sandbox works like any other.
        m.ok(&["start", "v"]);
        let st = m.status("v");
        assert_eq!((&st["status"]["phase"], &st["status"]["backend"]), (&"running".into(), &"vmm/kvm".into()), "{st}");
        m.ok(&["exec", "v", "true"]);
        m.sh("v", &format!("echo from-guest > '{w}/f'"));
        assert_eq!(std::fs::read_to_string(ws.join("f")).unwrap(), "from-guest\n", "the share is virtio-fs");
        m.ok(&["stop", "v"]);
        assert_eq!(m.status("v")["status"]["phase"], "stopped");
        assert_no_process_left(&run);
        m.ok(&["rm", "v"]);
        assert_eq!(m.ok(&["ls", "-q"]), "");
        return;
    }

    // No VMX/SVM: Linux cannot boot on moat-vmm here. The start fails with
    // moat-vmm's own reason, the console log named, and a hint.
    let out = m.run(&["start", "v"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    let console = run.join("console.log");
    for expected in [
        "sandbox \"v\" failed to start: vmm exited (exit status: 125) before the guest agent was ready: \
         moat-vmm: KVM reported internal error 1 on vCPU 0 at RIP 0x",
        &format!("; console log: {}", console.display()),
        "note: this CPU has no VMX/SVM, so /dev/kvm is a software implementation",
        "use --backend qemu on this host",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    // What ran: moat-vmm with both disks, the share through virtiofsd's socket
    // and vsock through moat-vsock's. A KVM error is only reachable once every
    // device was attached (moat-vmm connects to each back-end while building).
    let log = std::fs::read_to_string(run.join("supervisor.log")).unwrap();
    let launched =
        log.lines().find(|l| l.starts_with("supervisor: running ")).expect("the monitor's command is logged");
    for arg in [
        "moat-vmm\" \"--kernel\"".to_string(),
        "\"--format\" \"linux\"".into(),
        ",ro\" \"--disk\"".into(),
        "state.ext4,rw\"".into(),
        format!("\"--fs\" \"{}/fs0.sock,ws0\"", run.display()),
        format!("\"--vsock\" \"{}/vsock-backend.sock,3\"", run.display()),
        format!("\"--api-socket\" \"{}/vmm-api.sock\"", run.display()),
        "\"--serial\" \"stdout\"".into(),
    ] {
        assert!(launched.contains(&arg), "missing {arg} in {launched}");
    }
    assert!(log.contains("moat-vmm: KVM reported internal error"), "moat-vmm's stderr reaches the log:\n{log}");
    // Nothing left running: moat-vmm, virtiofsd, moat-vsock, the supervisor.
    assert_no_process_left(&run);
    let st = m.status("v");
    assert_eq!((&st["status"]["phase"], &st["status"]["backend"]), (&"failed".into(), &"vmm/kvm".into()), "{st}");
    assert!(st["status"]["error"].as_str().unwrap().contains("KVM reported internal error"), "{st}");

    // Stopping a VM that is still booting goes through moat-vmm's control
    // socket. Under PVM early boot grows with guest RAM (here ~8 s for 256 MiB,
    // ~24 s for 1 GiB), so a 2 GiB guest is still running seconds after
    // moat-vmm serves its socket.
    m.ok(&["create", "--name", "v2", "--backend", "vmm", "-m", "2g", "--cpus", "1", "shell", w]);
    let run2 = run_dir(&m, "v2");
    let start = m.cmd().args(["start", "v2"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let socket = run2.join("vmm-api.sock");
    assert_eq!(api(connect_api(&socket), "status")["state"], "running");
    // While it runs: the supervisor, moat-vmm and the real back-ends it attached.
    let running = processes_mentioning(&run2);
    for (program, socket_arg) in [
        ("moat-vmm", format!("--fs {}/fs0.sock,ws0", run2.display())),
        ("virtiofsd", format!("--socket-path {}/fs0.sock", run2.display())),
        ("moat-vsock", format!("--socket {}/vsock-backend.sock", run2.display())),
    ] {
        let found = running
            .iter()
            .any(|p| p.split(' ').next().is_some_and(|argv0| argv0.ends_with(program)) && p.contains(&socket_arg));
        assert!(found, "no {program} with {socket_arg} among {running:#?}");
    }
    // Run by root, moat-vmm jails itself: a user of its own, no capabilities,
    // an empty root, its own network namespace (checked while it runs).
    // SAFETY: geteuid only reads this process's credentials.
    if unsafe { libc::geteuid() } == 0 {
        let pid = m.status("v2")["status"]["vmm_pid"].as_i64().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            let line = status.lines().find(|l| l.starts_with(&format!("{name}:"))).unwrap_or_default();
            line[name.len() + 1..].split_whitespace().map(str::to_string).collect::<Vec<_>>()
        };
        assert_ne!(field("Uid")[0], "0", "{status}");
        assert_eq!(field("CapEff"), ["0000000000000000"], "{status}");
        assert_eq!(field("NoNewPrivs"), ["1"], "{status}");
        assert_eq!(std::fs::read_link(format!("/proc/{pid}/root")).unwrap(), run2.join("jail"));
        let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/net")).unwrap();
        assert_ne!(ns(&pid.to_string()), ns("self"), "its own network namespace");
    }
    let supervisor = m.status("v2")["status"]["supervisor_pid"].as_i64().unwrap() as i32;
    let asked = Instant::now();
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(supervisor, libc::SIGTERM) }, 0);
    let out = start.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // The agent never came up, so nobody is asked: the supervisor says `stop` on
    // the socket at once rather than waiting out the 10 s grace and killing.
    assert!(asked.elapsed() < Duration::from_secs(5), "took {:?}: {err}", asked.elapsed());
    // Exit status 0 is moat-vmm obeying `stop`; a SIGKILL would read `signal: 9`.
    assert!(err.contains("vmm exited (exit status: 0) before the guest agent was ready"), "{err}");
    assert!(!socket.exists(), "the control socket is removed when moat-vmm stops");
    assert_no_process_left(&run2);

    m.ok(&["rm", "v"]);
    m.ok(&["rm", "v2"]);
    assert_eq!(m.ok(&["ls", "-q"]), "");
    assert_eq!(std::fs::read_dir(m.home().join("sandboxes")).unwrap().count(), 0, "rm deletes the sandboxes' folders");
}
