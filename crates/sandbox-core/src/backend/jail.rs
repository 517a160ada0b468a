//! What confines a monitor when Moat runs as root: a user of the sandbox's
//! own, and a child set-up run between fork and exec (new namespaces, an
//! empty read-only root to chroot into, a bounding set with only what the
//! monitor still needs before it drops root itself).
//!
//! QEMU opens its disks, kernel and sockets as root and only then takes the
//! jail (`-chroot`, `-runas`), so the set-up here prepares the ground and
//! leaves the last step to QEMU; moat-vmm does both steps itself (`--jail`).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The uid and gid a confined monitor runs as: one per sandbox (from its run
/// folder), in a range no distribution hands out, so two sandboxes' monitors
/// never share a user and cannot signal or trace each other.
pub fn sandbox_id(run_dir: &Path) -> u32 {
    const BASE: u32 = 0x4d00_0000; // "M" << 24: far above login and system ids.
    let mut hash: u32 = 0x811c_9dc5; // FNV-1a
    for b in run_dir.as_os_str().as_encoded_bytes() {
        hash = (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    BASE + (hash & 0x00ff_ffff)
}

/// The empty folder a confined monitor takes as its root.
pub fn jail_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("jail")
}

/// The child's half of the jail, prepared before the fork.
#[derive(Debug)]
pub(crate) struct ChildJail {
    root: CString,
    keep: &'static [u32],
}

impl ChildJail {
    /// A jail whose root will be `root`, keeping only the capabilities `keep`
    /// in the bounding set (what the program needs to drop root itself).
    pub(crate) fn new(root: &Path, keep: &'static [u32]) -> io::Result<ChildJail> {
        let root = CString::new(root.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput)?;
        Ok(ChildJail { root, keep })
    }

    /// In the forked child: new mount, network, IPC and UTS namespaces (no
    /// network device, not even a usable loopback), every mount private, an
    /// empty read-only tmpfs on the root folder, and a bounding set of
    /// `keep` alone. Async-signal-safe: system calls on memory allocated
    /// before the fork.
    pub(crate) fn enter(&self) -> io::Result<()> {
        let check = |rc: libc::c_int| if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) };
        let flags = libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
        // SAFETY: unshare takes flags only and changes this (single-threaded) child's namespaces.
        check(unsafe { libc::unshare(flags) })?;
        let none = std::ptr::null::<libc::c_char>();
        // SAFETY: valid C strings or null where mount(2) allows it.
        check(unsafe { libc::mount(none, c"/".as_ptr(), none, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) })?;
        // SAFETY: a valid C string; an existing folder is fine.
        if unsafe { libc::mkdir(self.root.as_ptr(), 0o555) } != 0
            && io::Error::last_os_error().kind() != io::ErrorKind::AlreadyExists
        {
            return Err(io::Error::last_os_error());
        }
        let ro = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        // SAFETY: valid C strings; the mount exists only in this child's namespace.
        check(unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                self.root.as_ptr(),
                c"tmpfs".as_ptr(),
                ro,
                c"size=4k,mode=0555".as_ptr().cast(),
            )
        })?;
        for cap in 0..64u32 {
            if self.keep.contains(&cap) {
                continue;
            }
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) } != 0 {
                // Past the last capability the kernel knows.
                if io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                    break;
                }
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sandbox_gets_a_user_of_its_own_outside_ordinary_ids() {
        let a = sandbox_id(Path::new("/home/u/.moat/sandboxes/1a2b/run"));
        let b = sandbox_id(Path::new("/home/u/.moat/sandboxes/1a2c/run"));
        assert_ne!(a, b);
        assert_eq!(a, sandbox_id(Path::new("/home/u/.moat/sandboxes/1a2b/run")), "stable");
        for id in [a, b] {
            assert!((0x4d00_0000..0x4e00_0000).contains(&id), "{id:#x}");
        }
    }
}
