//! The life of one exec: shuttle bytes between the client and the process until it
//! exits, then send the last output and [`Frame::Exit`].
//!
//! One thread, one `poll` loop over the connection, the process's output, its
//! stdin (when there is input waiting) and its [`ExitWatch`](super::reaper::ExitWatch).
//! Client input is bounded: at most [`STDIN_BACKLOG`] bytes wait for the process to
//! read them; past that the connection is not read until the process catches up.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::conn::{Conn, Incoming};
use super::spawn::{set_winsize, Child, ChildIo};
use moat_proto::exec::{ExitStatus, Frame, MAX_PAYLOAD};

/// Most client bytes held for a process that is not reading its stdin.
pub const STDIN_BACKLOG: usize = 2 * MAX_PAYLOAD;

/// While input may still come, an idle connection is nudged with an empty
/// `StdinAck` after this long, then at doubling intervals up to [`NUDGE_MAX`].
///
/// Why: the vhost-user vsock backend we run today sometimes leaves host-to-guest
/// data queued until the guest next sends something (a lost wakeup). A guest packet
/// makes it process its queues, so a quiet stdin stream never stalls for good.
const NUDGE_FIRST: Duration = Duration::from_millis(50);
const NUDGE_MAX: Duration = Duration::from_secs(2);

/// Timing knobs of a session.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// After the process exits, how long to keep forwarding output that is still
    /// arriving (from background processes holding the pipes open).
    pub drain_grace: Duration,
    /// After the client vanishes, how long between SIGHUP and SIGKILL.
    pub hangup_grace: Duration,
}

/// One output stream of the process (a pipe, or the terminal master shared with
/// [`Session::tty`]).
struct Output {
    fd: Rc<OwnedFd>,
    make: fn(Vec<u8>) -> Frame,
}

/// Why a session ended early: the client is gone or sent garbage, so the
/// process group is killed.
struct ClientGone;

/// Runs the session to its end. Never panics on client input.
pub fn run(conn: &mut Conn, child: Child, timing: Timing) {
    let Child { pid, exit, io } = child;
    let mut s = Session { pid, tty: None, stdin: None, outputs: Vec::new(), backlog: Vec::new(), stdin_eof: false };
    match io {
        ChildIo::Pipes { stdin, stdout, stderr } => {
            s.stdin = stdin;
            s.outputs.push(Output { fd: Rc::new(stdout), make: Frame::Stdout });
            s.outputs.push(Output { fd: Rc::new(stderr), make: Frame::Stderr });
        }
        ChildIo::Pty { master } => {
            let master = Rc::new(master);
            s.outputs.push(Output { fd: master.clone(), make: Frame::Stdout });
            s.tty = Some(master);
        }
    }
    if conn.send(&Frame::Started { pid: pid as u32 }).is_err() {
        return hang_up(pid, &exit, timing);
    }
    let mut exited: Option<(ExitStatus, Instant)> = None;
    let mut nudge = NUDGE_FIRST;
    loop {
        let received = conn.frames_received();
        if s.pump_client(conn).is_err() || s.flush_stdin().is_err() {
            return hang_up(pid, &exit, timing);
        }
        if conn.frames_received() != received {
            nudge = NUDGE_FIRST;
        }
        if let Some((status, deadline)) = exited {
            if s.outputs.is_empty() || Instant::now() >= deadline {
                let _ = conn.send(&Frame::Exit(status));
                return;
            }
        }

        // Only fds with something to wait for: a hung-up fd that is in the set
        // polls ready forever.
        let want_client = s.backlog.len() < STDIN_BACKLOG;
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(5);
        fds.push(PollFd::new(conn.fd(), if want_client { PollFlags::POLLIN } else { PollFlags::empty() }));
        let exit_slot = exited.is_none().then(|| {
            fds.push(PollFd::new(exit.fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        if let Some(fd) = s.stdin_fd().filter(|_| !s.backlog.is_empty()) {
            fds.push(PollFd::new(fd, PollFlags::POLLOUT));
        }
        let first_output = fds.len();
        for o in &s.outputs {
            fds.push(PollFd::new(o.fd.as_fd(), PollFlags::POLLIN));
        }
        let awaiting_input = exited.is_none() && want_client && s.stdin_fd().is_some() && !s.stdin_eof;
        let timeout = match exited {
            Some((_, deadline)) => poll_timeout(deadline.saturating_duration_since(Instant::now())),
            None if awaiting_input => poll_timeout(nudge),
            None => PollTimeout::NONE,
        };
        match nix::poll::poll(&mut fds, timeout) {
            Ok(0) if awaiting_input => {
                drop(fds);
                if conn.send(&Frame::StdinAck(0)).is_err() {
                    return hang_up(pid, &exit, timing);
                }
                nudge = (nudge * 2).min(NUDGE_MAX);
                continue;
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return hang_up(pid, &exit, timing),
        }
        let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
        let client_gone = fds[0].revents().is_some_and(|r| {
            r.intersects(PollFlags::POLLERR | PollFlags::POLLNVAL) || (!want_client && r.contains(PollFlags::POLLHUP))
        });
        let exit_ready = exit_slot.is_some_and(|i| ready(&fds[i]));
        let readable: Vec<bool> = fds[first_output..].iter().map(ready).collect();
        drop(fds);
        if client_gone {
            return hang_up(pid, &exit, timing);
        }
        if exit_ready {
            if let Some(status) = exit.status() {
                exited = Some((status, Instant::now() + timing.drain_grace));
            }
        }
        if s.forward_output(conn, &readable).is_err() {
            return hang_up(pid, &exit, timing);
        }
    }
}

struct Session {
    pid: i32,
    /// The terminal master, in tty mode.
    tty: Option<Rc<OwnedFd>>,
    /// The stdin pipe, in non-tty mode with `stdin: true`, until closed.
    stdin: Option<OwnedFd>,
    outputs: Vec<Output>,
    /// Client bytes not yet taken by the process.
    backlog: Vec<u8>,
    /// The client sent `StdinEof`: close stdin once the backlog is written.
    stdin_eof: bool,
}

impl Session {
    fn stdin_fd(&self) -> Option<BorrowedFd<'_>> {
        self.tty.as_deref().or(self.stdin.as_ref()).map(|fd| fd.as_fd())
    }

    /// Handles the frames the client has sent, while there is room for input.
    fn pump_client(&mut self, conn: &mut Conn) -> Result<(), ClientGone> {
        while self.backlog.len() < STDIN_BACKLOG {
            match conn.try_frame() {
                Incoming::Pending => return Ok(()),
                Incoming::Closed => return Err(ClientGone),
                Incoming::Malformed(e) => {
                    let _ = conn.send_error("bad_request", format!("malformed frame: {e}"));
                    return Err(ClientGone);
                }
                Incoming::Frame(frame) => self.handle(conn, frame)?,
            }
        }
        Ok(())
    }

    fn handle(&mut self, conn: &Conn, frame: Frame) -> Result<(), ClientGone> {
        if let Frame::Stdin(bytes) = &frame {
            // Flow control: the client may send more once we have read this.
            conn.send(&Frame::StdinAck(bytes.len() as u32)).map_err(|_| ClientGone)?;
        }
        match frame {
            // Input for a process without stdin, or after StdinEof, is dropped.
            Frame::Stdin(bytes) if self.stdin_fd().is_some() && !self.stdin_eof => {
                self.backlog.extend_from_slice(&bytes);
            }
            // A terminal has no end of input (the user types ^D), so StdinEof is
            // only meaningful for a pipe.
            Frame::StdinEof if self.tty.is_none() => self.stdin_eof = true,
            Frame::Resize(size) => {
                if let Some(master) = &self.tty {
                    let _ = set_winsize(master, size);
                }
            }
            Frame::Signal(n) if (1..=64).contains(&n) => self.signal(n),
            Frame::Signal(n) => {
                // Not fatal: the session goes on (see the server docs).
                conn.send_error("bad_request", format!("signal {n} is not in 1..=64")).map_err(|_| ClientGone)?;
            }
            // Dropped input (above), agent-to-client frames, a second request: ignored.
            _ => {}
        }
        Ok(())
    }

    /// The process group to signal: the terminal's foreground group, or the
    /// process's own group.
    fn target_group(&self) -> i32 {
        self.tty.as_ref().and_then(|m| nix::unistd::tcgetpgrp(m.as_fd()).ok()).map_or(self.pid, |pg| pg.as_raw())
    }

    /// Sends signal `n` (validated to 1..=64; real-time ones included, which nix's
    /// `Signal` does not name) to the target group.
    fn signal(&self, n: i32) {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours; a
        // group that no longer exists only yields ESRCH.
        unsafe { libc::kill(-self.target_group(), n) };
    }

    /// Writes as much of the backlog as the process takes without blocking.
    fn flush_stdin(&mut self) -> Result<(), ClientGone> {
        while !self.backlog.is_empty() {
            let Some(fd) = self.stdin_fd() else {
                self.backlog.clear();
                break;
            };
            match nix::unistd::write(fd, &self.backlog) {
                Ok(n) => {
                    self.backlog.drain(..n);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Ok(()),
                Err(_) => {
                    // The process closed its stdin (EPIPE) or the terminal hung up:
                    // input has nowhere to go.
                    self.backlog.clear();
                    self.stdin = None;
                }
            }
        }
        if self.stdin_eof && self.backlog.is_empty() {
            self.stdin = None;
        }
        Ok(())
    }

    /// Reads once from every output that polled ready; closes those at EOF.
    fn forward_output(&mut self, conn: &Conn, ready: &[bool]) -> Result<(), ClientGone> {
        let mut buf = vec![0u8; MAX_PAYLOAD];
        let mut closed = Vec::new();
        for (i, o) in self.outputs.iter().enumerate() {
            if !ready.get(i).copied().unwrap_or(false) {
                continue;
            }
            match nix::unistd::read(o.fd.as_raw_fd(), &mut buf) {
                Ok(0) => closed.push(i),
                Ok(n) => conn.send(&(o.make)(buf[..n].to_vec())).map_err(|_| ClientGone)?,
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                // EIO: every slave fd of the terminal is closed.
                Err(_) => closed.push(i),
            }
        }
        for i in closed.into_iter().rev() {
            self.outputs.remove(i);
        }
        Ok(())
    }
}

/// The client is gone: hang up the process group, then kill it.
fn hang_up(pid: i32, exit: &super::reaper::ExitWatch, timing: Timing) {
    let group = Pid::from_raw(-pid);
    let _ = kill(group, Signal::SIGHUP);
    let _ = kill(group, Signal::SIGCONT);
    let _ = exit.wait(timing.hangup_grace);
    // Members that ignore SIGHUP (or outlive the leader) go too.
    let _ = kill(group, Signal::SIGKILL);
}

fn poll_timeout(d: Duration) -> PollTimeout {
    let ms = d.as_millis().clamp(1, i32::MAX as u128) as i32;
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
}
