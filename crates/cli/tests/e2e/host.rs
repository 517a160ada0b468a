//! What the host keeps from the guest: folders it trusts are never shared, and its
//! own processes never work in a workspace.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use crate::harness::{children_of, moat, moat_without_guest, stderr};

/// `moat create shell ARGS…` from `cwd`; asserts it fails with 125 and returns stderr.
fn refused(m: &crate::harness::Moat, cwd: &Path, args: &[&str]) -> String {
    let out = m.cmd().current_dir(cwd).args(["create", "-m", "1g", "shell"]).args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(125), "moat create shell {args:?} was accepted: {}", stderr(&out));
    stderr(&out)
}

#[test]
fn create_refuses_to_share_the_home_folder_or_moat_s_own_folders() {
    let m = moat_without_guest();
    let ws = m.workspace("proj");
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/root".into());
    // `moat create shell ~`
    let err = refused(&m, &ws, &[home.to_str().unwrap()]);
    assert!(err.contains(&format!("cannot share {}: it is a home folder", home.display())), "{err}");
    assert!(err.contains("share a project folder inside it instead"), "{err}");
    // Moat's own folder as an extra read-only mount, directly and through a symlink.
    let moat_home = m.home().to_str().unwrap().to_string();
    let err = refused(&m, &ws, &[".", &format!("{moat_home}:ro")]);
    assert!(err.contains("it is Moat's own folder") && err.contains("the vault"), "{err}");
    let link = ws.parent().unwrap().join("link-to-moat");
    std::os::unix::fs::symlink(m.home(), &link).unwrap();
    let err = refused(&m, &ws, &[link.to_str().unwrap()]);
    assert!(err.contains("it is Moat's own folder"), "{err}");
    // A folder holding Moat's own folder, and the folder of the moat binary itself.
    let err = refused(&m, &ws, &[m.home().parent().unwrap().to_str().unwrap()]);
    assert!(err.contains("it contains Moat's own folder"), "{err}");
    let bin_dir = Path::new(crate::harness::moat_bin()).parent().unwrap();
    let err = refused(&m, &ws, &[bin_dir.to_str().unwrap()]);
    assert!(err.contains("it is the folder of moat"), "{err}");
    assert_eq!(m.ok(&["ls", "-q"]), "", "nothing was created");
}

#[test]
fn start_refuses_a_shared_folder_that_became_a_symlink() {
    let m = moat_without_guest();
    let ws = m.workspace("swapped");
    m.ok(&["create", "--name", "swapped", "-m", "1g", "shell", ws.to_str().unwrap()]);
    std::fs::remove_dir(&ws).unwrap();
    std::os::unix::fs::symlink(m.home(), &ws).unwrap();
    let out = m.run(&["start", "swapped"]);
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(err.contains(&format!("cannot share {}: it now resolves to", ws.display())), "{err}");
    assert!(err.contains("recreate the sandbox"), "{err}");
}

/// The working folder of a process.
fn cwd_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default()
}

/// Soft and hard `Max open files` of a process.
fn nofile_of(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let nums: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (nums[0], nums[1])
}

#[test]
fn the_daemon_the_supervisor_and_every_back_end_work_in_root() {
    let Some(m) = moat() else { return };
    let ws = m.workspace("cwd");
    // Started from inside the workspace: nothing may keep it as its working folder.
    // With a low soft open-file limit, which the daemon and supervisor inherit.
    for args in [&["create", "--name", "cwd", "-m", "1g", "--cpus", "1", "shell", "."][..], &["start", "cwd"]] {
        let mut cmd = m.cmd();
        // SAFETY: runs in the forked child before exec; getrlimit/setrlimit are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                lim.rlim_cur = lim.rlim_cur.min(1024);
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                Ok(())
            });
        }
        let out = cmd.current_dir(&ws).args(args).output().unwrap();
        assert!(out.status.success(), "moat {args:?}: {}", stderr(&out));
    }
    let status = m.status("cwd");
    let supervisor = status["status"]["supervisor_pid"].as_u64().unwrap() as u32;
    let daemon = daemon_pid(&m);
    assert_eq!(cwd_of(daemon), Path::new("/"), "the daemon");
    assert_eq!(cwd_of(supervisor), Path::new("/"), "the supervisor");
    // The supervisor raised its soft limit to what 1,024 guest connections need.
    let (soft, hard) = nofile_of(supervisor);
    assert!(soft >= 2304.min(hard), "supervisor open-file limit {soft} (hard {hard})");
    assert!(nofile_of(daemon).0 <= 1024, "the daemon kept the limit it was started with");
    let kids = children_of(supervisor);
    assert!(kids.len() >= 3, "virtiofsd, moat-vsock and the monitor: {kids:?}");
    for pid in kids {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        // A jailed back-end (Moat run as root: invariant 29) works in its own root.
        let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap_or_default();
        assert_eq!(cwd_of(pid), root, "{} works in its root", exe.display());
        assert!(root == Path::new("/") || root.starts_with(m.home()), "{}: {}", exe.display(), root.display());
    }
}

/// The daemon's pid, from `moat daemon status` ("… pid N), socket …").
fn daemon_pid(m: &crate::harness::Moat) -> u32 {
    let out = crate::harness::stdout(&m.run(&["daemon", "status"]));
    out.split("pid ").nth(1).and_then(|r| r.split(')').next()).and_then(|p| p.parse().ok()).unwrap_or(0)
}
