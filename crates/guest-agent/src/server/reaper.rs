//! The one thread that calls `waitpid(-1)`.
//!
//! As PID 1 the agent inherits every orphan in the VM and must reap them, but the
//! exit status of a process it started belongs to the session that started it. So a
//! single reaper thread waits for any child and dispatches each status to the
//! [`ExitWatch`] registered for that pid; statuses of unregistered pids (orphans)
//! are discarded.
//!
//! The race where a child exits before it is registered is closed by forking *while
//! holding the table lock* ([`Reaper::spawn`]): the reaper cannot dispatch the
//! status until the pid is in the table.
//!
//! Because it reaps every child of the process, nothing else in a process that uses
//! the reaper may wait for its own children (e.g. `std::process::Command`).

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;

use crate::log::log;
use moat_proto::exec::ExitStatus;

/// Process-wide reaper; see the module docs.
#[derive(Debug)]
pub struct Reaper {
    table: Mutex<Table>,
    spawned: Condvar,
}

#[derive(Debug, Default)]
struct Table {
    waiting: HashMap<i32, Registration>,
    /// Bumped on every spawn, so the reaper knows to retry after `ECHILD`.
    generation: u64,
}

#[derive(Debug)]
struct Registration {
    status: Arc<Mutex<Option<ExitStatus>>>,
    /// Dropped once the status is in: the watch's read end then polls as hung up.
    _notify: OwnedFd,
}

/// The exit of one registered child: pollable, then readable.
#[derive(Debug)]
pub struct ExitWatch {
    pid: i32,
    status: Arc<Mutex<Option<ExitStatus>>>,
    ready: OwnedFd,
}

impl ExitWatch {
    /// Polls readable (hang-up) once the child has been reaped.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ready.as_fd()
    }

    /// The exit status, once reaped.
    pub fn status(&self) -> Option<ExitStatus> {
        *lock(&self.status)
    }

    /// Waits up to `timeout` for the exit status.
    pub fn wait(&self, timeout: Duration) -> Option<ExitStatus> {
        let mut fds = [nix::poll::PollFd::new(self.fd(), nix::poll::PollFlags::POLLIN)];
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX));
        self.status()
    }
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        // A child that has not exited yet becomes an ordinary orphan to the reaper.
        lock(&Reaper::global().table).waiting.remove(&self.pid);
    }
}

impl Reaper {
    /// The process's reaper, starting its thread on first use.
    pub fn global() -> &'static Reaper {
        static REAPER: OnceLock<Reaper> = OnceLock::new();
        static STARTED: OnceLock<()> = OnceLock::new();
        let reaper = REAPER.get_or_init(|| Reaper { table: Mutex::default(), spawned: Condvar::new() });
        STARTED.get_or_init(|| {
            let spawned = std::thread::Builder::new().name("reaper".into()).spawn(move || reaper.run());
            if let Err(e) = spawned {
                log!("cannot start the reaper thread: {e}");
            }
        });
        reaper
    }

    /// Runs `fork` (which must return the new child's pid) with the table locked and
    /// registers the child before the reaper can see its exit.
    pub fn spawn<E>(&self, fork: impl FnOnce() -> Result<i32, E>) -> Result<(i32, ExitWatch), E>
    where
        E: From<Errno>,
    {
        let (ready, notify) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let status = Arc::new(Mutex::new(None));
        let mut table = lock(&self.table);
        let pid = fork()?;
        table.waiting.insert(pid, Registration { status: status.clone(), _notify: notify });
        table.generation += 1;
        drop(table);
        self.spawned.notify_all();
        Ok((pid, ExitWatch { pid, status, ready }))
    }

    fn run(&self) {
        loop {
            let generation = lock(&self.table).generation;
            let mut raw = 0;
            // SAFETY: `raw` is a valid out-pointer for the duration of the call.
            let pid = unsafe { libc::waitpid(-1, &mut raw, 0) };
            if pid > 0 {
                self.dispatch(pid, raw);
                continue;
            }
            match Errno::last() {
                Errno::EINTR => {}
                Errno::ECHILD => {
                    // No children: sleep until a spawn (orphans can only appear after one;
                    // the timeout is a belt for PID 1).
                    let table = lock(&self.table);
                    let _ =
                        self.spawned.wait_timeout_while(table, Duration::from_secs(1), |t| t.generation == generation);
                }
                e => {
                    log!("waitpid failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn dispatch(&self, pid: i32, raw: i32) {
        let status = if libc::WIFEXITED(raw) {
            ExitStatus::Code(libc::WEXITSTATUS(raw))
        } else if libc::WIFSIGNALED(raw) {
            ExitStatus::Signal(libc::WTERMSIG(raw))
        } else {
            return; // stopped/continued: not an exit
        };
        if let Some(reg) = lock(&self.table).waiting.remove(&pid) {
            *lock(&reg.status) = Some(status);
            // Dropping `reg` closes the notify pipe: the watch wakes up.
        }
    }
}

/// Locks a mutex, ignoring poisoning (the data is a plain table; a panicking
/// holder cannot leave it half-updated in a way that matters).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
