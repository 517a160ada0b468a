//! The control socket's connections: accept, read bounded request lines,
//! write the answers. No threads of its own: the VMM thread polls the fds
//! and calls in when one is ready.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] clients (more are accepted and
//! closed at once), [`MAX_REQUEST_BYTES`] per request line (a longer line
//! gets an error and the connection is closed), and a client that does not
//! read its answers is dropped when its socket buffer fills.

use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};

use moat_proto::vmm::{Request, Response, MAX_REQUEST_BYTES};

/// Clients served at once.
pub const MAX_CONNECTIONS: usize = 8;

/// The listening socket and its clients.
#[derive(Debug)]
pub(crate) struct Server {
    listener: UnixListener,
    connections: Vec<Connection>,
}

#[derive(Debug)]
struct Connection {
    stream: UnixStream,
    pending: Vec<u8>,
}

impl Server {
    pub(crate) fn new(listener: UnixListener) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(Self { listener, connections: Vec::new() })
    }

    /// The fds to poll for input: the listener, then each client in order.
    pub(crate) fn poll_fds(&self) -> impl Iterator<Item = libc::pollfd> + '_ {
        let listener = std::iter::once(self.listener.as_raw_fd());
        listener.chain(self.connections.iter().map(|c| c.stream.as_raw_fd())).map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
    }

    /// Handles readiness reported for the fds [`Server::poll_fds`] gave, in
    /// the same order, answering each complete request with `handle`
    /// (`None` for a line that is not a request).
    pub(crate) fn on_ready(&mut self, ready: &[libc::pollfd], mut handle: impl FnMut(Option<Request>) -> Response) {
        let Some((listener, clients)) = ready.split_first() else { return };
        // Walk backwards so closing a client does not shift the ones to come.
        for (index, fd) in clients.iter().enumerate().rev() {
            if fd.revents != 0 && index < self.connections.len() && !self.connections[index].serve(&mut handle) {
                self.connections.swap_remove(index);
            }
        }
        if listener.revents != 0 {
            self.accept();
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) if self.connections.len() < MAX_CONNECTIONS => {
                    if stream.set_nonblocking(true).is_ok() {
                        self.connections.push(Connection { stream, pending: Vec::new() });
                    }
                }
                Ok(_) => {} // Over the limit: closed on drop.
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return, // WouldBlock: nothing left to accept.
            }
        }
    }
}

impl Connection {
    /// Reads what is available and answers every complete line. `false`
    /// when the connection is done (closed, broken, or misbehaving).
    fn serve(&mut self, handle: &mut impl FnMut(Option<Request>) -> Response) -> bool {
        let mut buf = [0u8; MAX_REQUEST_BYTES];
        loop {
            let room = MAX_REQUEST_BYTES - self.pending.len();
            match self.stream.read(&mut buf[..room]) {
                Ok(0) => return false,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
            while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                if !self.answer(&handle(Request::parse(&line[..end]))) {
                    return false;
                }
            }
            if self.pending.len() == MAX_REQUEST_BYTES {
                let too_long = handle(None);
                let _ = self.answer(&Response { error: Some("request line too long".into()), ..too_long });
                return false;
            }
        }
    }

    /// Writes one answer; `false` if the client cannot take it now.
    fn answer(&mut self, response: &Response) -> bool {
        // Answers are small and the socket buffer is empty unless the client
        // stopped reading; one that did is dropped rather than waited for.
        self.stream.write_all(&response.to_line()).is_ok()
    }
}
