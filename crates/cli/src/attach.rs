//! Attaching the user's terminal to a process in the guest.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use anyhow::{Context, Result};
use moat_sandbox_core::agent::{AgentConn, ExecInput, ExecRequest, ExitStatus, WinSize};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::termios::{self, SetArg, Termios};

/// Runs `req` in the guest behind `vsock`, wiring this process's stdio to it.
/// `forward_stdin` sends our stdin (and its end) to the process.
pub fn attach(vsock: &Path, mut req: ExecRequest, forward_stdin: bool) -> Result<ExitStatus> {
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
    if req.stdin {
        let stdin_input = input.clone();
        std::thread::spawn(move || pump_stdin(stdin_input, tty));
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
    )?;
    Ok(status)
}

fn pump_stdin(input: ExecInput, tty: bool) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if input.stdin(&buf[..n]).is_err() {
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
