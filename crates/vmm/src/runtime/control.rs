//! The run's shared state: what the controller wants (run, pause, stop),
//! which vCPU threads are alive and parked, their CPU clocks, and how the
//! run ended. vCPU threads consult it before every guest entry; the VMM
//! thread changes it and kicks them.

use std::io;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::api::VmState;
use crate::kick;
use crate::vcpu::{RunError, RunOutcome};

/// How long `pause` waits for every vCPU to park.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A control request cannot be honoured in the VM's current state.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("the VM has stopped")]
    Stopped,
    #[error("the VM is shutting down")]
    ShuttingDown,
    #[error("not every vCPU parked within {0:?}")]
    PauseTimedOut(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Run,
    Pause,
    Stop,
}

/// One vCPU thread's CPU clock while it lives, its total once it exited.
#[derive(Debug, Clone, Copy)]
enum CpuClock {
    NotStarted,
    Live(libc::clockid_t),
    Exited(Duration),
}

#[derive(Debug)]
struct Shared {
    wanted: Wanted,
    shutting_down: bool,
    /// vCPU threads that have not exited yet (started or not).
    alive: usize,
    /// vCPU threads waiting in [`Control::gate`].
    parked: usize,
    /// The pthread of each live vCPU thread: who to kick.
    threads: Vec<Option<libc::pthread_t>>,
    clocks: Vec<CpuClock>,
    end: Option<Result<RunOutcome, RunError>>,
}

/// Shared by the vCPU threads and the VMM thread of one run.
#[derive(Debug)]
pub(crate) struct Control {
    shared: Mutex<Shared>,
    /// Parked vCPU threads wait here for `wanted` to change.
    wake_vcpus: Condvar,
    /// A pausing controller waits here for vCPU threads to park or exit.
    vcpus_settled: Condvar,
    /// Readable once the run has ended: wakes the VMM thread's poll.
    stopped: EventFd,
}

impl Control {
    /// Control of `vcpus` vCPUs, which may enter the guest at once or, if
    /// `held`, wait (parked before their first entry) for [`Control::resume`].
    pub(crate) fn new(vcpus: usize, held: bool) -> io::Result<Self> {
        let shared = Shared {
            wanted: if held { Wanted::Pause } else { Wanted::Run },
            shutting_down: false,
            alive: vcpus,
            parked: 0,
            threads: vec![None; vcpus],
            clocks: vec![CpuClock::NotStarted; vcpus],
            end: None,
        };
        Ok(Self {
            shared: Mutex::new(shared),
            wake_vcpus: Condvar::new(),
            vcpus_settled: Condvar::new(),
            stopped: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // --- The vCPU side ---

    /// Registers the calling thread as vCPU `index`: it can be kicked and
    /// its CPU time is counted from now.
    pub(crate) fn vcpu_started(&self, index: usize) {
        // SAFETY: pthread_self has no preconditions and cannot fail.
        let thread = unsafe { libc::pthread_self() };
        let mut clock: libc::clockid_t = 0;
        // SAFETY: `thread` is the calling thread, alive for the call, and
        // `clock` is a valid place for the id.
        let rc = unsafe { libc::pthread_getcpuclockid(thread, &mut clock) };
        let mut shared = self.lock();
        shared.threads[index] = Some(thread);
        if rc == 0 {
            shared.clocks[index] = CpuClock::Live(clock);
        }
    }

    /// Waits while the VM is paused; `false` once the vCPU must stop.
    pub(crate) fn gate(&self) -> bool {
        let mut shared = self.lock();
        if shared.wanted == Wanted::Pause {
            shared.parked += 1;
            self.vcpus_settled.notify_all();
            shared = self
                .wake_vcpus
                .wait_while(shared, |s| s.wanted == Wanted::Pause)
                .unwrap_or_else(PoisonError::into_inner);
            shared.parked -= 1;
        }
        shared.wanted == Wanted::Run
    }

    /// vCPU `index` is leaving its run loop, with why (`None`: it was told
    /// to stop). The first end recorded is the run's; it stops the others.
    pub(crate) fn vcpu_exited(&self, index: usize, end: Option<Result<RunOutcome, RunError>>) {
        let mut shared = self.lock();
        shared.clocks[index] = CpuClock::Exited(thread_cpu_time());
        // Unregistered under the lock kicks are sent with: nobody signals
        // this thread once it may have exited.
        shared.threads[index] = None;
        shared.alive -= 1;
        if let Some(end) = end {
            self.finish_locked(&mut shared, end);
        }
        self.vcpus_settled.notify_all();
    }

    // --- The controller side ---

    /// Ends the run with `end` unless it already ended; stops every vCPU.
    pub(crate) fn finish(&self, end: Result<RunOutcome, RunError>) {
        let mut shared = self.lock();
        self.finish_locked(&mut shared, end);
    }

    fn finish_locked(&self, shared: &mut Shared, end: Result<RunOutcome, RunError>) {
        if shared.end.is_none() {
            shared.end = Some(end);
        }
        shared.wanted = Wanted::Stop;
        kick_all(shared);
        self.wake_vcpus.notify_all();
        self.vcpus_settled.notify_all();
        // Only fails if the counter would overflow: it is already readable.
        let _ = self.stopped.write(1);
    }

    /// Parks every vCPU outside the guest; returns once all are parked.
    pub(crate) fn pause(&self) -> Result<VmState, ControlError> {
        let mut shared = self.lock();
        if shared.wanted == Wanted::Stop {
            return Err(ControlError::Stopped);
        }
        if shared.shutting_down {
            return Err(ControlError::ShuttingDown);
        }
        shared.wanted = Wanted::Pause;
        kick_all(&shared);
        let (shared, wait) = self
            .vcpus_settled
            .wait_timeout_while(shared, PAUSE_TIMEOUT, |s| s.wanted == Wanted::Pause && s.parked < s.alive)
            .unwrap_or_else(PoisonError::into_inner);
        if wait.timed_out() {
            return Err(ControlError::PauseTimedOut(PAUSE_TIMEOUT));
        }
        Ok(state(&shared))
    }

    /// Lets parked vCPUs enter the guest again.
    pub(crate) fn resume(&self) -> Result<VmState, ControlError> {
        let mut shared = self.lock();
        if shared.wanted == Wanted::Stop {
            return Err(ControlError::Stopped);
        }
        shared.wanted = Wanted::Run;
        self.wake_vcpus.notify_all();
        Ok(state(&shared))
    }

    /// Marks the VM as shutting down and lets it run (a paused guest could
    /// not power off). The caller presses the power button.
    pub(crate) fn begin_shutdown(&self) -> Result<VmState, ControlError> {
        let mut shared = self.lock();
        if shared.wanted == Wanted::Stop {
            return Err(ControlError::Stopped);
        }
        shared.shutting_down = true;
        shared.wanted = Wanted::Run;
        self.wake_vcpus.notify_all();
        Ok(state(&shared))
    }

    pub(crate) fn state(&self) -> VmState {
        state(&self.lock())
    }

    /// CPU time each vCPU thread has used so far.
    pub(crate) fn vcpu_times(&self) -> Vec<Duration> {
        let shared = self.lock();
        shared
            .clocks
            .iter()
            .map(|clock| match *clock {
                CpuClock::NotStarted => Duration::ZERO,
                CpuClock::Live(id) => clock_time(id),
                CpuClock::Exited(total) => total,
            })
            .collect()
    }

    /// Readable once the run has ended.
    pub(crate) fn stopped_event(&self) -> &EventFd {
        &self.stopped
    }

    /// How the run ended, once it has; `None` before, or if already taken.
    pub(crate) fn take_end(&self) -> Option<Result<RunOutcome, RunError>> {
        self.lock().end.take()
    }

    pub(crate) fn has_ended(&self) -> bool {
        self.lock().wanted == Wanted::Stop
    }
}

fn state(shared: &Shared) -> VmState {
    match shared.wanted {
        Wanted::Stop => VmState::Stopped,
        Wanted::Pause => VmState::Paused,
        Wanted::Run if shared.shutting_down => VmState::ShuttingDown,
        Wanted::Run => VmState::Running,
    }
}

fn kick_all(shared: &Shared) {
    for thread in shared.threads.iter().flatten() {
        // SAFETY: a vCPU thread is listed only between `vcpu_started` and
        // `vcpu_exited`, both run by that thread itself, and the list is
        // only read under the lock `vcpu_exited` takes to unlist it: the
        // thread is alive.
        unsafe { kick::kick(*thread) };
    }
}

fn thread_cpu_time() -> Duration {
    clock_time(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn clock_time(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; an invalid clock id only
    // makes the call fail, which reads as zero.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_waits_for_every_vcpu_and_resume_releases_them() {
        use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
        kick::install_handler().unwrap();
        let control = Control::new(2, false).unwrap();
        let passes = [AtomicU64::new(0), AtomicU64::new(0)];
        let total = || passes.iter().map(|p| p.load(SeqCst)).collect::<Vec<_>>();
        let wait_all_pass = |since: &[u64]| {
            while total().iter().zip(since).any(|(now, then)| now <= then) {
                std::thread::yield_now();
            }
        };
        std::thread::scope(|s| {
            for (i, passes) in passes.iter().enumerate() {
                let control = &control;
                s.spawn(move || {
                    control.vcpu_started(i);
                    while control.gate() {
                        passes.fetch_add(1, SeqCst);
                        std::thread::yield_now();
                    }
                    control.vcpu_exited(i, None);
                });
            }
            wait_all_pass(&[0, 0]);
            assert_eq!(control.pause(), Ok(VmState::Paused));
            assert_eq!(control.lock().parked, 2, "both threads wait in the gate");
            let paused = total();
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(total(), paused, "no pass while paused");
            assert_eq!(control.resume(), Ok(VmState::Running));
            wait_all_pass(&paused);
            assert_eq!(control.begin_shutdown(), Ok(VmState::ShuttingDown));
            assert_eq!(control.pause(), Err(ControlError::ShuttingDown));
            control.finish(Ok(RunOutcome::Stopped));
        });
        assert_eq!(control.state(), VmState::Stopped);
        assert_eq!(control.pause(), Err(ControlError::Stopped));
        assert_eq!(control.resume(), Err(ControlError::Stopped));
        assert!(matches!(control.take_end(), Some(Ok(RunOutcome::Stopped))));
        assert_eq!(control.stopped_event().read().unwrap(), 1);
        assert!(control.vcpu_times().iter().all(|t| !t.is_zero()), "totals kept after exit");
    }

    #[test]
    fn the_first_end_is_the_runs() {
        let control = Control::new(1, false).unwrap();
        control.vcpu_exited(0, Some(Ok(RunOutcome::Exited(3))));
        control.finish(Ok(RunOutcome::TimedOut));
        assert!(matches!(control.take_end(), Some(Ok(RunOutcome::Exited(3)))));
        assert!(control.has_ended());
    }
}
