//! TCP listeners inside the guest, each connection relayed to a host vsock port.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::vsock::VsockStream;
use crate::log::log;
use moat_proto::egress::TransparentHeader;

/// How long a connection waits for the host to accept its vsock connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Relay buffer per direction.
const BUF: usize = 32 * 1024;

/// Which host port a listener feeds, and whether connections carry their
/// original destination.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// The explicit proxy: bytes as they come.
    Proxy(u32),
    /// Redirected connections: a [`TransparentHeader`] first.
    Transparent(u32),
}

/// Accepts on `listener` forever, one pair of threads per connection.
pub fn serve(listener: TcpListener, kind: Kind) {
    for conn in listener.incoming() {
        match conn {
            Ok(tcp) => {
                let spawned = std::thread::Builder::new().name("egress".into()).spawn(move || {
                    if let Err(e) = relay_one(tcp, kind) {
                        log!("egress relay: {e}");
                    }
                });
                if let Err(e) = spawned {
                    log!("egress relay: cannot start a thread: {e}");
                }
            }
            Err(e) => {
                log!("egress accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn relay_one(tcp: TcpStream, kind: Kind) -> io::Result<()> {
    let _ = tcp.set_nodelay(true);
    let mut host = match kind {
        Kind::Proxy(port) => VsockStream::connect_host(port, CONNECT_TIMEOUT)?,
        Kind::Transparent(port) => {
            let dst = original_dst(&tcp)?;
            let mut host = VsockStream::connect_host(port, CONNECT_TIMEOUT)?;
            host.write_all(TransparentHeader { dst }.encode().as_bytes())?;
            host
        }
    };
    let mut host_reader = host.try_clone()?;
    let mut tcp_writer = tcp.try_clone()?;
    let down = std::thread::Builder::new().name("egress-down".into()).spawn(move || {
        let _ = copy(&mut host_reader, &mut tcp_writer);
        let _ = tcp_writer.shutdown(std::net::Shutdown::Write);
    })?;
    let mut tcp_reader = tcp;
    let up = copy(&mut tcp_reader, &mut host);
    host.shutdown_write();
    let _ = down.join();
    host.shutdown_both();
    up.map(|_| ())
}

fn copy(from: &mut impl Read, to: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; BUF];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Where a redirected connection was going (`SO_ORIGINAL_DST`, kept by conntrack).
fn original_dst(tcp: &TcpStream) -> io::Result<SocketAddrV4> {
    // SAFETY: all-zero bytes are a valid `sockaddr_in`.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `addr` and `len` are live locals describing a buffer of `len`
    // bytes; the kernel writes at most `len` bytes and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            tcp.as_raw_fd(),
            libc::SOL_IP,
            libc::SO_ORIGINAL_DST,
            (&mut addr as *mut libc::sockaddr_in).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
    Ok(SocketAddrV4::new(ip, u16::from_be(addr.sin_port)))
}
