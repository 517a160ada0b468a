//! A VM's run status, as its supervisor publishes it and everyone else reads it.
//!
//! The supervisor holds an exclusive `flock` on `supervisor.lock` for its whole
//! life and rewrites `status.json` atomically at each phase. Readers trust the
//! file only while the lock is held: a supervisor killed with SIGKILL releases
//! the lock with its last breath, so a dead VM can never look alive.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where a VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Spawning devices, booting, waiting for the guest agent.
    Starting,
    /// The guest agent answers.
    Running,
    /// Shutting down.
    Stopping,
    /// Not running (never started, stopped, or its supervisor died).
    Stopped,
    /// Start failed; see `error`.
    Failed,
}

/// The published status of one VM run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Phase.
    pub phase: Phase,
    /// The supervisor process.
    pub supervisor_pid: u32,
    /// The monitor process, once spawned.
    #[serde(default)]
    pub vmm_pid: Option<u32>,
    /// Backend and acceleration (`qemu/tcg` on the wire), once the supervisor
    /// has read its configuration.
    #[serde(default, deserialize_with = "running_or_none")]
    pub backend: Option<crate::backend::Running>,
    /// Milliseconds from supervisor start to the guest agent answering.
    #[serde(default)]
    pub boot_ms: Option<u64>,
    /// What went wrong, for `Failed` (and for an unexpected stop).
    #[serde(default)]
    pub error: Option<String>,
    /// Where the boot time went.
    #[serde(default)]
    pub boot: Option<BootTimes>,
}

/// The cold-start path, in milliseconds since the supervisor started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootTimes {
    /// virtiofsd and the vsock backend listen.
    pub devices_ms: u64,
    /// The monitor process is spawned.
    pub vmm_spawned_ms: u64,
    /// The guest agent printed its ready line on the console.
    pub ready_line_ms: u64,
    /// The guest agent answered a ping over vsock.
    pub agent_ms: u64,
    /// Guest uptime when it answered (kernel boot + init), as the guest measures it.
    pub guest_uptime_ms: u64,
}

/// The files of one sandbox's run folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    dir: PathBuf,
}

impl RunDir {
    /// The run folder `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> RunDir {
        RunDir { dir: dir.into() }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The VM configuration the supervisor reads.
    pub fn config(&self) -> PathBuf {
        self.dir.join("vm.json")
    }

    /// Published status.
    pub fn status_file(&self) -> PathBuf {
        self.dir.join("status.json")
    }

    /// Held by a live supervisor.
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("supervisor.lock")
    }

    /// Hybrid vsock socket: connect and send `CONNECT <port>` to reach the guest.
    pub fn vsock_socket(&self) -> PathBuf {
        self.dir.join("vsock.sock")
    }

    /// Guest serial console log (bounded).
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// The supervisor's own log (also collects the device back-ends' stderr).
    pub fn supervisor_log(&self) -> PathBuf {
        self.dir.join("supervisor.log")
    }

    /// Whether a supervisor holds the lock right now.
    pub fn supervisor_alive(&self) -> bool {
        let Ok(f) = File::open(self.lock_file()) else { return false };
        // SAFETY: `f` is an open file owned by this function for the whole call.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
        // Getting a shared lock means nobody holds the exclusive one; dropping `f` releases it.
        r != 0
    }

    /// The status as published, corrected by liveness: without a live
    /// supervisor the VM is `Stopped`, whatever the file last said.
    pub fn read_status(&self) -> Status {
        let stored: Option<Status> =
            std::fs::read(self.status_file()).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let alive = self.supervisor_alive();
        match stored {
            Some(s) if alive => s,
            Some(mut s) => {
                if matches!(s.phase, Phase::Starting | Phase::Running | Phase::Stopping) {
                    s.error.get_or_insert_with(|| "the VM's supervisor exited unexpectedly".into());
                    s.phase = Phase::Stopped;
                } else if s.phase != Phase::Failed {
                    s.phase = Phase::Stopped;
                }
                s
            }
            None => Status {
                phase: if alive { Phase::Starting } else { Phase::Stopped },
                supervisor_pid: 0,
                vmm_pid: None,
                backend: None,
                boot_ms: None,
                error: None,
                boot: None,
            },
        }
    }

    /// Replaces the status file atomically (write, fsync, rename).
    pub fn write_status(&self, status: &Status) -> std::io::Result<()> {
        write_atomic(&self.status_file(), &serde_json::to_vec_pretty(status).expect("serializing status"))
    }
}

/// Writes `bytes` to `path` so readers see the old or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A backend as written by any supervisor: older ones wrote `""` before they knew.
fn running_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<crate::backend::Running>, D::Error> {
    let text: Option<String> = serde::Deserialize::deserialize(d)?;
    Ok(text.filter(|t| !t.is_empty()).and_then(|t| crate::backend::Running::try_from(t).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(phase: Phase) -> Status {
        Status {
            phase,
            supervisor_pid: 1,
            vmm_pid: None,
            backend: Some(crate::backend::Running {
                kind: crate::backend::BackendKind::Qemu,
                accel: crate::backend::Accel::Tcg,
            }),
            boot_ms: None,
            error: None,
            boot: None,
        }
    }

    #[test]
    fn a_running_status_without_a_live_supervisor_reads_as_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        run.write_status(&status(Phase::Running)).unwrap();
        let s = run.read_status();
        assert_eq!(s.phase, Phase::Stopped);
        assert!(s.error.unwrap().contains("unexpectedly"));
    }

    #[test]
    fn the_lock_holder_is_seen_alive_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        run.write_status(&status(Phase::Running)).unwrap();
        let f = File::create(run.lock_file()).unwrap();
        // SAFETY: `f` is open for the duration of the call.
        assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
        assert!(run.supervisor_alive());
        assert_eq!(run.read_status().phase, Phase::Running);
        drop(f);
        assert!(!run.supervisor_alive());
        assert_eq!(run.read_status().phase, Phase::Stopped);
    }

    #[test]
    fn failed_stays_failed_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let mut s = status(Phase::Failed);
        s.error = Some("kernel panic".into());
        run.write_status(&s).unwrap();
        assert_eq!(run.read_status(), s);
    }
}
