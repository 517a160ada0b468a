//! Sandboxes over time: stop/start, crashes, daemon restarts.

use std::process::Stdio;
use std::time::Duration;

use crate::harness::{moat, stderr, stdout};

/// The daemon's pid, from `moat daemon status` ("… pid N), socket …").
fn daemon_pid(m: &crate::harness::Moat) -> i32 {
    let out = stdout(&m.run(&["daemon", "status"]));
    out.split("pid ").nth(1).and_then(|r| r.split(')').next()).and_then(|p| p.parse().ok()).unwrap_or(0)
}

#[test]
fn a_daemon_killed_mid_run_loses_nothing_and_ls_stays_truthful() {
    let Some(m) = moat() else { return };
    let ws = m.workspace("crash");
    m.sandbox("crash", &ws, &[]);
    let w = ws.display().to_string();

    // A command writes into the workspace across the daemon's death.
    let script = format!("for i in 1 2 3 4 5 6; do echo $i >> '{w}/log'; sleep 0.5; done; echo done");
    let child = m.cmd().args(["exec", "crash", "sh", "-c", &script]).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let pid = daemon_pid(&m);
    assert!(pid > 1);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "done\n", "the exec outlives the daemon");
    assert_eq!(std::fs::read_to_string(ws.join("log")).unwrap(), "1\n2\n3\n4\n5\n6\n");

    // The next command starts a new daemon, which finds the VM still running.
    let st = m.status("crash");
    assert_eq!(st["status"]["phase"], "running", "{st}");
    assert_ne!(daemon_pid(&m), pid);
    assert_eq!(m.sh("crash", "echo alive"), "alive\n");
}

#[test]
fn a_vm_killed_with_sigkill_reads_as_stopped_and_starts_again_with_its_disk() {
    let Some(m) = moat() else { return };
    let ws = m.workspace("vmkill");
    m.sandbox("vmkill", &ws, &[]);
    let w = ws.display();
    m.sh("vmkill", &format!("echo kept > '{w}/file'; sudo sh -c 'echo persisted > /etc/moat-test; sync'"));

    let st = m.status("vmkill");
    let vmm = st["status"]["vmm_pid"].as_i64().unwrap() as i32;
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(vmm, libc::SIGKILL) };
    let mut phase = serde_json::Value::Null;
    for _ in 0..100 {
        phase = m.status("vmkill")["status"]["phase"].clone();
        if phase == "stopped" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(phase, "stopped");
    assert_eq!(std::fs::read_to_string(ws.join("file")).unwrap(), "kept\n");

    m.ok(&["start", "vmkill"]);
    assert_eq!(m.sh("vmkill", "cat /etc/moat-test"), "persisted\n", "the sandbox's own disk survives");

    // A clean stop and start keeps it too, and `moat ls` follows.
    m.ok(&["stop", "vmkill"]);
    assert_eq!(m.status("vmkill")["status"]["phase"], "stopped");
    assert_eq!(m.sh("vmkill", "cat /etc/moat-test"), "persisted\n", "exec starts a stopped sandbox");
}

#[test]
fn listing_naming_and_removal() {
    let Some(m) = moat() else { return };
    let ws = m.workspace("My Project");
    let out = m.cmd().current_dir(&ws).args(["create", "-m", "1g", "shell", "."]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(m.ok(&["ls", "-q"]), "shell-my-project\n", "default name is <agent>-<workdir>");
    let table = m.ok(&["ls"]);
    assert!(table.starts_with("SANDBOX"), "{table}");
    assert!(table.contains("stopped"), "{table}");

    // Same name again: a clear error that says what to do.
    let out = m.cmd().current_dir(&ws).args(["create", "-m", "1g", "shell", "."]).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("already exists") && stderr(&out).contains("moat rm"), "{}", stderr(&out));

    let out = m.run(&["exec", "nope", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("no sandbox named \"nope\""), "{}", stderr(&out));

    std::fs::write(ws.join("precious"), "keep").unwrap();
    m.ok(&["rm", "shell-my-project"]);
    assert_eq!(m.ok(&["ls", "-q"]), "");
    assert_eq!(std::fs::read_to_string(ws.join("precious")).unwrap(), "keep", "rm never touches the workspace");
    let sandboxes = std::fs::read_dir(m.home().join("sandboxes")).unwrap().count();
    assert_eq!(sandboxes, 0, "rm deletes the sandbox's disk and state");
}

#[test]
fn a_daemon_killed_while_a_sandbox_boots_leaves_it_usable() {
    let Some(m) = moat() else { return };
    let ws = m.workspace("boot");
    m.ok(&["create", "--name", "boot", "-m", "1g", "shell", ws.to_str().unwrap()]);
    let start = m.cmd().args(["start", "boot"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let pid = daemon_pid(&m);
    assert!(pid > 1);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    // The interrupted `start` may fail; it must not hang, and nothing may be left half-done.
    let _ = start.wait_with_output().unwrap();
    // The VM's supervisor finishes the boot on its own; the next command sees it.
    assert_eq!(m.sh("boot", "echo up"), "up\n");
    assert_eq!(m.status("boot")["status"]["phase"], "running");
    let listed = m.ok(&["ls", "-q"]);
    assert_eq!(listed, "boot\n", "exactly one sandbox, no duplicate or orphan");
}

/// What a Moat installation holds on this machine: the daemon's open files,
/// processes whose command line names the installation, mounts and loop
/// devices under it, sandbox folders.
#[derive(Debug, PartialEq, Eq)]
struct Footprint {
    /// What the daemon's descriptors point at (sockets and pipes by kind),
    /// at its quietest of a few looks: a request being answered holds one more.
    daemon_fds: Vec<String>,
    processes: Vec<String>,
    mounts: usize,
    loops: usize,
    sandbox_dirs: usize,
}

fn footprint(m: &crate::harness::Moat) -> Footprint {
    let home = m.home().to_string_lossy().into_owned();
    let daemon = daemon_pid(m);
    let fds = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{daemon}/fd"))
            .map(|d| d.flatten().filter_map(|e| std::fs::read_link(e.path()).ok()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .map(|t| {
                let t = t.to_string_lossy().into_owned();
                t.split(":[").next().unwrap_or(&t).to_string()
            })
            .collect();
        v.sort();
        v
    };
    let daemon_fds = (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(300));
            fds()
        })
        .min_by_key(Vec::len)
        .unwrap_or_default();
    let mut processes: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != daemon)
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(&home).then_some(cmd)
        })
        .collect();
    processes.sort();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().filter(|l| l.contains(&home)).count();
    let loops = std::process::Command::new("losetup")
        .arg("-a")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.contains(&home)).count())
        .unwrap_or(0);
    let sandbox_dirs = std::fs::read_dir(m.home().join("sandboxes")).map(|d| d.count()).unwrap_or(0);
    Footprint { daemon_fds, processes, mounts, loops, sandbox_dirs }
}

#[test]
fn create_start_exec_stop_remove_cycles_leave_nothing_behind() {
    let Some(m) = moat() else { return };
    let ws = m.workspace("cycles");
    let cycle = |i: usize| {
        let name = format!("c{i}");
        m.ok(&["create", "--name", &name, "-m", "1g", "--cpus", "1", "shell", ws.to_str().unwrap()]);
        m.ok(&["start", &name]);
        assert_eq!(m.sh(&name, "echo $((6*7))"), "42\n");
        if i == 0 {
            // The footprint sees a running sandbox: supervisor, monitor, device back-ends.
            let running = footprint(&m);
            assert!(running.processes.len() >= 3 && running.sandbox_dirs == 1, "{running:?}");
        }
        m.ok(&["stop", &name]);
        m.ok(&["rm", &name]);
    };
    // The first cycle warms up what the daemon keeps for its lifetime (database
    // handles, its log); every later one must leave exactly that.
    cycle(0);
    let after_first = footprint(&m);
    assert!(after_first.processes.is_empty(), "{after_first:?}");
    assert_eq!((after_first.mounts, after_first.loops, after_first.sandbox_dirs), (0, 0, 0), "{after_first:?}");
    for i in 1..4 {
        cycle(i);
    }
    assert_eq!(footprint(&m), after_first, "after 3 more cycles");
    assert_eq!(m.ok(&["ls", "-q"]), "", "no records left");
}
