//! Every contract between Moat's processes, each with one owner.
//!
//! The host and the guest agent speak [`exec`] (commands) and [`egress`] (the
//! way out) over vsock; the host tells the guest's init what to mount in
//! [`boot`] parameters on the kernel command line; [`name`] is the one rule for
//! what a sandbox may be called (it becomes the guest's hostname and a git
//! branch); [`backend`] names the monitor asked for and the one that runs;
//! [`vmm`] is moat-vmm's control socket and the client the sandbox
//! runtime drives it with.
//!
//! This crate has no dependencies beyond serde and std: both sides of each
//! contract link it, and nothing else comes along.

pub mod backend;
pub mod boot;
pub mod egress;
pub mod exec;
pub mod name;
pub mod vmm;
