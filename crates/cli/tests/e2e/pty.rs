//! Running `moat` on a real pseudo-terminal, as a user at a terminal would.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `moat` process whose controlling terminal is a fresh pty.
pub struct OnTerminal {
    pub child: Child,
    pub master: std::fs::File,
    pub seen: Vec<u8>,
}

/// Starts `cmd` in a session of its own with a `rows`×`cols` pty as its
/// controlling terminal and stdio.
pub fn spawn(mut cmd: Command, rows: u16, cols: u16) -> OnTerminal {
    let pty = nix::pty::openpty(None, None).unwrap();
    set_size(&pty.master, rows, cols);
    let slave: OwnedFd = pty.slave;
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    // SAFETY: runs in the child before exec; setsid and ioctl are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            // A session of its own with the pty as controlling terminal, like a real login.
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    OnTerminal { child, master: std::fs::File::from(pty.master), seen: Vec::new() }
}

impl OnTerminal {
    /// Reads the terminal until `needle` shows up (or panics after 60 s).
    pub fn expect(&mut self, needle: &str) {
        expect(&mut self.master, &mut self.seen, needle);
    }

    /// Types `bytes`.
    pub fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.master.write_all(bytes).unwrap();
    }
}

/// Reads from the terminal master until `needle` shows up (or panics after 60 s).
pub fn expect(master: &mut std::fs::File, seen: &mut Vec<u8>, needle: &str) {
    use std::os::fd::AsFd;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(seen).contains(needle) {
        assert!(Instant::now() < deadline, "no {needle:?} in terminal output:\n{}", String::from_utf8_lossy(seen));
        let mut fds = [nix::poll::PollFd::new(master.as_fd(), nix::poll::PollFlags::POLLIN)];
        if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16)).unwrap_or(0) == 0 {
            continue;
        }
        match master.read(&mut buf) {
            Ok(0) => panic!("terminal closed before {needle:?}:\n{}", String::from_utf8_lossy(seen)),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reading the terminal: {e}\n{}", String::from_utf8_lossy(seen)),
        }
    }
}

/// Sets the terminal's size (the kernel then sends SIGWINCH to its foreground group).
pub fn set_size(fd: &impl AsRawFd, rows: u16, cols: u16) {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which points at `ws`.
    assert_eq!(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) }, 0);
}
