//! Per-thread seccomp filters: each VMM thread may make only the syscalls
//! its job needs, and a thread that makes any other is killed, with the
//! whole process.
//!
//! One rules function per [`Thread`], one comment per syscall saying which
//! code makes it. The lists come from what the threads really do (traced
//! with `strace -f` over the end-to-end guests) and are proven by those
//! guests running with the filters on.
//!
//! A violation kills the **process** (`SECCOMP_RET_KILL_PROCESS`), not just
//! the thread: a vCPU or VMM thread that vanished would leave the VM half
//! running with its locks possibly held, while a dead process is a clear,
//! visible failure (its parent sees `SIGSYS`) and frees every resource.
//!
//! Filters are installed by each thread on itself, right after it starts
//! and before it touches guest input. Everything that needs broader access
//! (opening `/dev/kvm`, disk images, the control socket, `/proc/self/statm`)
//! happens before, on the thread that builds the VM.

use std::collections::BTreeMap;

use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// `_IO(KVMIO, 0x80)`: enter the guest.
const KVM_RUN: u64 = 0xae80;
/// `_IOR(KVMIO, 0x81, struct kvm_regs)`: read registers (diagnostics).
const KVM_GET_REGS: u64 = 0x8090_ae81;

/// The threads of a running VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thread {
    /// The VMM thread: control socket, serial output, deadlines.
    Vmm,
    /// A vCPU thread: `KVM_RUN` and the device emulation its exits need.
    Vcpu,
    /// A vhost-user device's watch on its back-end's socket (started when
    /// the device is attached; it confines itself at once, seccomp option
    /// or not, since it only ever waits and then flags the device).
    DeviceWatch,
}

impl Thread {
    /// Every thread kind.
    pub const ALL: [Thread; 3] = [Thread::Vmm, Thread::Vcpu, Thread::DeviceWatch];
}

/// A filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
#[error("seccomp: {0}")]
pub struct SeccompError(#[from] seccompiler::Error);

/// `thread`'s filter, compiled to BPF: its syscalls allowed, any other one
/// kills the process.
pub fn filter(thread: Thread) -> Result<BpfProgram, SeccompError> {
    let backend = |e: BackendError| SeccompError(e.into());
    let rules = match thread {
        Thread::Vmm => vmm_rules(),
        Thread::Vcpu => vcpu_rules(),
        Thread::DeviceWatch => device_watch_rules(),
    }
    .map_err(backend)?;
    let rules: BTreeMap<i64, Vec<SeccompRule>> = rules.into_iter().collect();
    let arch = std::env::consts::ARCH.try_into().map_err(backend)?;
    let filter = SeccompFilter::new(rules, SeccompAction::KillProcess, SeccompAction::Allow, arch).map_err(backend)?;
    filter.try_into().map_err(backend)
}

/// Installs `program` on the calling thread, for good (and on threads it
/// spawns later).
pub fn apply(program: &BpfProgram) -> Result<(), SeccompError> {
    Ok(seccompiler::apply_filter(program)?)
}

type Rules = Vec<(i64, Vec<SeccompRule>)>;

/// Allowed whatever the arguments.
fn any(syscall: libc::c_long) -> (i64, Vec<SeccompRule>) {
    (syscall, Vec::new())
}

/// Allowed when argument `arg` equals one of `values`.
fn when_arg(syscall: libc::c_long, arg: u8, values: &[u64]) -> Result<(i64, Vec<SeccompRule>), BackendError> {
    let rules = values
        .iter()
        .map(|&v| SeccompRule::new(vec![SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, v)?]))
        .collect::<Result<_, _>>()?;
    Ok((syscall, rules))
}

/// What every Rust thread does to live and die: locks, memory, its exit.
fn thread_basics() -> Result<Rules, BackendError> {
    let mut rules = vec![
        // Mutexes and condition variables (device locks, the run's state).
        any(libc::SYS_futex),
        // The allocator: thread arenas, large buffers, returning memory.
        any(libc::SYS_mmap),
        any(libc::SYS_munmap),
        any(libc::SYS_mremap),
        any(libc::SYS_brk),
        // glibc frees a finished thread's stack pages; the allocator trims.
        any(libc::SYS_madvise),
        // Instant::now and CPU-time clocks, when the vDSO cannot answer.
        any(libc::SYS_clock_gettime),
        // Kicking vCPU threads: pthread_kill is tgkill(getpid(), tid, sig)
        // (tgkill only into this process: see below).
        any(libc::SYS_getpid),
        // glibc blocks signals around thread exit and pthread_kill.
        any(libc::SYS_rt_sigprocmask),
        // Returning from the kick signal's handler.
        any(libc::SYS_rt_sigreturn),
        // Rust's stack-overflow guard removes its alternate signal stack.
        any(libc::SYS_sigaltstack),
        // Thread exit.
        any(libc::SYS_exit),
    ];
    // Signals only to threads of this process (the filter is compiled in
    // it): never to another VMM running as the same user.
    rules.push(when_arg(libc::SYS_tgkill, 0, &[u64::from(std::process::id())])?);
    Ok(rules)
}

/// The VMM thread.
fn vmm_rules() -> Result<Rules, BackendError> {
    let mut rules = thread_basics()?;
    rules.extend([
        // Waiting for the control socket, the "stopped" eventfd, a deadline.
        any(libc::SYS_poll),
        // Accepting control connections (non-blocking, close-on-exec).
        any(libc::SYS_accept4),
        // Requests from clients (Rust reads a UnixStream with recvfrom).
        any(libc::SYS_recvfrom),
        // Draining the "stopped" eventfd.
        any(libc::SYS_read),
        // Answers to clients (Rust sends with MSG_NOSIGNAL: no SIGPIPE).
        any(libc::SYS_sendto),
        // Serial output to its sink.
        any(libc::SYS_write),
        // Dropping a client connection.
        any(libc::SYS_close),
        // Re-reading /proc/self/statm (opened before confinement) for RSS.
        any(libc::SYS_pread64),
        // Sizing guest RAM's memfd for `stats` (glibc's fstat).
        any(libc::SYS_newfstatat),
    ]);
    // Making an accepted client non-blocking.
    rules.push(when_arg(libc::SYS_ioctl, 1, &[libc::FIONBIO])?);
    // Closing an fd: Rust's debug builds first check it is open.
    rules.push(when_arg(libc::SYS_fcntl, 1, &[libc::F_GETFD as u64])?);
    Ok(rules)
}

/// A vhost-user device's back-end watch.
fn device_watch_rules() -> Result<Rules, BackendError> {
    let mut rules = thread_basics()?;
    rules.extend([
        // Sleeping until the back-end hangs up or the device is dropped.
        any(libc::SYS_poll),
        // Raising the config-change interrupt (the device's irqfd) when the
        // back-end is lost; log lines on stderr.
        any(libc::SYS_write),
        // Dropping its socket and eventfd handles at exit.
        any(libc::SYS_close),
        // A jailed VMM takes its uid/gid after devices are attached; glibc
        // makes every thread, this one too, make the same calls.
        any(libc::SYS_setgroups),
        any(libc::SYS_setresgid),
        any(libc::SYS_setresuid),
    ]);
    // Closing an fd: Rust's debug builds first check it is open.
    rules.push(when_arg(libc::SYS_fcntl, 1, &[libc::F_GETFD as u64])?);
    Ok(rules)
}

/// A vCPU thread.
fn vcpu_rules() -> Result<Rules, BackendError> {
    let mut rules = thread_basics()?;
    rules.extend([
        // Interrupts: a device signals its irqfd; stopping wakes the VMM
        // thread through the "stopped" eventfd.
        any(libc::SYS_write),
        // virtio-blk: reads, writes, flushes, discards and write-zeroes on
        // the disk images (opened before confinement).
        any(libc::SYS_pread64),
        any(libc::SYS_pwrite64),
        any(libc::SYS_fdatasync),
        any(libc::SYS_fallocate),
        // vhost-user: when the guest driver sets DRIVER_OK or resets a
        // virtio-fs/vsock device, this thread (the one that wrote the status
        // register) sends the back-end its set-up messages, eventfds
        // attached, and reads the acknowledgements (each bounded by the
        // socket's 10 s timeouts).
        any(libc::SYS_sendmsg),
        any(libc::SYS_recvmsg),
    ]);
    // Entering the guest; reading registers to report an internal error.
    rules.push(when_arg(libc::SYS_ioctl, 1, &[KVM_RUN, KVM_GET_REGS])?);
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_filter_compiles() {
        for thread in Thread::ALL {
            assert!(!filter(thread).unwrap().is_empty(), "{thread:?}");
        }
    }

    /// How a forked child that installed `thread`'s filter and then ran
    /// `act` ended: `Ok(exit code)` or `Err(signal)`.
    fn in_confined_child(thread: Thread, act: fn()) -> Result<i32, i32> {
        // Compiled before forking: the child only installs and acts, so it
        // touches no lock another thread of this test process might hold.
        let program = filter(thread).unwrap();
        // SAFETY: the child calls only async-signal-safe code (the seccomp
        // syscalls, raw syscalls in `act`, exit) before it exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = if apply(&program).is_ok() { 0 } else { 99 };
            if code == 0 {
                act();
            }
            // SAFETY: ends the child's only thread, so the child, at once,
            // running nothing of ours; `exit` as a VMM thread would.
            unsafe { libc::syscall(libc::SYS_exit, code) };
            unreachable!("exit returned");
        }
        let mut status = 0;
        // SAFETY: `pid` is our child and `status` is a valid place to write.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        if libc::WIFSIGNALED(status) {
            Err(libc::WTERMSIG(status))
        } else {
            Ok(libc::WEXITSTATUS(status))
        }
    }

    fn open_a_socket() {
        // SAFETY: a raw syscall with plain integer arguments.
        unsafe { libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0) };
    }

    fn open_a_file() {
        // SAFETY: a raw syscall; the path is a NUL-terminated literal.
        unsafe { libc::syscall(libc::SYS_openat, libc::AT_FDCWD, c"/etc/hostname".as_ptr(), libc::O_RDONLY) };
    }

    fn allowed_calls() {
        // SAFETY: raw syscalls on an invalid fd: they fail with EBADF.
        unsafe {
            libc::syscall(libc::SYS_getpid);
            libc::syscall(libc::SYS_write, -1, std::ptr::null::<u8>(), 0);
            libc::syscall(libc::SYS_ioctl, -1, KVM_RUN, 0);
        }
    }

    fn a_non_kvm_ioctl() {
        // SAFETY: a raw ioctl on an invalid fd: it would fail with EBADF.
        unsafe { libc::syscall(libc::SYS_ioctl, -1, libc::TIOCSTI, 0) };
    }

    #[test]
    fn a_thread_making_a_forbidden_syscall_is_killed_with_its_process() {
        for thread in Thread::ALL {
            assert_eq!(in_confined_child(thread, open_a_socket), Err(libc::SIGSYS), "{thread:?}: socket");
            assert_eq!(in_confined_child(thread, open_a_file), Err(libc::SIGSYS), "{thread:?}: openat");
        }
        assert_eq!(in_confined_child(Thread::Vcpu, a_non_kvm_ioctl), Err(libc::SIGSYS), "vCPU: other ioctls");
    }

    #[test]
    fn signals_go_only_to_the_process_that_compiled_the_filter() {
        // The filters are compiled in this (the parent) process, so its pid
        // is the one allowed; the child signals it with signal 0 (a check).
        static PARENT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
        PARENT.store(std::process::id() as i32, std::sync::atomic::Ordering::SeqCst);
        fn to_the_compiling_process() {
            let parent = PARENT.load(std::sync::atomic::Ordering::SeqCst);
            // SAFETY: a signal-0 tgkill only checks that the process exists.
            unsafe { libc::syscall(libc::SYS_tgkill, parent, parent, 0) };
        }
        fn to_init() {
            // SAFETY: a signal-0 tgkill only checks that pid 1 exists.
            unsafe { libc::syscall(libc::SYS_tgkill, 1, 1, 0) };
        }
        for thread in Thread::ALL {
            assert_eq!(in_confined_child(thread, to_the_compiling_process), Ok(0), "{thread:?}");
            assert_eq!(in_confined_child(thread, to_init), Err(libc::SIGSYS), "{thread:?}");
        }
    }

    #[test]
    fn allowed_syscalls_pass() {
        assert_eq!(in_confined_child(Thread::Vcpu, allowed_calls), Ok(0));
        assert_eq!(
            in_confined_child(Thread::Vmm, || {
                // SAFETY: raw syscalls with plain integer arguments.
                unsafe {
                    libc::syscall(libc::SYS_getpid);
                    libc::syscall(libc::SYS_ioctl, -1, libc::FIONBIO, 0);
                }
            }),
            Ok(0)
        );
    }
}
