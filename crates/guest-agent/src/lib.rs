//! Moat's guest agent: PID 1 inside every sandbox VM, and the exec protocol it speaks.
//!
//! The host side of Moat only needs [`proto`] (build this crate with
//! `default-features = false`). The `agent` feature adds the guest-side pieces:
//! the exec [`server`] (transport-agnostic, so it is tested on the host over Unix
//! sockets) and the [`init`] duties of PID 1.
//!
//! This crate does not talk to hypervisors, proxies or the host filesystem.

pub mod proto;

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
