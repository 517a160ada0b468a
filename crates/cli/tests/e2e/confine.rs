//! The helpers run confined (invariant 29): read from the host in `/proc`
//! while a real sandbox runs, which still works.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::{children_of, moat};

/// `/proc/<pid>/status` as field → value.
fn status_of(pid: u32) -> HashMap<String, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect()
}

fn link(pid: u32, what: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/{what}")).unwrap_or_default()
}

/// Pids whose parent is `ppid`, with their executables.
fn children_with_exe(ppid: u32) -> Vec<(u32, PathBuf)> {
    children_of(ppid).into_iter().map(|pid| (pid, link(pid, "exe"))).collect()
}

fn named(kids: &[(u32, PathBuf)], name: &str) -> u32 {
    let found = kids.iter().find(|(_, exe)| exe.file_name().is_some_and(|n| n.to_string_lossy().starts_with(name)));
    found.unwrap_or_else(|| panic!("no {name} among {kids:?}")).0
}

/// Whether `pid` is gone (or a zombie) within `grace`.
fn ends_within(pid: u32, grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(s) if s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')) => return true,
            Ok(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    false
}

#[test]
fn qemu_vsock_and_virtiofsd_run_confined_and_the_sandbox_still_works() {
    let Some(m) = moat() else { return };
    m.ok(&["policy", "preset", "balanced"]);
    m.ok(&["policy", "allow", "network", "allowed.test:443"]);
    let ws = m.workspace("confined");
    m.sandbox("confined", &ws, &[]);
    let status = m.status("confined");
    let supervisor = status["status"]["supervisor_pid"].as_u64().unwrap() as u32;
    let qemu = status["status"]["vmm_pid"].as_u64().unwrap() as u32;
    let kids = children_with_exe(supervisor);
    let vsock = named(&kids, "moat-vsock");
    let virtiofsd = named(&kids, "virtiofsd");
    assert!(link(qemu, "exe").to_string_lossy().contains("qemu-system"), "{kids:?}");
    let run_dir = Path::new(status["vsock_socket"].as_str().unwrap()).parent().unwrap().to_path_buf();
    // SAFETY: geteuid only reads this process's credentials.
    let root = unsafe { libc::geteuid() } == 0;

    // Whoever runs Moat: QEMU's own seccomp policy (`-sandbox on`), which sets no_new_privs;
    // moat-vsock's filter; virtiofsd's guard.
    for (who, pid) in [("qemu", qemu), ("moat-vsock", vsock), ("virtiofsd", virtiofsd)] {
        let st = status_of(pid);
        assert_eq!((st["Seccomp"].as_str(), st["NoNewPrivs"].as_str()), ("2", "1"), "{who}: {st:?}");
    }

    if root {
        // QEMU: a user of the sandbox's own, no capability, an empty read-only root, and
        // namespaces of its own (no network at all).
        let st = status_of(qemu);
        let uid = st["Uid"].split(' ').next().unwrap().parse::<u32>().unwrap();
        assert!(uid >= 0x4d00_0000, "QEMU runs as {st:?}");
        let all = vec![uid.to_string(); 4].join(" ");
        assert_eq!(st["Uid"], all, "every uid of QEMU");
        assert_eq!(st["Gid"], all, "every gid of QEMU");
        assert_eq!(st["Groups"], uid.to_string(), "no other group");
        assert_eq!((st["CapEff"].as_str(), st["CapPrm"].as_str()), ("0000000000000000", "0000000000000000"));
        assert_eq!(link(qemu, "root"), run_dir.join("jail"), "QEMU's root");
        let inside: Vec<_> = std::fs::read_dir(format!("/proc/{qemu}/root")).unwrap().collect();
        assert!(inside.is_empty(), "QEMU's root is empty: {inside:?}");
        for ns in ["mnt", "net", "ipc", "uts"] {
            assert_ne!(link(qemu, &format!("ns/{ns}")), link(supervisor, &format!("ns/{ns}")), "QEMU's {ns} namespace");
        }

        // moat-vsock: the run folder as its root, no capability at all, no network, and the
        // init of the PID namespace QEMU lives in.
        let st = status_of(vsock);
        assert_eq!(link(vsock, "root"), run_dir, "moat-vsock's root");
        for caps in ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"] {
            assert_eq!(st[caps], "0000000000000000", "moat-vsock {caps}: {st:?}");
        }
        assert_ne!(link(vsock, "ns/net"), link(supervisor, "ns/net"), "moat-vsock's network namespace");
        assert_eq!(st["NSpid"], format!("{vsock} 1"), "moat-vsock is the VM's PID namespace's init");
        assert_eq!(link(qemu, "ns/pid"), link(vsock, "ns/pid"), "QEMU shares it");
        assert_ne!(link(qemu, "ns/pid"), link(supervisor, "ns/pid"));
    } else {
        // SAFETY: getuid only reads this process's credentials.
        let me = unsafe { libc::getuid() }.to_string();
        assert!(status_of(qemu)["Uid"].starts_with(&me), "a user's QEMU is theirs");
    }

    // `moat ls` says when a sandbox runs under software emulation, a weaker boundary than KVM.
    let emulated = status["status"]["backend"] == "qemu/tcg";
    assert_eq!(status["emulated"], emulated, "{status}");
    let out = m.run(&["ls"]);
    let table = crate::harness::stdout(&out);
    let row = table.lines().find(|l| l.starts_with("confined ")).unwrap();
    assert_eq!(row.contains("qemu/tcg (emulated)"), emulated, "{table}");
    assert_eq!(crate::harness::stderr(&out).contains("weaker boundary than hardware virtualization (KVM)"), emulated);

    // The sandbox still works: commands, a write to the share, the way out's ports.
    let w = ws.display();
    assert_eq!(m.sh("confined", &format!("echo written > '{w}/from-guest' && cat '{w}/from-guest'")), "written\n");
    assert_eq!(std::fs::read_to_string(ws.join("from-guest")).unwrap(), "written\n");
    // A guest connection to a host port: moat-vsock reaches the supervisor's socket from its jail.
    let out = m.sh("confined", "getent hosts allowed.test");
    assert!(out.starts_with("198.18."), "DNS through the jailed moat-vsock: {out}");
    m.ok(&["stop", "confined"]);
    assert_eq!(m.status("confined")["status"]["phase"], "stopped");

    // A monitor that changed its user lost its parent-death signal; killing the supervisor
    // still takes it (and every back-end) down.
    m.ok(&["start", "confined"]);
    let status = m.status("confined");
    let supervisor = status["status"]["supervisor_pid"].as_u64().unwrap() as u32;
    let qemu = status["status"]["vmm_pid"].as_u64().unwrap() as u32;
    let kids = children_with_exe(supervisor);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(supervisor as i32, libc::SIGKILL) };
    for (pid, exe) in kids.iter().cloned().chain([(qemu, PathBuf::from("qemu"))]) {
        assert!(ends_within(pid, Duration::from_secs(5)), "{} ({pid}) outlived its supervisor", exe.display());
    }
}
