//! `moat run shell .` on a real terminal: the first-use network question, a login
//! shell, resizes, Ctrl-C, exit code.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::moat;

/// Reads from the terminal master until `needle` shows up (or panics after 30 s).
fn expect(master: &mut std::fs::File, seen: &mut Vec<u8>, needle: &str) {
    use std::os::fd::AsFd;
    let deadline = Instant::now() + Duration::from_secs(30);
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

fn set_size(fd: &impl AsRawFd, rows: u16, cols: u16) {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which points at `ws`.
    assert_eq!(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) }, 0);
}

#[test]
fn run_shell_gives_an_interactive_login_shell_that_follows_the_terminal() {
    let Some(m) = moat() else { return };
    let ws = m.workspace("term");
    let pty = nix::pty::openpty(None, None).unwrap();
    set_size(&pty.master, 30, 100);
    let slave: OwnedFd = pty.slave;
    let mut cmd = m.cmd();
    cmd.current_dir(&ws)
        .args(["run", "--name", "term", "-m", "1g", "shell", "."])
        .stdin(Stdio::from(slave.try_clone().unwrap()))
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
    let mut child = cmd.spawn().unwrap();
    let mut master = std::fs::File::from(pty.master);
    let mut seen = Vec::new();

    // First use on a terminal: Moat asks which network preset to start from.
    expect(&mut master, &mut seen, "choice [1]: ");
    master.write_all(b"3\r").unwrap();
    expect(&mut master, &mut seen, "$ ");
    assert_eq!(m.ok(&["policy", "preset"]), "deny-all\n", "the answer was kept");
    master.write_all(b"echo size=$(stty size) tty=$(tty) user=$(id -un) in=$PWD\r").unwrap();
    expect(&mut master, &mut seen, &format!("size=30 100 tty=/dev/pts/0 user=agent in={}", ws.display()));

    // The host terminal is resized: SIGWINCH reaches moat, which resizes the guest's terminal.
    set_size(&master, 45, 132);
    std::thread::sleep(Duration::from_millis(300));
    master.write_all(b"echo resized=$(stty size)\r").unwrap();
    expect(&mut master, &mut seen, "resized=45 132");

    // Ctrl-C interrupts the foreground job and the shell lives on.
    master.write_all(b"sleep 60\r").unwrap();
    std::thread::sleep(Duration::from_millis(700));
    master.write_all(&[0x03]).unwrap();
    master.write_all(b"echo after=interrupt\r").unwrap();
    expect(&mut master, &mut seen, "after=interrupt");

    // Login shells read /etc/sandbox-persistent.sh.
    master.write_all(b"echo 'export PERSIST=kept' | sudo tee /etc/sandbox-persistent.sh >/dev/null; bash -lc 'echo persist=$PERSIST'\r").unwrap();
    expect(&mut master, &mut seen, "persist=kept");

    master.write_all(b"exit 3\r").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "moat exits with the shell's code");
}
