//! Moat's virtio-vsock device: guest stream sockets ⇄ host Unix sockets
//! ("hybrid vsock", the convention of Firecracker and vhost-device-vsock).
//!
//! A host process connects to the device's Unix socket and writes
//! `CONNECT <port>\n`; once the guest accepts it reads `OK <host port>\n`, then
//! raw bytes flow both ways. A guest connecting to host CID 2, port P reaches
//! whatever listens on `<socket>_P`; if nothing does, it gets an RST at once.
//!
//! The device logic knows nothing of its transport: [`packet`] is the wire
//! header, `conn` one connection's state machine and credit flow control,
//! `host` the host-side sockets, [`device`] the connection table and host
//! event loop, and `virtq` walks virtqueues in guest memory (any descriptor
//! split, every address checked). [`vhost_user`]
//! is the thin adapter that serves QEMU (`vhost-user-vsock-device`); moat-vmm
//! can drive [`VsockDevice`] in-process the same way.
//!
//! Not here: datagram or seqpacket sockets, guest-to-guest traffic, live
//! migration (the event queue is never used).

mod conn;
pub mod device;
mod host;
pub mod packet;
pub mod stats;
pub mod vhost_user;
mod virtq;

#[cfg(any(test, feature = "test-utils"))]
pub mod guest;

pub use device::{DeviceConfig, DeviceError, VsockDevice};
pub use vhost_user::{serve, Config, ServeError};
