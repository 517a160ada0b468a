//! Clean power-off: stop every process, flush and detach the disks, then reboot
//! (QEMU runs with `-no-reboot` and the kernel with `reboot=t`, so a reboot is what
//! makes the VM exit; a halt would leave it running).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::unistd::Pid;

use crate::log::log;

/// What power-off must detach.
#[derive(Debug, Default)]
pub struct Disks {
    /// virtiofs mount points.
    pub shares: Vec<PathBuf>,
    /// `O_PATH` handle on the state filesystem's root.
    pub state: Option<OwnedFd>,
}

fn disks() -> &'static Mutex<Disks> {
    static DISKS: OnceLock<Mutex<Disks>> = OnceLock::new();
    DISKS.get_or_init(Mutex::default)
}

/// Records what [`power_off`] must detach.
pub fn set_disks(d: Disks) {
    *disks().lock().unwrap_or_else(|p| p.into_inner()) = d;
}

/// The signals that ask PID 1 to power off.
pub fn shutdown_signals() -> SigSet {
    let mut set = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGUSR2, Signal::SIGPWR] {
        set.add(sig);
    }
    set
}

/// Blocks the power-off signals in the calling thread (call before spawning any
/// thread, so all inherit the mask) and starts a thread that waits for them.
///
/// Blocked signals are queued even for PID 1, which the kernel otherwise spares
/// from signals it has no handler for.
pub fn watch_signals() {
    let set = shutdown_signals();
    if let Err(e) = set.thread_block() {
        log!("cannot block shutdown signals: {e}");
        return;
    }
    let spawned = std::thread::Builder::new().name("signals".into()).spawn(move || loop {
        match set.wait() {
            Ok(sig) => {
                log!("received {sig}; powering off");
                power_off();
            }
            Err(e) => {
                log!("sigwait: {e}");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    });
    if let Err(e) = spawned {
        log!("cannot start the signal thread: {e}");
    }
}

/// Stops everything and reboots the VM away. Never returns.
pub fn power_off() -> ! {
    static ONCE: Mutex<()> = Mutex::new(());
    // A second caller waits here forever while the first finishes the job.
    let _guard = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    stop_all_processes();
    nix::unistd::sync();
    let disks = disks().lock().unwrap_or_else(|p| p.into_inner());
    for path in disks.shares.iter().rev() {
        if let Err(e) = umount2(path, MntFlags::empty()) {
            log!("cannot unmount {}: {e}; detaching it", path.display());
            let _ = umount2(path, MntFlags::MNT_DETACH);
        }
    }
    // The overlay root, then the state disk under it, read-only: the journal is then
    // clean even though neither can be unmounted while we run from it.
    remount_ro("/");
    if let Some(state) = &disks.state {
        remount_ro(&format!("/proc/self/fd/{}", state.as_raw_fd()));
    }
    nix::unistd::sync();
    log!("powering off");
    let err = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    log!("reboot failed: {err:?}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn remount_ro(target: &str) {
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    if let Err(e) = mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
        log!("cannot remount {target} read-only: {e}");
    }
}

/// SIGTERM to every process, up to 2 s of grace, then SIGKILL.
fn stop_all_processes() {
    let everyone = Pid::from_raw(-1);
    let _ = kill(everyone, Signal::SIGTERM);
    let _ = kill(everyone, Signal::SIGCONT);
    if !wait_until_alone(Duration::from_secs(2)) {
        let _ = kill(everyone, Signal::SIGKILL);
        wait_until_alone(Duration::from_secs(1));
    }
}

/// Whether every other process is gone (the reaper collects them) within `limit`.
fn wait_until_alone(limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if !any_user_process() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a process other than PID 1 and kernel threads exists. (`kill(-1, 0)`
/// can't tell: it succeeds as long as any kernel thread exists.)
fn any_user_process() -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else { return false };
    dir.flatten().any(|e| {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else { return false };
        pid != 1 && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !is_kernel_thread(&stat))
    })
}

/// Reads the `flags` field of `/proc/PID/stat` (the 9th, after the parenthesised name).
fn is_kernel_thread(stat: &str) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let after_name = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
    // Fields after the name start at field 3 (state); flags is field 9.
    after_name
        .split_whitespace()
        .nth(6)
        .and_then(|f| f.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_threads_are_told_apart_by_their_flags() {
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 0 0 0";
        let user = "77 (sh (weird) name) S 1 77 77 34816 77 4194560 90 0 0 0 0 0 0 0 20 0 1 0";
        assert!(is_kernel_thread(kthread));
        assert!(!is_kernel_thread(user));
        // This test process is not a kernel thread.
        let me = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(!is_kernel_thread(&me));
    }
}
