//! The supervisor decides, call by call, whether virtiofsd may create a name.
//!
//! A seccomp filter in virtiofsd (installed before it starts) turns every
//! creating call — `open`/`openat`/`openat2` with `O_CREAT`, `creat`, `mkdir[at]`,
//! `mknod[at]`, `symlink[at]`, `link[at]`, `rename[at|at2]` — into a user
//! notification (`SECCOMP_RET_USER_NOTIF`). The filter's listener travels to the
//! supervisor over a socket pair before exec; a thread there reads each call's
//! folder (its descriptor, through `/proc/<pid>/fd`) and name (from
//! `/proc/<pid>/mem`, at most `PATH_MAX` bytes) and answers `EPERM` when the
//! [`Shield`] refuses that name in that folder, or lets the kernel go on.
//!
//! virtiofsd copies every name out of guest memory before using it, so the
//! guest cannot change a name between the check and the call; virtiofsd itself
//! is trusted code. Other calls never stop here.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond, SeccompRule,
};

use super::git::{DirId, Shield};
use super::GuardError;

/// `SECCOMP_RET_TRACE` with this data marks the filter's matches; they are
/// rewritten to `SECCOMP_RET_USER_NOTIF`, which seccompiler cannot emit.
const MARK: u32 = 0x7ff0_0000 | 0x4d;
/// `SECCOMP_IOCTL_NOTIF_RECV`: `_IOWR('!', 0, struct seccomp_notif)`.
const NOTIF_RECV: libc::c_ulong = 0xc050_2100;
/// `SECCOMP_IOCTL_NOTIF_SEND`: `_IOWR('!', 1, struct seccomp_notif_resp)`.
const NOTIF_SEND: libc::c_ulong = 0xc018_2101;
/// `SECCOMP_IOCTL_NOTIF_ID_VALID`: `_IOW('!', 2, __u64)`.
const NOTIF_ID_VALID: libc::c_ulong = 0x4008_2102;

/// The creating calls, by number.
fn creating_calls() -> Result<Vec<(i64, Vec<SeccompRule>)>, seccompiler::Error> {
    let creat = |flags: u8| -> Result<Vec<SeccompRule>, seccompiler::Error> {
        let o_creat = libc::O_CREAT as u64;
        Ok(vec![SeccompRule::new(vec![Cond::new(flags, Len::Dword, Op::MaskedEq(o_creat), o_creat)?])?])
    };
    Ok(vec![
        (libc::SYS_open, creat(1)?),
        (libc::SYS_openat, creat(2)?),
        (libc::SYS_creat, vec![]),
        // Its flags sit behind a pointer: every call stops, `decide` reads them.
        (libc::SYS_openat2, vec![]),
        (libc::SYS_mkdir, vec![]),
        (libc::SYS_mkdirat, vec![]),
        (libc::SYS_mknod, vec![]),
        (libc::SYS_mknodat, vec![]),
        (libc::SYS_symlink, vec![]),
        (libc::SYS_symlinkat, vec![]),
        (libc::SYS_link, vec![]),
        (libc::SYS_linkat, vec![]),
        (libc::SYS_rename, vec![]),
        (libc::SYS_renameat, vec![]),
        (libc::SYS_renameat2, vec![]),
    ])
}

/// Where the name a creating call makes is given: (folder descriptor argument
/// or `None` for the working folder, path pointer argument).
fn name_argument(nr: i64) -> Option<(Option<usize>, usize)> {
    let at = |dir: usize, path: usize| Some((Some(dir), path));
    match nr {
        libc::SYS_openat | libc::SYS_openat2 | libc::SYS_mkdirat | libc::SYS_mknodat => at(0, 1),
        libc::SYS_symlinkat => at(1, 2),
        libc::SYS_linkat | libc::SYS_renameat | libc::SYS_renameat2 => at(2, 3),
        libc::SYS_open | libc::SYS_creat | libc::SYS_mkdir | libc::SYS_mknod => Some((None, 0)),
        libc::SYS_symlink | libc::SYS_link | libc::SYS_rename => Some((None, 1)),
        _ => None,
    }
}

/// The filter to install in the child, and the socket pair its listener crosses.
pub(crate) struct Notifier {
    program: BpfProgram,
    parent: UnixDatagram,
    child: UnixDatagram,
}

impl Notifier {
    pub(crate) fn new() -> Result<Notifier, GuardError> {
        let rules = creating_calls().map_err(GuardError::Filter)?;
        let mut program = super::compile(rules, SeccompAction::Trace(MARK & 0xffff))?;
        for insn in program.iter_mut() {
            if insn.code == (libc::BPF_RET | libc::BPF_K) as u16 && insn.k == MARK {
                insn.k = libc::SECCOMP_RET_USER_NOTIF;
            }
        }
        let (parent, child) = UnixDatagram::pair().map_err(GuardError::Socket)?;
        Ok(Notifier { program, parent, child })
    }

    /// In the child before exec (after `no_new_privs`): installs the filter and
    /// sends its listener to the parent. Async-signal-safe: syscalls only.
    pub(crate) fn install(&self) -> std::io::Result<()> {
        let prog = libc::sock_fprog {
            len: self.program.len() as u16,
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at a filter that lives in `self`; the kernel copies it.
        let listener = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &prog as *const libc::sock_fprog,
            )
        };
        if listener < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sent = send_fd(self.child.as_raw_fd(), listener as RawFd);
        // SAFETY: `listener` is our own descriptor; the parent has its copy now.
        unsafe { libc::close(listener as RawFd) };
        sent
    }

    /// In the parent once the child runs: receives the listener and answers its
    /// calls on a thread of its own until the child is gone.
    pub(crate) fn serve(&self, shield: Arc<Shield>) -> std::io::Result<()> {
        let listener = recv_fd(self.parent.as_raw_fd())?;
        crate::threads::spawn_without_signals(move || answer_all(&listener, &shield));
        Ok(())
    }
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").field("program", &self.program.len()).finish()
    }
}

/// Answers notifications until the filtered processes are all gone.
fn answer_all(listener: &OwnedFd, shield: &Shield) {
    loop {
        let mut pfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if pfd.revents & libc::POLLIN == 0 {
            return; // POLLHUP: no process uses the filter any more
        }
        // SAFETY: seccomp_notif is plain data; the kernel requires it zeroed.
        let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: NOTIF_RECV fills `notif`, which it fully owns.
        if unsafe { libc::ioctl(listener.as_raw_fd(), NOTIF_RECV, &mut notif) } != 0 {
            continue; // the caller went away (ENOENT) or a signal interrupted
        }
        let refused = decide(&notif, shield);
        // SAFETY: NOTIF_ID_VALID only reads the id.
        let valid = unsafe { libc::ioctl(listener.as_raw_fd(), NOTIF_ID_VALID, &notif.id) } == 0;
        if !valid {
            continue;
        }
        let resp = libc::seccomp_notif_resp {
            id: notif.id,
            val: 0,
            error: if refused { -libc::EPERM } else { 0 },
            flags: if refused { 0 } else { libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32 },
        };
        // SAFETY: NOTIF_SEND reads `resp`.
        unsafe { libc::ioctl(listener.as_raw_fd(), NOTIF_SEND, &resp) };
    }
}

/// Whether the call in `notif` creates a name the shield refuses. Fails
/// closed: a name that can't be read is refused.
fn decide(notif: &libc::seccomp_notif, shield: &Shield) -> bool {
    let Some((dir_arg, path_arg)) = name_argument(i64::from(notif.data.nr)) else { return false };
    let pid = notif.pid;
    if i64::from(notif.data.nr) == libc::SYS_openat2 {
        // struct open_how { u64 flags; … }: only a creating open concerns us.
        let Some(flags) = read_bytes(pid, notif.data.args[2], 8) else { return true };
        let flags = u64::from_ne_bytes(flags.try_into().unwrap_or([0xff; 8]));
        if flags & libc::O_CREAT as u64 == 0 {
            return false;
        }
    }
    let Some(path) = read_c_string(pid, notif.data.args[path_arg]) else { return true };
    let (prefix, name) = match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&path[..0], &path[..]),
    };
    // The folder, seen from the caller: its root, working folder or descriptor
    // (magic links that lead into its own mount namespace), then the prefix.
    let mut folder = match dir_arg {
        _ if path.first() == Some(&b'/') => format!("/proc/{pid}/root").into_bytes(),
        Some(i) if notif.data.args[i] as u32 as i32 != libc::AT_FDCWD => {
            format!("/proc/{pid}/fd/{}", notif.data.args[i] as u32 as i32).into_bytes()
        }
        _ => format!("/proc/{pid}/cwd").into_bytes(),
    };
    if !prefix.is_empty() {
        folder.push(b'/');
        folder.extend_from_slice(prefix);
    }
    let folder = std::path::PathBuf::from(std::ffi::OsString::from_vec(folder));
    match std::fs::metadata(&folder) {
        Ok(m) => shield.refuses(DirId { dev: m.dev(), ino: m.ino() }, name),
        Err(_) => shield.refuses_anywhere(name),
    }
}

/// `len` bytes at `addr` in `pid`'s memory.
fn read_bytes(pid: u32, addr: u64, len: usize) -> Option<Vec<u8>> {
    let mem = File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut buf = vec![0u8; len];
    mem.read_exact_at(&mut buf, addr).ok()?;
    Some(buf)
}

/// A NUL-terminated string at `addr` in `pid`'s memory, at most `PATH_MAX` bytes.
fn read_c_string(pid: u32, addr: u64) -> Option<Vec<u8>> {
    let mem = File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    let mut got = 0;
    // Read page by page: the string may end just before an unmapped page.
    while got < buf.len() {
        let want = (4096 - ((addr as usize + got) % 4096)).min(buf.len() - got);
        let n = mem.read_at(&mut buf[got..got + want], addr + got as u64).ok()?;
        if n == 0 {
            return None;
        }
        if let Some(end) = buf[got..got + n].iter().position(|b| *b == 0) {
            buf.truncate(got + end);
            return Some(buf);
        }
        got += n;
    }
    None
}

/// Sends `fd` over the datagram socket `sock` (SCM_RIGHTS). Async-signal-safe.
fn send_fd(sock: RawFd, fd: RawFd) -> std::io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut control = [0u64; 4];
    let mut msg = one_fd_message(&mut iov, &mut control);
    // SAFETY: CMSG_SPACE is a pure computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as usize;
    // SAFETY: the control buffer is large enough for one header and one fd.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(4) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    }
    // SAFETY: `msg` is fully initialised above.
    if unsafe { libc::sendmsg(sock, &msg, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A one-byte message with room for one descriptor (`CMSG_SPACE(4)` = 24 on
/// 64-bit), its buffers owned by the caller.
fn one_fd_message(iov: &mut libc::iovec, control: &mut [u64; 4]) -> libc::msghdr {
    // SAFETY: msghdr is plain data; the pointers set below outlive its use.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(control);
    msg
}

/// Receives one descriptor sent by [`send_fd`].
fn recv_fd(sock: RawFd) -> std::io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut control = [0u64; 4];
    let mut msg = one_fd_message(&mut iov, &mut control);
    // SAFETY: `msg` points at buffers owned by this frame.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT) };
    if n <= 0 {
        return Err(std::io::Error::other("virtiofsd sent no seccomp listener"));
    }
    // SAFETY: the kernel filled the control buffer; we read one SCM_RIGHTS fd.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Err(std::io::Error::other("virtiofsd sent no seccomp listener"));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
        Ok(OwnedFd::from_raw_fd(fd))
    }
}
