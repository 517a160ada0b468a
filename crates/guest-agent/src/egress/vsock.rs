//! Blocking vsock streams to the host (CID 2).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    connect, setsockopt, shutdown, socket, sockopt, AddressFamily, Shutdown, SockFlag, SockType, VsockAddr,
};
use nix::sys::time::TimeVal;

/// A connected vsock stream.
#[derive(Debug)]
pub struct VsockStream(OwnedFd);

impl VsockStream {
    /// Connects to the host's vsock `port`, failing after `timeout`.
    pub fn connect_host(port: u32, timeout: Duration) -> io::Result<VsockStream> {
        let fd = socket(AddressFamily::Vsock, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
        let tv = TimeVal::new(timeout.as_secs() as _, timeout.subsec_micros() as _);
        // Bounds connect() (vsock honours SO_SNDTIMEO for it) and later writes.
        setsockopt(&fd, sockopt::SendTimeout, &tv)?;
        connect(fd.as_raw_fd(), &VsockAddr::new(libc::VMADDR_CID_HOST, port))?;
        // Data may legitimately pause for long; only connect was bounded.
        setsockopt(&fd, sockopt::SendTimeout, &TimeVal::new(0, 0))?;
        Ok(VsockStream(fd))
    }

    /// A second handle on the same socket, for the other direction of a relay.
    pub fn try_clone(&self) -> io::Result<VsockStream> {
        Ok(VsockStream(self.0.try_clone()?))
    }

    /// Ends our sending side; the host sees end of stream.
    pub fn shutdown_write(&self) {
        let _ = shutdown(self.0.as_raw_fd(), Shutdown::Write);
    }

    /// Ends both directions.
    pub fn shutdown_both(&self) {
        let _ = shutdown(self.0.as_raw_fd(), Shutdown::Both);
    }
}

impl Read for VsockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        nix::unistd::read(self.0.as_raw_fd(), buf).map_err(io::Error::from)
    }
}

impl Write for VsockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Writes stay within one 32 KiB frame's worth: see proto::MAX_FRAME.
        let n = buf.len().min(moat_proto::exec::MAX_FRAME);
        nix::unistd::write(&self.0, &buf[..n]).map_err(io::Error::from)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
