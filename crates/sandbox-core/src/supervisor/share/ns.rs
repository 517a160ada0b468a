//! virtiofsd's own mount namespace, with the [`Shield`]'s bind mounts in it.
//!
//! Entered in the child between fork and exec, so everything here is plain
//! system calls on memory prepared before the fork. A Moat run as root only
//! needs a new mount namespace; a normal user first gets a user namespace in
//! which they keep their own uid and gid (the only mapping an unprivileged
//! process may write), which is enough to mount there. The mounts then are
//! "locked": nothing inside can undo them.

use std::ffi::CString;

use super::git::Bind;
use crate::owner::ShareOwner;

/// What the child does before exec.
#[derive(Debug)]
pub(crate) struct Namespace {
    binds: Vec<Bind>,
    /// For a normal user: `/proc/self/uid_map` and `gid_map` lines.
    user_maps: Option<(CString, CString)>,
}

impl Namespace {
    /// The namespace for a child that runs as `runner`.
    pub(crate) fn new(binds: Vec<Bind>, runner: ShareOwner) -> Namespace {
        let ShareOwner { uid, gid } = runner;
        let user_maps = (uid != 0).then(|| {
            let line = |id: u32| CString::new(format!("{id} {id} 1\n")).expect("no NUL in digits");
            (line(uid), line(gid))
        });
        Namespace { binds, user_maps }
    }

    /// Enters a new mount namespace and makes the binds. Async-signal-safe.
    pub(crate) fn enter(&self) -> std::io::Result<()> {
        let check = |rc: libc::c_int| if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
        match &self.user_maps {
            Some((uid_map, gid_map)) => {
                // SAFETY: unshare takes flags only.
                check(unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) })?;
                write_file(c"/proc/self/setgroups", c"deny")?;
                write_file(c"/proc/self/uid_map", uid_map)?;
                write_file(c"/proc/self/gid_map", gid_map)?;
            }
            // SAFETY: unshare takes flags only.
            None => check(unsafe { libc::unshare(libc::CLONE_NEWNS) })?,
        }
        let none = std::ptr::null::<libc::c_char>();
        // Nothing done here may reach the host's own mount table.
        // SAFETY: valid C strings or null where mount(2) allows it.
        check(unsafe { libc::mount(none, c"/".as_ptr(), none, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) })?;
        for b in &self.binds {
            let p = b.path.as_ptr();
            // SAFETY: as above; `p` is a path this struct owns.
            check(unsafe { libc::mount(p, p, none, libc::MS_BIND, std::ptr::null()) })?;
            if b.read_only {
                let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | b.keep;
                // SAFETY: as above.
                check(unsafe { libc::mount(none, p, none, flags, std::ptr::null()) })?;
            }
        }
        Ok(())
    }
}

/// Writes `text` to the file at `path`. Async-signal-safe.
fn write_file(path: &std::ffi::CStr, text: &std::ffi::CStr) -> std::io::Result<()> {
    // SAFETY: a valid C string; the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let bytes = text.to_bytes();
    // SAFETY: writes `bytes`, which outlive the call, to our own descriptor.
    let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    let err = std::io::Error::last_os_error();
    // SAFETY: closing our own descriptor.
    unsafe { libc::close(fd) };
    if n == bytes.len() as isize {
        Ok(())
    } else {
        Err(err)
    }
}
