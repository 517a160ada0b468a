//! Forking and exec'ing a [`Prepared`] request, with pipes or a terminal.
//!
//! The child reports a failed set-up step (`setuid`, `chdir`, `execve`, ...) to the
//! parent through a close-on-exec pipe: EOF on that pipe means `execve` succeeded,
//! eight bytes mean it did not, so a missing program is an error frame rather than
//! a silent exit code 127.

use std::ffi::{c_char, CString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};

use super::prepare::Prepared;
use super::reaper::{ExitWatch, Reaper};
use super::ExecError;
use moat_proto::exec::WinSize;

/// The parent's ends of a child's standard streams.
#[derive(Debug)]
pub enum ChildIo {
    /// Pipes; `stdin` only when the client feeds it.
    Pipes { stdin: Option<OwnedFd>, stdout: OwnedFd, stderr: OwnedFd },
    /// A terminal master (input, output and resizes).
    Pty { master: OwnedFd },
}

/// A started process.
#[derive(Debug)]
pub struct Child {
    /// Its pid, which is also its process group and session id.
    pub pid: i32,
    /// Its exit, from the reaper.
    pub exit: ExitWatch,
    /// Its standard streams, parent side, all non-blocking.
    pub io: ChildIo,
}

/// Set-up steps the child can fail at, as reported through the error pipe.
const STEPS: [&str; 7] = ["setsid", "acquire the terminal", "redirect stdio", "setgroups", "setgid", "setuid", "chdir"];
const STEP_EXEC: u32 = 7;

/// Starts `p`, returning once `execve` has succeeded or failed.
pub fn spawn(p: &Prepared) -> Result<Child, ExecError> {
    let setup = |step| move |e: Errno| ExecError::Setup { step, errno: e };
    // Child-side ends are dropped at the end of this function, after the fork.
    let (io, child_stdio, ctty): (ChildIo, Vec<OwnedFd>, Option<RawFd>) = match p.tty {
        Some(size) => {
            let (master, slave) = open_pty(size).map_err(setup("open a terminal"))?;
            let ctty = slave.as_raw_fd();
            (ChildIo::Pty { master }, vec![slave], Some(ctty))
        }
        None => {
            let (stdin_r, stdin_w) = if p.stdin {
                let (r, w) = pipe().map_err(setup("create a pipe"))?;
                (r, Some(w))
            } else {
                let null = File::open("/dev/null").map_err(|e| ExecError::Setup {
                    step: "open /dev/null",
                    errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                })?;
                (OwnedFd::from(null), None)
            };
            let (out_r, out_w) = pipe().map_err(setup("create a pipe"))?;
            let (err_r, err_w) = pipe().map_err(setup("create a pipe"))?;
            (ChildIo::Pipes { stdin: stdin_w, stdout: out_r, stderr: err_r }, vec![stdin_r, out_w, err_w], None)
        }
    };
    match &io {
        ChildIo::Pipes { stdin, stdout, stderr } => {
            for fd in stdin.iter().chain([stdout, stderr]) {
                set_nonblocking(fd).map_err(setup("configure a pipe"))?;
            }
        }
        ChildIo::Pty { master } => set_nonblocking(master).map_err(setup("configure the terminal"))?,
    }

    let (report_r, report_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(setup("create a pipe"))?;
    // Everything the child touches is built before the fork: it must not allocate.
    let argv = null_terminated(&p.argv);
    let envp = null_terminated(&p.envp);
    let groups: Vec<libc::gid_t> = p.account.groups.clone();
    let stdio_raw: [RawFd; 3] = match ctty {
        Some(tty) => [tty; 3],
        None => [0, 1, 2].map(|i| child_stdio[i].as_raw_fd()),
    };
    let child_args = ChildArgs {
        program: &p.program,
        argv: &argv,
        envp: &envp,
        cwd: &p.cwd,
        uid: p.account.uid,
        gid: p.account.gid,
        groups: &groups,
        stdio: stdio_raw,
        ctty,
        report: report_w.as_raw_fd(),
    };

    let (pid, exit) = Reaper::global().spawn(|| {
        // SAFETY: the child branch only calls async-signal-safe functions on memory
        // prepared before the fork (`child_args`), then execs or `_exit`s; it never
        // returns into Rust code that could touch locks held by other threads.
        match unsafe { libc::fork() } {
            -1 => Err(ExecError::Setup { step: "fork", errno: Errno::last() }),
            0 => unsafe_child(&child_args),
            pid => Ok(pid),
        }
    })?;
    drop(report_w);
    drop(child_stdio);

    let mut report = [0u8; 8];
    let n = read_full(report_r, &mut report);
    if n == report.len() {
        let step = u32::from_ne_bytes(report[..4].try_into().unwrap_or_default());
        let errno = Errno::from_raw(i32::from_ne_bytes(report[4..].try_into().unwrap_or_default()));
        // The child `_exit`s right after reporting; collect it so nothing lingers.
        let _ = exit.wait(std::time::Duration::from_secs(1));
        return Err(if step == STEP_EXEC {
            ExecError::Exec { program: p.program.to_string_lossy().into_owned(), errno }
        } else {
            ExecError::ChildSetup { step: STEPS.get(step as usize).copied().unwrap_or("set-up"), errno }
        });
    }
    Ok(Child { pid, exit, io })
}

/// What the forked child needs, borrowed from memory allocated before the fork.
struct ChildArgs<'a> {
    program: &'a CString,
    argv: &'a [*const c_char],
    envp: &'a [*const c_char],
    cwd: &'a CString,
    uid: u32,
    gid: u32,
    groups: &'a [libc::gid_t],
    stdio: [RawFd; 3],
    ctty: Option<RawFd>,
    report: RawFd,
}

/// The forked child: set up, exec, or report the failing step and `_exit(127)`.
fn unsafe_child(a: &ChildArgs<'_>) -> ! {
    let fail = |step: u32| -> ! {
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&step.to_ne_bytes());
        msg[4..].copy_from_slice(&Errno::last_raw().to_ne_bytes());
        // SAFETY: `msg` is a live 8-byte buffer; `report` is the child's copy of the
        // pipe's write end; `_exit` skips Rust destructors and atexit handlers, which
        // would be unsound after fork in a threaded process.
        unsafe {
            libc::write(a.report, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    };
    // SAFETY: only async-signal-safe calls, on pointers into `ChildArgs` (alive for
    // the whole call: the parent's stack frame is copied into the child), with
    // null-terminated argv/envp arrays built by `null_terminated`.
    unsafe {
        // The agent blocks or ignores some signals; a new program starts clean.
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        if libc::setsid() < 0 {
            fail(0);
        }
        if let Some(tty) = a.ctty {
            if libc::ioctl(tty, libc::TIOCSCTTY, 0) < 0 {
                fail(1);
            }
        }
        for (target, &fd) in a.stdio.iter().enumerate() {
            let target = target as RawFd;
            let ok = if fd == target { libc::fcntl(fd, libc::F_SETFD, 0) >= 0 } else { libc::dup2(fd, target) >= 0 };
            if !ok {
                fail(2);
            }
        }
        if libc::setgroups(a.groups.len(), a.groups.as_ptr()) < 0 {
            fail(3);
        }
        if libc::setgid(a.gid) < 0 {
            fail(4);
        }
        if libc::setuid(a.uid) < 0 {
            fail(5);
        }
        if libc::chdir(a.cwd.as_ptr()) < 0 {
            fail(6);
        }
        libc::execve(a.program.as_ptr(), a.argv.as_ptr(), a.envp.as_ptr());
    }
    fail(STEP_EXEC)
}

fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Errno> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC)
}

fn set_nonblocking(fd: &OwnedFd) -> Result<(), Errno> {
    let flags = OFlag::from_bits_retain(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Reads until `buf` is full or EOF; returns the byte count.
fn read_full(fd: OwnedFd, buf: &mut [u8]) -> usize {
    let mut file = File::from(fd);
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    n
}

/// A new terminal of `size`: (master, slave), both close-on-exec.
fn open_pty(size: WinSize) -> Result<(OwnedFd, OwnedFd), Errno> {
    // SAFETY: plain syscalls on fds we own; each successful fd is wrapped in an
    // `OwnedFd` immediately, so it is closed on every error path.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if m < 0 {
            return Err(Errno::last());
        }
        let master = OwnedFd::from_raw_fd(m);
        if libc::unlockpt(m) < 0 {
            return Err(Errno::last());
        }
        // TIOCGPTPEER opens the slave without a path lookup (Linux >= 4.13).
        let s = libc::ioctl(m, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if s < 0 {
            return Err(Errno::last());
        }
        let slave = OwnedFd::from_raw_fd(s);
        set_winsize(&master, size)?;
        Ok((master, slave))
    }
}

/// Sets a terminal's size (the kernel sends SIGWINCH to its foreground group).
pub fn set_winsize(master: &OwnedFd, size: WinSize) -> Result<(), Errno> {
    let ws = libc::winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is live.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    Errno::result(r).map(drop)
}
