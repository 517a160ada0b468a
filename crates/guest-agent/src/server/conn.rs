//! One client connection: frames in (never blocking the session loop), frames out
//! (one `send` per frame, never more than [`MAX_FRAME`] bytes per call).

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};

use moat_proto::exec::{DecodeError, Frame, FrameError, FrameReader, RemoteError, MAX_FRAME};

/// What reading the connection gave.
#[derive(Debug)]
pub enum Incoming {
    /// A whole frame.
    Frame(Frame),
    /// Nothing complete yet.
    Pending,
    /// The client closed the connection (or it failed).
    Closed,
    /// The client sent bytes that are not a frame; the stream cannot be resynchronised.
    Malformed(DecodeError),
}

/// A connected stream socket carrying frames.
#[derive(Debug)]
pub struct Conn {
    reader: FrameReader<Sock>,
    received: u64,
}

/// Reads with `MSG_DONTWAIT`, so a read never blocks the session loop.
#[derive(Debug)]
struct Sock(OwnedFd);

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        recv(self.0.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
    }
}

impl Conn {
    /// Wraps a connected stream socket (vsock or Unix).
    pub fn new(fd: OwnedFd) -> Self {
        Conn { reader: FrameReader::new(Sock(fd)), received: 0 }
    }

    /// The socket, for `poll`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.reader.get_ref().0.as_fd()
    }

    /// How many frames the client has sent so far.
    pub fn frames_received(&self) -> u64 {
        self.received
    }

    /// The next frame if one is complete, without blocking.
    pub fn try_frame(&mut self) -> Incoming {
        match self.reader.next_frame() {
            Ok(Some(frame)) => {
                self.received += 1;
                Incoming::Frame(frame)
            }
            Ok(None) => Incoming::Closed,
            Err(FrameError::Decode(e)) => Incoming::Malformed(e),
            Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Incoming::Pending,
            Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => Incoming::Pending,
            Err(_) => Incoming::Closed,
        }
    }

    /// Blocks until a whole frame, the end of the connection, or garbage arrives.
    pub fn wait_frame(&mut self) -> Incoming {
        loop {
            match self.try_frame() {
                Incoming::Pending => {
                    let mut fds = [PollFd::new(self.fd(), PollFlags::POLLIN)];
                    match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                        Ok(_) | Err(Errno::EINTR) => {}
                        Err(_) => return Incoming::Closed,
                    }
                }
                other => return other,
            }
        }
    }

    /// Sends one frame: one encoded buffer of at most [`MAX_FRAME`] bytes.
    pub fn send(&self, frame: &Frame) -> io::Result<()> {
        let mut buf = Vec::with_capacity(64);
        frame.encode(&mut buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        debug_assert!(buf.len() <= MAX_FRAME);
        let fd = self.reader.get_ref().0.as_raw_fd();
        let mut sent = 0;
        while sent < buf.len() {
            // MSG_NOSIGNAL: a vanished client is an EPIPE error, not a SIGPIPE.
            match send(fd, &buf[sent..], MsgFlags::MSG_NOSIGNAL) {
                Ok(n) => sent += n,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Sends an [`Frame::Error`].
    pub fn send_error(&self, kind: &str, message: String) -> io::Result<()> {
        self.send(&Frame::Error(RemoteError { kind: kind.to_string(), message }))
    }
}
