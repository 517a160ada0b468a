//! One virtio-fs share: the `virtiofsd` that serves it, and the guard that keeps
//! a guest from carrying privilege out through it.
//!
//! A guest is root in its VM and may ask virtiofsd for anything FUSE can say.
//! What lands on the host must still be only the share owner's ordinary files,
//! whether Moat runs as root (virtiofsd then has root's powers over the host
//! file system) or as a normal user. Three layers, each enough on its own for
//! what it covers:
//!
//! * **ids**: every guest uid/gid becomes the [`ShareOwner`]'s, every host
//!   uid/gid reads as the guest's `agent` (virtiofsd `--translate-uid/gid`);
//! * **capabilities** (root-run only): virtiofsd keeps no `CAP_MKNOD` (no
//!   device nodes), no `CAP_FSETID` (a write clears set-id bits) and no
//!   `CAP_SETFCAP` (no file capabilities), and is not given `--xattr`, so no
//!   extended attribute (`security.capability`, ACLs) is written at all;
//! * **a seccomp filter** installed on virtiofsd before it starts, whoever runs
//!   it: creating a block or character device, setting a set-uid or set-gid bit
//!   (`chmod`, `mknod`, `open`/`creat` with `O_CREAT` or `O_TMPFILE`), writing any
//!   extended attribute, or giving a file to anyone but the owner fails with
//!   `EPERM`. `openat2`, whose mode sits behind a pointer a filter cannot read,
//!   answers `ENOSYS`, so virtiofsd falls back to `openat` (it probes at start).
//!
//! FIFOs and sockets are allowed: they are plain files to the host (no device
//! behind them) and tools in the guest use them. Moat's own host code never
//! opens a file of the workspace that is not a regular file or folder.

mod git;
mod notify;
mod ns;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond, SeccompFilter,
    SeccompRule,
};

use crate::backend::Share;
use crate::owner::ShareOwner;

/// uid and gid of the guest's `agent` user, who owns the shares inside.
const GUEST_USER_ID: u32 = 1000;

/// `fchmodat2(2)` (Linux 6.6); not every libc names it.
const SYS_FCHMODAT2: i64 = 452;
/// `setxattrat(2)` (Linux 6.13).
const SYS_SETXATTRAT: i64 = 463;
/// The bit of `O_TMPFILE` that is not `O_DIRECTORY`.
const O_TMPFILE_BIT: u64 = 0o20_000_000;

/// The guard could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// A seccomp filter could not be built.
    #[error("cannot build the share guard's seccomp filter")]
    Filter(#[source] seccompiler::Error),
    /// The socket that carries the notification listener could not be made.
    #[error("cannot make the share guard's socket")]
    Socket(#[source] std::io::Error),
}

/// The `virtiofsd` command that serves `share` on `socket`, guarded, and what
/// to [`Serve::start`] once it is spawned.
pub(crate) fn virtiofsd(program: &Path, share: &Share, socket: &Path) -> Result<(Command, Serve), GuardError> {
    let mut c = Command::new(program);
    c.arg("--socket-path").arg(socket).arg("--shared-dir").arg(&share.path);
    c.args(["--sandbox", "namespace", "--seccomp", "kill", "--cache", "auto", "--log-level", "warn"]);
    let ShareOwner { uid, gid } = share.owner;
    c.arg(format!("--translate-uid=squash-guest:0:{uid}:4294967295"));
    c.arg(format!("--translate-uid=squash-host:0:{GUEST_USER_ID}:4294967295"));
    c.arg(format!("--translate-gid=squash-guest:0:{gid}:4294967295"));
    c.arg(format!("--translate-gid=squash-host:0:{GUEST_USER_ID}:4294967295"));
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        c.arg("--modcaps=-mknod:-fsetid:-setfcap");
    }
    if share.read_only {
        c.arg("--readonly");
    }
    let serve = guarded(&mut c, share)?;
    Ok((c, serve))
}

/// Puts `c` (virtiofsd, or anything that serves `share`'s files) under the
/// guard and, for a writable share, its shield and the notifier.
pub(crate) fn guarded(c: &mut Command, share: &Share) -> Result<Serve, GuardError> {
    guarded_as(c, share, ShareOwner::effective())
}

/// [`guarded`] for a child that will run as `runner` (whose namespace set-up
/// depends on whether it is root).
fn guarded_as(c: &mut Command, share: &Share, runner: ShareOwner) -> Result<Serve, GuardError> {
    let guard = Guard::new(share.owner)?;
    // A read-only share needs no shield: nothing can be written through it.
    let shield = Arc::new(if share.read_only { git::Shield::default() } else { git::Shield::for_share(&share.path) });
    let notifier = (!shield.is_empty()).then(notify::Notifier::new).transpose()?.map(Arc::new);
    let namespace = (!shield.binds.is_empty()).then(|| ns::Namespace::new(shield.binds.clone(), runner));
    let in_child = notifier.clone();
    // SAFETY: the closure runs in the forked child before exec and makes only
    // system calls (unshare, mount, open/write, prctl, seccomp, sendmsg) on
    // memory allocated before the fork.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(c, move || {
            if let Some(ns) = &namespace {
                ns.enter()?;
            }
            guard.install()?;
            if let Some(n) = &in_child {
                n.install()?;
            }
            Ok(())
        });
    }
    Ok(Serve { notifier, shield })
}

/// The supervisor's half of a guarded virtiofsd.
#[derive(Debug)]
pub(crate) struct Serve {
    notifier: Option<Arc<notify::Notifier>>,
    shield: Arc<git::Shield>,
}

impl Serve {
    /// Starts answering the spawned virtiofsd's creating calls.
    pub(crate) fn start(self) -> std::io::Result<()> {
        match &self.notifier {
            Some(n) => n.serve(self.shield),
            None => Ok(()),
        }
    }
}

/// The compiled filters, ready to be installed in a child.
pub(crate) struct Guard {
    refused: BpfProgram,
    absent: BpfProgram,
}

impl Guard {
    /// Filters for a virtiofsd serving files to `owner`.
    pub(crate) fn new(owner: ShareOwner) -> Result<Guard, GuardError> {
        let refused = compile(refused_rules(owner).map_err(GuardError::Filter)?, errno(libc::EPERM))?;
        let absent = compile(vec![(libc::SYS_openat2, vec![])], errno(libc::ENOSYS))?;
        Ok(Guard { refused, absent })
    }

    /// Installs both filters on the calling thread and its future children,
    /// after `no_new_privs`. Async-signal-safe: two syscalls per filter.
    pub(crate) fn install(&self) -> std::io::Result<()> {
        // SAFETY: prctl with these arguments only sets a flag on this thread.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        for program in [&self.refused, &self.absent] {
            let prog =
                libc::sock_fprog { len: program.len() as u16, filter: program.as_ptr() as *mut libc::sock_filter };
            // SAFETY: `prog` points at a filter that lives in `self`; the kernel copies it.
            let rc = unsafe {
                libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &prog as *const libc::sock_fprog)
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("refused", &self.refused.len()).field("absent", &self.absent.len()).finish()
    }
}

fn errno(e: i32) -> SeccompAction {
    SeccompAction::Errno(e as u32)
}

/// A filter taking `action` for the matching calls and allowing all else.
fn compile(rules: Vec<(i64, Vec<SeccompRule>)>, action: SeccompAction) -> Result<BpfProgram, GuardError> {
    let arch = std::env::consts::ARCH.try_into().map_err(|e| GuardError::Filter(seccompiler::Error::Backend(e)))?;
    let rules: BTreeMap<i64, Vec<SeccompRule>> = rules.into_iter().collect();
    let filter =
        SeccompFilter::new(rules, SeccompAction::Allow, action, arch).map_err(|e| GuardError::Filter(e.into()))?;
    filter.try_into().map_err(|e| GuardError::Filter(seccompiler::Error::Backend(e)))
}

type Rules = Vec<(i64, Vec<SeccompRule>)>;

/// Every call that would put privilege on the host, by its arguments.
fn refused_rules(owner: ShareOwner) -> Result<Rules, seccompiler::Error> {
    let rule = |conds: Vec<Cond>| SeccompRule::new(conds).map_err(seccompiler::Error::from);
    let bits = |arg: u8, mask: u64, value: u64| Cond::new(arg, Len::Dword, Op::MaskedEq(mask), value);
    let set_id = |arg: u8| -> Result<Vec<SeccompRule>, seccompiler::Error> {
        let mut rules = Vec::new();
        for bit in [libc::S_ISUID, libc::S_ISGID] {
            rules.push(rule(vec![bits(arg, bit.into(), bit.into())?])?);
        }
        Ok(rules)
    };
    // mknod: a device node of either kind, or any node with a set-id bit.
    let node = |arg: u8| -> Result<Vec<SeccompRule>, seccompiler::Error> {
        let mut rules = set_id(arg)?;
        for kind in [libc::S_IFCHR, libc::S_IFBLK] {
            rules.push(rule(vec![bits(arg, libc::S_IFMT.into(), kind.into())?])?);
        }
        Ok(rules)
    };
    // open/openat: the mode counts only when the call creates a file.
    let create = |flags: u8, mode: u8| -> Result<Vec<SeccompRule>, seccompiler::Error> {
        let mut rules = Vec::new();
        for creating in [libc::O_CREAT as u64, O_TMPFILE_BIT] {
            for bit in [libc::S_ISUID, libc::S_ISGID] {
                rules.push(rule(vec![bits(flags, creating, creating)?, bits(mode, bit.into(), bit.into())?])?);
            }
        }
        Ok(rules)
    };
    // chown: only to the owner, or -1 (unchanged).
    let give = |uid: u8, gid: u8| -> Result<Vec<SeccompRule>, seccompiler::Error> {
        let other = |arg: u8, id: u32| -> Result<SeccompRule, seccompiler::Error> {
            rule(vec![
                Cond::new(arg, Len::Dword, Op::Ne, id.into())?,
                Cond::new(arg, Len::Dword, Op::Ne, u32::MAX.into())?,
            ])
        };
        Ok(vec![other(uid, owner.uid)?, other(gid, owner.gid)?])
    };
    Ok(vec![
        (libc::SYS_mknod, node(1)?),
        (libc::SYS_mknodat, node(2)?),
        (libc::SYS_chmod, set_id(1)?),
        (libc::SYS_fchmod, set_id(1)?),
        (libc::SYS_fchmodat, set_id(2)?),
        (SYS_FCHMODAT2, set_id(2)?),
        (libc::SYS_open, create(1, 2)?),
        (libc::SYS_openat, create(2, 3)?),
        (libc::SYS_creat, set_id(1)?),
        (libc::SYS_setxattr, vec![]),
        (libc::SYS_lsetxattr, vec![]),
        (libc::SYS_fsetxattr, vec![]),
        (SYS_SETXATTRAT, vec![]),
        (libc::SYS_chown, give(1, 2)?),
        (libc::SYS_lchown, give(1, 2)?),
        (libc::SYS_fchown, give(1, 2)?),
        (libc::SYS_fchownat, give(2, 3)?),
    ])
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_git;
