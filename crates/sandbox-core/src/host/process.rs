//! The host's own processes: where they stand, which programs they find, how
//! many files they may hold.
//!
//! A host process never works in the workspace: the daemon and every supervisor
//! change to `/` on entry and every back-end child is started in `/`, so no
//! relative path, relative `PATH` entry or stray configuration file the guest
//! wrote can be picked up. Programs are found only through absolute `PATH`
//! entries: an empty or relative entry (which would mean the working folder) is
//! ignored, and this process's own `PATH` is rewritten without them on entry so
//! that bare-name spawns in any crate (`git`, `sh`) follow the same rule.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// `path` (a `PATH` value) without its empty and relative entries.
pub fn sanitized_path(path: &OsStr) -> OsString {
    let kept: Vec<PathBuf> = std::env::split_paths(path).filter(|p| p.is_absolute()).collect();
    std::env::join_paths(kept).unwrap_or_default()
}

pub use moat_images::tools::resolve_program;

/// What a long-lived host process (the daemon, a supervisor) does first: work in
/// `/` and drop relative `PATH` entries. Call it while the process has one thread
/// (it changes the environment).
pub fn enter_host_process() -> std::io::Result<()> {
    std::env::set_current_dir("/")?;
    drop_relative_path_entries();
    Ok(())
}

/// Rewrites this process's `PATH` without empty or relative entries, so every
/// bare-name spawn (a `Command` for `git` by name) and every child resolves programs only
/// through absolute folders. Call it while the process has one thread.
pub fn drop_relative_path_entries() {
    if let Some(path) = std::env::var_os("PATH") {
        let clean = sanitized_path(&path);
        if clean != path {
            std::env::set_var("PATH", clean);
        }
    }
}

/// Connections one VM's vsock device carries at most (`moat_vsock`'s cap).
pub const VSOCK_MAX_CONNECTIONS: u64 = 1024;
/// Descriptors a supervisor needs whatever the guest does: logs, databases,
/// listeners, child pipes, the async runtime's own.
const SUPERVISOR_BASE_FILES: u64 = 256;

/// The open-file limit a supervisor needs: every guest connection through the
/// egress service holds the guest's socket and the upstream one.
pub const fn supervisor_nofile_need() -> u64 {
    2 * VSOCK_MAX_CONNECTIONS + SUPERVISOR_BASE_FILES
}

/// What [`raise_nofile`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NofileOutcome {
    /// The soft limit already sufficed.
    Enough { soft: u64 },
    /// The soft limit was raised to `soft`.
    Raised { soft: u64 },
    /// The hard limit is below the need; the soft limit is now the hard one.
    Short { soft: u64, need: u64 },
}

/// Raises this process's soft `RLIMIT_NOFILE` towards `need`, up to the hard limit.
pub fn raise_nofile(need: u64) -> std::io::Result<NofileOutcome> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft >= need {
        return Ok(NofileOutcome::Enough { soft });
    }
    let target = need.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, target, hard).map_err(std::io::Error::from)?;
    Ok(if target < need { NofileOutcome::Short { soft: target, need } } else { NofileOutcome::Raised { soft: target } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_empty_path_entries_are_dropped() {
        assert_eq!(sanitized_path(OsStr::new(".:relative::/abs:bin:/usr/bin:")), OsString::from("/abs:/usr/bin"));
        assert_eq!(sanitized_path(OsStr::new("")), OsString::new());
    }

    #[test]
    fn the_supervisor_file_limit_covers_every_connection_twice() {
        assert!(supervisor_nofile_need() >= 2 * VSOCK_MAX_CONNECTIONS);
        // This test process: raising to what it has already changes nothing.
        let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(raise_nofile(soft).unwrap(), NofileOutcome::Enough { soft });
    }
}
