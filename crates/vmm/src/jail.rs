//! Confining the whole VMM process beyond seccomp: resource limits.
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
//!
//! Namespaces, chroot and dropping privileges are not here yet.

use std::io;

/// Limits to set; `None` leaves a limit as inherited.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rlimits {
    pub nofile: Option<u64>,
    pub fsize: Option<u64>,
    pub nproc: Option<u64>,
}

/// A limit could not be set.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("could not set {0}")]
    Rlimit(&'static str, #[source] io::Error),
    #[error("could not ignore SIGXFSZ")]
    Signal(#[source] io::Error),
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
