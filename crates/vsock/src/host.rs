//! The host side of hybrid vsock: the Unix socket host processes connect to
//! (`CONNECT <port>\n` picks the guest port), and the `<uds-path>_<port>`
//! sockets the guest's connections to the host reach.

use std::io::{self, ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};

/// Longest `CONNECT <port>` line accepted, newline included.
const MAX_LINE: usize = 32;

/// The listening socket at `--uds-path`.
#[derive(Debug)]
pub struct HostListener {
    listener: UnixListener,
    path: PathBuf,
}

impl HostListener {
    /// Listens at `path`, replacing a stale socket (never another kind of file).
    pub fn bind(path: &Path) -> io::Result<HostListener> {
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        Ok(HostListener { listener, path: path.to_path_buf() })
    }

    /// The listening socket.
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// The next waiting host client, nonblocking.
    pub fn accept(&self) -> io::Result<Option<UnixStream>> {
        match self.listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(true)?;
                Ok(Some(s))
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Connects to `<uds-path>_<port>` without blocking: a listener that doesn't
    /// exist, refuses, or has a full backlog is an error (the guest gets an RST).
    pub fn connect_port(&self, port: u32) -> io::Result<UnixStream> {
        let mut path = self.path.clone().into_os_string();
        path.push(format!("_{port}"));
        let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)?;
        let addr = UnixAddr::new(Path::new(&path))?;
        connect(fd.as_raw_fd(), &addr)?;
        Ok(UnixStream::from(fd))
    }
}

/// A host client that has connected but not finished its `CONNECT <port>\n` line.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    line: Vec<u8>,
}

/// What a [`Client`] has said so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Said {
    /// Not a whole line yet.
    Nothing,
    /// `CONNECT <port>`.
    Connect(u32),
    /// A malformed line, EOF or an error: drop the client.
    Bad,
}

impl Client {
    /// Wraps a freshly accepted, nonblocking stream.
    pub fn new(stream: UnixStream) -> Client {
        Client { stream, line: Vec::with_capacity(MAX_LINE) }
    }

    /// The client's stream.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Gives up the stream (after [`Said::Connect`]).
    pub fn into_stream(self) -> UnixStream {
        self.stream
    }

    /// Reads what has arrived of the line, one byte at a time so that no byte
    /// after the newline (the client's first data) is consumed.
    pub fn read_line(&mut self) -> Said {
        let mut b = [0u8; 1];
        while self.line.len() < MAX_LINE {
            match self.stream.read(&mut b) {
                Ok(0) => return Said::Bad,
                Ok(_) if b[0] == b'\n' => return parse_connect(&self.line).map_or(Said::Bad, Said::Connect),
                Ok(_) => self.line.push(b[0]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Said::Nothing,
                Err(_) => return Said::Bad,
            }
        }
        Said::Bad
    }
}

/// `CONNECT <port>` (without the newline) → port. Like vhost-device-vsock, the
/// word is case-insensitive and whitespace is free; nothing may follow the port.
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    let mut words = std::str::from_utf8(line).ok()?.split_ascii_whitespace();
    let (verb, port) = (words.next()?, words.next()?);
    if !verb.eq_ignore_ascii_case("connect") || words.next().is_some() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn connect_lines_parse_strictly() {
        assert_eq!(parse_connect(b"CONNECT 1024"), Some(1024));
        assert_eq!(parse_connect(b"connect  4294967295\r"), Some(u32::MAX));
        for bad in [
            &b"CONNECT"[..],
            b"CONNECT ",
            b"CONNECT -1",
            b"CONNECT +1",
            b"CONNECT 4294967296",
            b"LISTEN 1",
            b"CONNECT 1 2",
            b"\xff",
        ] {
            assert_eq!(parse_connect(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_line_is_read_without_eating_the_data_behind_it() {
        let (mut a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let mut c = Client::new(b);
        a.write_all(b"CONN").unwrap();
        assert_eq!(c.read_line(), Said::Nothing);
        a.write_all(b"ECT 52\nhello").unwrap();
        assert_eq!(c.read_line(), Said::Connect(52));
        let mut rest = [0u8; 5];
        c.into_stream().read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"hello");
    }

    #[test]
    fn an_endless_line_is_refused() {
        let (mut a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        a.write_all(&[b'9'; 100]).unwrap();
        assert_eq!(Client::new(b).read_line(), Said::Bad);
    }

    #[test]
    fn connecting_to_a_missing_port_socket_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let l = HostListener::bind(&dir.path().join("v.sock")).unwrap();
        assert!(l.connect_port(9).is_err());
        let _p = UnixListener::bind(dir.path().join("v.sock_9")).unwrap();
        assert!(l.connect_port(9).is_ok());
    }
}
