//! Confining the whole VMM process beyond seccomp: namespaces, an empty
//! root, dropped privileges, and resource limits.
//!
//! The jail comes in two steps around the build, because building needs the
//! host's files and the jail takes them away:
//!
//! 1. [`enter_namespaces`], first thing, while the process has one thread:
//!    new mount, IPC, UTS and network namespaces (no network device at all,
//!    not even a usable loopback), every mount private.
//! 2. [`confine`], once the VM is built and every file and socket is open:
//!    an empty read-only tmpfs becomes the root (`chroot`), the process
//!    takes the given uid/gid with no supplementary groups, every
//!    capability goes (bounding, ambient, permitted, effective), and
//!    `no_new_privs` is set.
//!
//! Unix sockets are reached by their fds (connected before step 2), so the
//! back-ends and the control socket keep working; paths stop resolving.
//!
//! - `RLIMIT_NOFILE` caps the fds the process may hold (the VM needs a
//!   dozen or so: KVM, vCPUs, guest RAM, disks, eventfds, the socket).
//! - `RLIMIT_FSIZE` caps how large a file the process may write, e.g. a
//!   serial log a guest floods (and disk images: set it above the largest).
//!   Sizing guest RAM's memfd counts too, so apply limits after the build. `SIGXFSZ` is ignored, so a write past the
//!   limit fails (`EFBIG`) instead of killing the VMM; the serial sink then
//!   stops and further output stays in the bounded buffer.
//! - `RLIMIT_NPROC` caps the owning user's processes and threads (not
//!   enforced for root).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Limits to set; `None` leaves a limit as inherited.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rlimits {
    pub nofile: Option<u64>,
    pub fsize: Option<u64>,
    pub nproc: Option<u64>,
}

/// Where and as whom the confined VMM runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jail {
    /// A directory that becomes the (empty, read-only) root; whatever it
    /// holds is hidden under a tmpfs.
    pub root: PathBuf,
    /// Run as this uid and gid afterwards (both or neither); `None` stays
    /// root, still without any capability.
    pub ids: Option<(u32, u32)>,
}

/// The process could not be confined.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("could not set {0}")]
    Rlimit(&'static str, #[source] io::Error),
    #[error("could not ignore SIGXFSZ")]
    Signal(#[source] io::Error),
    #[error("could not enter new namespaces (the jail needs root: CAP_SYS_ADMIN)")]
    Unshare(#[source] io::Error),
    #[error("could not {0}")]
    Root(String, #[source] io::Error),
    #[error("could not {0}")]
    Privileges(&'static str, #[source] io::Error),
}

/// Step 1: new mount, IPC, UTS and network namespaces, with every mount
/// made private so nothing done later reaches the host's mount table.
/// Must be called while the process has a single thread.
pub fn enter_namespaces() -> Result<(), JailError> {
    let flags = libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWNET;
    // SAFETY: unshare takes flags only and changes this process's namespaces.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(JailError::Unshare(io::Error::last_os_error()));
    }
    let root = c"/";
    // SAFETY: a remount with null source, type and data; `root` is a valid C string.
    let private = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if private != 0 {
        return Err(JailError::Root("make the mounts private".into(), io::Error::last_os_error()));
    }
    Ok(())
}

/// Step 2: the empty root, the ids, no capabilities, no new privileges.
/// Every file and socket the VM needs must be open already.
pub fn confine(jail: &Jail) -> Result<(), JailError> {
    empty_root(&jail.root)?;
    drop_privileges(jail.ids)
}

fn empty_root(dir: &Path) -> Result<(), JailError> {
    std::fs::create_dir_all(dir).map_err(|e| JailError::Root(format!("create {}", dir.display()), e))?;
    let path = CString::new(dir.as_os_str().as_bytes()).map_err(|_| {
        JailError::Root(
            format!("use {} as the jail (a NUL in the path)", dir.display()),
            io::ErrorKind::InvalidInput.into(),
        )
    })?;
    let step = |what: &str| JailError::Root(format!("{what} {}", dir.display()), io::Error::last_os_error());
    let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: all pointers are valid C strings for the duration of the call.
    if unsafe {
        libc::mount(c"tmpfs".as_ptr(), path.as_ptr(), c"tmpfs".as_ptr(), flags, c"size=4k,mode=0555".as_ptr().cast())
    } != 0
    {
        return Err(step("mount an empty tmpfs on"));
    }
    // SAFETY: `path` is a valid C string.
    if unsafe { libc::chdir(path.as_ptr()) } != 0 {
        return Err(step("enter"));
    }
    // SAFETY: "." is a valid C string; the new root is the directory just entered.
    if unsafe { libc::chroot(c".".as_ptr()) } != 0 {
        return Err(step("chroot to"));
    }
    // SAFETY: "/" is a valid C string.
    if unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
        return Err(step("enter the new root"));
    }
    Ok(())
}

/// Drops every capability and, if asked, takes `ids`. glibc applies the
/// id changes to every thread of the process (the vhost-user watch threads
/// already exist), which their seccomp filter allows for that reason.
fn drop_privileges(ids: Option<(u32, u32)>) -> Result<(), JailError> {
    // The bounding set: what any future exec could regain. Past the last
    // capability the kernel knows, PR_CAPBSET_DROP fails with EINVAL.
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(JailError::Privileges("drop the capability bounding set", io::Error::last_os_error()));
        }
    }
    // SAFETY: prctl with integer arguments only.
    let ambient = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
    privileged(ambient, "clear the ambient capabilities")?;
    if let Some((uid, gid)) = ids {
        // SAFETY: setgroups with an empty list (null pointer, length 0).
        privileged(unsafe { libc::setgroups(0, std::ptr::null()) }, "drop the supplementary groups")?;
        // SAFETY: integer arguments only.
        privileged(unsafe { libc::setresgid(gid, gid, gid) }, "set the group id")?;
        // SAFETY: integer arguments only.
        privileged(unsafe { libc::setresuid(uid, uid, uid) }, "set the user id")?;
    }
    clear_capabilities()?;
    // SAFETY: prctl with integer arguments only.
    let nnp = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    privileged(nnp, "set no_new_privs")
}

/// A libc return value: 0 is success, anything else fails with errno.
fn privileged(ret: libc::c_int, what: &'static str) -> Result<(), JailError> {
    match ret {
        0 => Ok(()),
        _ => Err(JailError::Privileges(what, io::Error::last_os_error())),
    }
}

/// Empties this thread's permitted, effective and inheritable sets (threads
/// started later inherit them).
fn clear_capabilities() -> Result<(), JailError> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header { version: VERSION_3, pid: 0 };
    let data = [Data { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: capset reads a version-3 header and two data structs, both
    // valid for the call; pid 0 is the calling thread.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(JailError::Privileges("clear the capabilities", io::Error::last_os_error()));
    }
    Ok(())
}

/// Sets `limits` (soft and hard) on the calling process.
pub fn apply_rlimits(limits: &Rlimits) -> Result<(), JailError> {
    let wanted = [
        (libc::RLIMIT_NOFILE, limits.nofile, "RLIMIT_NOFILE"),
        (libc::RLIMIT_FSIZE, limits.fsize, "RLIMIT_FSIZE"),
        (libc::RLIMIT_NPROC, limits.nproc, "RLIMIT_NPROC"),
    ];
    for (resource, value, name) in wanted {
        let Some(value) = value else { continue };
        let limit = libc::rlimit { rlim_cur: value, rlim_max: value };
        // SAFETY: `limit` is a valid rlimit the call only reads.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            return Err(JailError::Rlimit(name, io::Error::last_os_error()));
        }
    }
    if limits.fsize.is_some() {
        // SAFETY: SIG_IGN is a valid disposition for SIGXFSZ; no handler runs.
        if unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) } == libc::SIG_ERR {
            return Err(JailError::Signal(io::Error::last_os_error()));
        }
    }
    Ok(())
}
