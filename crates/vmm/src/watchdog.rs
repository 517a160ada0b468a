//! Ends a run that overstays its deadline, even if the guest never exits to
//! the VMM: past the deadline a helper thread signals the vCPU thread every
//! few milliseconds, which makes `KVM_RUN` return `EINTR`; the run loop then
//! sees the deadline has passed.
//!
//! Repeating the kick closes the race where a signal lands just before the
//! vCPU thread re-enters `KVM_RUN` and is lost.

use std::io;
use std::marker::PhantomData;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Once;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const KICK_INTERVAL: Duration = Duration::from_millis(10);

/// The real-time signal used to kick vCPU threads.
fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: being delivered is what interrupts KVM_RUN.
}

fn install_kick_handler() -> io::Result<()> {
    static INSTALL: Once = Once::new();
    let mut result = Ok(());
    INSTALL.call_once(|| {
        result = vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()));
    });
    result
}

/// Armed for the current thread until dropped.
#[derive(Debug)]
pub(crate) struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// `!Send`: the watchdog must be dropped on the thread it kicks.
    _not_send: PhantomData<*const ()>,
}

impl Watchdog {
    /// Kicks the calling thread once `deadline` has passed.
    pub(crate) fn arm(deadline: Instant) -> io::Result<Self> {
        install_kick_handler()?;
        // SAFETY: pthread_self has no preconditions and cannot fail.
        let target = unsafe { libc::pthread_self() };
        let (done, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("moat-vcpu-watchdog".into()).spawn(move || {
            let mut wait = deadline.saturating_duration_since(Instant::now());
            loop {
                match rx.recv_timeout(wait) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
                if Instant::now() >= deadline {
                    // SAFETY: `target` is the thread that armed this
                    // watchdog. It is still alive: `Watchdog` is !Send, so
                    // its Drop (which stops and joins this loop before
                    // returning) runs on `target` before it can exit.
                    unsafe { libc::pthread_kill(target, kick_signal()) };
                    wait = KICK_INTERVAL;
                } else {
                    wait = deadline.saturating_duration_since(Instant::now());
                }
            }
        })?;
        Ok(Self { done: Some(done), thread: Some(thread), _not_send: PhantomData })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(thread) = self.thread.take() {
            // The loop only sleeps and signals; a panic there is not ours to
            // re-raise while tearing down.
            let _ = thread.join();
        }
    }
}
