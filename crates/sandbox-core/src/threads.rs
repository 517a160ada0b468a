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
    // A new thread inherits the creator's mask: block all around the spawn, then restore.
    let mut old = SigSet::empty();
    let blocked =
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), Some(&mut old)).is_ok();
    let handle = std::thread::spawn(f);
    if blocked {
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
    handle
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
