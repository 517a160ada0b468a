//! Background threads that never take the process's signals.
//!
//! A process-directed signal goes to any thread that doesn't block it. A library's
//! helper thread must not be that thread: an embedding program (like `moat`, which
//! forwards SIGINT and SIGWINCH to the guest from a `sigwait` thread) would lose them.

use std::thread::JoinHandle;

use nix::sys::signal::{SigSet, SigmaskHow};

/// Spawns `f` on a thread with every signal blocked.
pub fn spawn_without_signals<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    with_signals_blocked(|| std::thread::spawn(f))
}

/// Runs `f` (which starts threads, e.g. a tokio runtime) with every signal
/// blocked on this thread, then restores the mask: threads inherit their
/// creator's mask.
pub fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    let mut old = SigSet::empty();
    let blocked =
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), Some(&mut old)).is_ok();
    let out = f();
    if blocked {
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_blocks_everything_and_the_caller_keeps_its_mask() {
        let before = SigSet::thread_get_mask().unwrap();
        let inside = spawn_without_signals(|| SigSet::thread_get_mask().unwrap()).join().unwrap();
        assert!(inside.contains(nix::sys::signal::Signal::SIGINT));
        assert!(inside.contains(nix::sys::signal::Signal::SIGWINCH));
        assert_eq!(SigSet::thread_get_mask().unwrap(), before);
    }
}
