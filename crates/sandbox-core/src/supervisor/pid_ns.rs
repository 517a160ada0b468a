//! The VM's own PID namespace, so a monitor that changed its user still dies
//! with the supervisor.
//!
//! `PR_SET_PDEATHSIG` is how every child dies with its supervisor, but the
//! kernel clears it when a process changes its uid, and a confined monitor
//! does (QEMU's `-runas`, moat-vmm's `--jail-uid`). So when Moat runs as root,
//! the supervisor starts the vsock back-end and then the monitor in a new PID
//! namespace whose init is `moat-vsock`, which keeps its uid and its death
//! signal: when the supervisor dies, `moat-vsock` is killed, and with the
//! namespace's init gone the kernel kills everything left in it.
//!
//! A thread whose new children go to another PID namespace cannot start
//! threads, so the supervisor's thread is there only for the `spawn` itself.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::Child;

/// The VM's PID namespace, made by the first child spawned in it.
#[derive(Debug)]
pub(super) struct VmPidNamespace {
    /// The thread's own PID namespace, to go back to.
    own: File,
    /// The VM's, once its init runs.
    vm: Option<File>,
}

impl VmPidNamespace {
    /// The VM's namespace-to-be; `None` when Moat does not run as root (no
    /// monitor then changes its user).
    pub(super) fn new() -> io::Result<Option<VmPidNamespace>> {
        // SAFETY: geteuid only reads this process's credentials.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(None);
        }
        Ok(Some(VmPidNamespace { own: File::open("/proc/thread-self/ns/pid")?, vm: None }))
    }

    /// Runs `spawn` with the child it starts in the VM's namespace; the first
    /// child becomes the namespace's init.
    pub(super) fn spawn<E: From<io::Error>>(&mut self, spawn: impl FnOnce() -> Result<Child, E>) -> Result<Child, E> {
        match &self.vm {
            // SAFETY: unshare takes flags only; CLONE_NEWPID changes only where this
            // thread's future children go.
            None => check(unsafe { libc::unshare(libc::CLONE_NEWPID) })?,
            // SAFETY: `vm` is an open namespace file; setns changes only where this
            // thread's future children go.
            Some(vm) => check(unsafe { libc::setns(vm.as_raw_fd(), libc::CLONE_NEWPID) })?,
        }
        let child = spawn();
        if child.is_ok() && self.vm.is_none() {
            self.vm = File::open("/proc/thread-self/ns/pid_for_children").ok();
        }
        // Back to the thread's own (active) namespace, which is always allowed.
        // SAFETY: `own` is an open namespace file; as above.
        check(unsafe { libc::setns(self.own.as_raw_fd(), libc::CLONE_NEWPID) })?;
        child
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
