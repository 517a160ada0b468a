//! Attaching the user's terminal to a process in the guest.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use anyhow::{Context, Result};
use moat_sandbox_core::agent::{AgentConn, ExecInput, ExecRequest, ExitStatus, WinSize};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::termios::{self, SetArg, Termios};

/// How an attached process ended for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// It exited.
    Exited(ExitStatus),
    /// The user pressed the detach keys; it runs on.
    Detached,
}

/// Ctrl-P then Ctrl-Q leaves a session (as in Docker).
const DETACH_KEYS: [u8; 2] = [0x10, 0x11];

/// Runs `req` in the guest behind `vsock`, wiring this process's stdio to it.
/// `forward_stdin` sends our stdin (and its end) to the process.
pub fn attach(vsock: &Path, req: ExecRequest, forward_stdin: bool) -> Result<ExitStatus> {
    match attach_detachable(vsock, req, forward_stdin, false)? {
        Attached::Exited(status) => Ok(status),
        Attached::Detached => unreachable!("no detach keys without `detachable`"),
    }
}

/// [`attach`]; with `detachable` and a terminal, [`DETACH_KEYS`] leave the
/// process running and return [`Attached::Detached`].
pub fn attach_detachable(
    vsock: &Path,
    mut req: ExecRequest,
    forward_stdin: bool,
    detachable: bool,
) -> Result<Attached> {
    let tty = req.tty.is_some();
    if tty {
        req.tty = Some(terminal_size().unwrap_or(WinSize { rows: 24, cols: 80 }));
    }
    req.stdin = forward_stdin || tty;

    // Block the signals we forward before any thread exists, so only our waiter sees them.
    let mut forwarded = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGWINCH] {
        forwarded.add(s);
    }
    forwarded.thread_block().context("blocking signals")?;

    let session = AgentConn::connect(vsock)?.exec(&req)?;
    let input = session.input();
    let _raw = if tty { RawMode::enable() } else { None };

    let sig_input = input.clone();
    std::thread::spawn(move || forward_signals(forwarded, sig_input, tty));
    let detached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if req.stdin {
        let stdin_input = input.clone();
        let detach = (detachable && tty).then(|| std::sync::Arc::clone(&detached));
        std::thread::spawn(move || pump_stdin(stdin_input, tty, detach));
    }

    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr();
    let status = session.wait(
        |b| {
            let _ = out.write_all(b).and_then(|()| out.flush());
        },
        |b| {
            let _ = err.write_all(b);
        },
    );
    if detached.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(Attached::Detached);
    }
    Ok(Attached::Exited(status?))
}

fn pump_stdin(input: ExecInput, tty: bool, detach: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; 32 * 1024];
    let mut keys = DetachKeys::default();
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let (send, leave) = match &detach {
                    Some(_) => keys.feed(&buf[..n]),
                    None => (buf[..n].to_vec(), false),
                };
                if !send.is_empty() && input.stdin(&send).is_err() {
                    return;
                }
                if leave {
                    if let Some(flag) = &detach {
                        flag.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    input.hang_up();
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if !tty {
        let _ = input.close_stdin();
    }
}

fn forward_signals(set: SigSet, input: ExecInput, tty: bool) {
    while let Ok(sig) = set.wait() {
        let r = match sig {
            Signal::SIGWINCH if tty => match terminal_size() {
                Some(size) => input.resize(size),
                None => Ok(()),
            },
            Signal::SIGWINCH => Ok(()),
            // With a terminal, Ctrl-C arrives as a byte and the guest's tty makes the signal.
            other => input.signal(other as i32),
        };
        if r.is_err() {
            return;
        }
    }
}

/// Finds [`DETACH_KEYS`] in the keyboard input. A Ctrl-P is held back until
/// the next byte shows whether it starts the sequence; otherwise it is sent.
#[derive(Debug, Default)]
struct DetachKeys {
    held: bool,
}

impl DetachKeys {
    /// The bytes to send, and whether the user asked to detach.
    fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut send = Vec::with_capacity(input.len() + 1);
        for &b in input {
            if self.held {
                self.held = false;
                if b == DETACH_KEYS[1] {
                    return (send, true);
                }
                send.push(DETACH_KEYS[0]);
            }
            if b == DETACH_KEYS[0] {
                self.held = true;
            } else {
                send.push(b);
            }
        }
        (send, false)
    }
}

/// The size of the terminal on stdout (or stdin), if there is one.
pub fn terminal_size() -> Option<WinSize> {
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we pass, which lives on our stack.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return Some(WinSize { rows: ws.ws_row, cols: ws.ws_col });
        }
    }
    None
}

/// Whether both stdin and stdout are terminals.
pub fn is_interactive() -> bool {
    // SAFETY: isatty only inspects the descriptor number.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 && libc::isatty(libc::STDOUT_FILENO) == 1 }
}

/// The local terminal in raw mode; restored when dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enable() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &self.saved);
        let _ = stdin.as_raw_fd();
    }
}

/// Turns `K=V` / `K` arguments into pairs (`K` takes the host's value, skipped if unset).
pub fn parse_env(args: &[String]) -> Result<Vec<(String, String)>> {
    let mut env = Vec::new();
    for a in args {
        match a.split_once('=') {
            Some(("", _)) => anyhow::bail!("invalid -e {a:?}: the name is empty"),
            Some((k, v)) => env.push((k.to_string(), v.to_string())),
            None => {
                if let Ok(v) = std::env::var(a) {
                    env.push((a.clone(), v));
                }
            }
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_p_ctrl_q_detaches_and_everything_else_passes_through() {
        let mut k = DetachKeys::default();
        assert_eq!(k.feed(b"ls\r"), (b"ls\r".to_vec(), false));
        assert_eq!(k.feed(b"a\x10\x11b"), (b"a".to_vec(), true));
        let mut k = DetachKeys::default();
        // Ctrl-P alone (shell history) still arrives, one read later if need be.
        assert_eq!(k.feed(b"\x10"), (vec![], false));
        assert_eq!(k.feed(b"x"), (b"\x10x".to_vec(), false));
        assert_eq!(k.feed(b"\x10\x10"), (b"\x10".to_vec(), false));
        assert_eq!(k.feed(b"\x11"), (vec![], true));
        let mut k = DetachKeys::default();
        assert_eq!(k.feed(b"\x11\x10"), (b"\x11".to_vec(), false));
    }
}
