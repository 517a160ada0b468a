//! Moat's guest agent: PID 1 inside every sandbox VM.
//!
//! It speaks the contracts of `moat-proto` (the exec and egress protocols, the
//! boot parameters); the host links that crate, not this one. The pieces: the
//! exec [`server`] (transport-agnostic, so it is tested on the host over Unix
//! sockets), the [`init`] duties of PID 1, the guest side of [`egress`] and the
//! on-demand Docker engine ([`docker`]).
//!
//! This crate does not talk to hypervisors, proxies or the host filesystem.

#[cfg(feature = "agent")]
pub mod docker;
#[cfg(feature = "agent")]
pub mod egress;
#[cfg(feature = "agent")]
pub mod init;
#[cfg(feature = "agent")]
mod log;
#[cfg(feature = "agent")]
pub mod server;
