//! What `moat-vsock` gives up before it reads a byte a guest wrote.
//!
//! Always (whoever runs it): `no_new_privs`, and a seccomp filter that kills
//! the process on any call it has no use for — starting programs or
//! processes, tracing or reading other processes, mounts, namespaces, root
//! changes, kernel modules, keys, BPF — and refuses sockets other than Unix
//! ones (`EAFNOSUPPORT`), so it cannot reach a network. `clone3` answers
//! `ENOSYS` (its flags sit behind a pointer), and glibc then makes threads
//! with `clone`, which is allowed only with `CLONE_THREAD`.
//!
//! With `--jail` (the supervisor passes it when Moat runs as root), first:
//! the folder of its sockets becomes its root (`chroot`, the sockets then
//! named relative to it), and every capability goes (bounding, ambient,
//! permitted, effective). It keeps uid 0 — the sockets it must reach, one per
//! guest connection, are the supervisor's in an owner-only folder — but as
//! root without capabilities in an otherwise empty view it owns nothing but
//! that run folder. Everything here runs before the first thread starts, so
//! every thread inherits it.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond, SeccompFilter,
    SeccompRule,
};

/// Why the process could not confine itself.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// The sockets are not in one folder.
    #[error("--jail needs --socket and --uds-path in one folder")]
    Folders,
    /// A step failed.
    #[error("cannot {0}")]
    Step(&'static str, #[source] io::Error),
    /// The filter could not be built.
    #[error("cannot build the seccomp filter")]
    Filter(#[source] seccompiler::Error),
}

/// Takes the folder of `socket` and `uds_path` as the root and drops every
/// capability; returns the two socket paths as seen from inside.
pub fn enter(socket: &Path, uds_path: &Path) -> Result<(PathBuf, PathBuf), JailError> {
    let folder = socket.parent().filter(|f| Some(*f) == uds_path.parent()).ok_or(JailError::Folders)?;
    let (Some(socket_name), Some(uds_name)) = (socket.file_name(), uds_path.file_name()) else {
        return Err(JailError::Folders);
    };
    std::env::set_current_dir(folder).map_err(|e| JailError::Step("enter the socket folder", e))?;
    std::os::unix::fs::chroot(".").map_err(|e| JailError::Step("chroot to the socket folder", e))?;
    drop_capabilities()?;
    Ok((Path::new("/").join(socket_name), Path::new("/").join(uds_name)))
}

/// `no_new_privs` and the filter, on this thread and every thread it starts.
pub fn restrict() -> Result<(), JailError> {
    // SAFETY: prctl with integer arguments only.
    step(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }, "set no_new_privs")?;
    for program in filters()? {
        seccompiler::apply_filter(&program).map_err(JailError::Filter)?;
    }
    Ok(())
}

fn step(rc: libc::c_int, what: &'static str) -> Result<(), JailError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(JailError::Step(what, io::Error::last_os_error()))
    }
}

fn drop_capabilities() -> Result<(), JailError> {
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            // Past the last capability the kernel knows.
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(JailError::Step("drop the bounding set", io::Error::last_os_error()));
        }
    }
    // SAFETY: prctl with integer arguments only.
    let ambient = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
    step(ambient, "clear the ambient capabilities")?;
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
    // SAFETY: capset reads a version-3 header and two data structs, both valid
    // for the call; pid 0 is the calling thread.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    step(i32::from(rc != 0), "clear the capabilities")
}

/// Three filters: calls that kill the process, sockets that are refused, and
/// calls that answer as if absent. The kernel runs each and takes the
/// strictest answer.
fn filters() -> Result<[BpfProgram; 3], JailError> {
    let kill = [
        libc::SYS_execve,            // no programs,
        libc::SYS_execveat,          //
        libc::SYS_fork,              // no processes,
        libc::SYS_vfork,             //
        libc::SYS_ptrace,            // no looking into other processes,
        libc::SYS_process_vm_readv,  //
        libc::SYS_process_vm_writev, //
        libc::SYS_mount,             // no mounts,
        libc::SYS_umount2,           //
        libc::SYS_pivot_root,        //
        libc::SYS_chroot,            // no other root,
        libc::SYS_unshare,           // no namespaces,
        libc::SYS_setns,             //
        libc::SYS_open_by_handle_at, // no files by handle (they bypass the root),
        libc::SYS_bpf,               // no BPF or perf,
        libc::SYS_perf_event_open,   //
        libc::SYS_userfaultfd,       //
        libc::SYS_init_module,       // no kernel modules or kernels,
        libc::SYS_finit_module,      //
        libc::SYS_delete_module,     //
        libc::SYS_kexec_load,        //
        libc::SYS_kexec_file_load,   //
        libc::SYS_reboot,            //
        libc::SYS_keyctl,            // no kernel keyrings.
        libc::SYS_add_key,           //
        libc::SYS_request_key,       //
    ];
    let rule = |conds: Vec<Cond>| SeccompRule::new(conds).map_err(|e| JailError::Filter(e.into()));
    let cond = |arg, op, value| Cond::new(arg, Len::Qword, op, value).map_err(|e| JailError::Filter(e.into()));
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = kill.into_iter().map(|nr| (nr, Vec::new())).collect();
    // clone without CLONE_THREAD makes a process.
    let thread = libc::CLONE_THREAD as u64;
    rules.insert(libc::SYS_clone, vec![rule(vec![cond(0, Op::MaskedEq(thread), 0)?])?]);
    let arch = std::env::consts::ARCH.try_into().map_err(|e| JailError::Filter(seccompiler::Error::Backend(e)))?;
    let compile = |rules, action| -> Result<BpfProgram, JailError> {
        let f =
            SeccompFilter::new(rules, SeccompAction::Allow, action, arch).map_err(|e| JailError::Filter(e.into()))?;
        f.try_into().map_err(|e| JailError::Filter(seccompiler::Error::Backend(e)))
    };
    let killing = compile(rules, SeccompAction::KillProcess)?;
    let mut refused = BTreeMap::new();
    refused.insert(libc::SYS_socket, vec![rule(vec![cond(0, Op::Ne, libc::AF_UNIX as u64)?])?]);
    let no_network = compile(refused, SeccompAction::Errno(libc::EAFNOSUPPORT as u32))?;
    let mut absent = BTreeMap::new();
    absent.insert(libc::SYS_clone3, Vec::new());
    absent.insert(libc::SYS_io_uring_setup, Vec::new());
    let not_here = compile(absent, SeccompAction::Errno(libc::ENOSYS as u32))?;
    Ok([killing, no_network, not_here])
}
