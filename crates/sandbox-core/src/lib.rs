//! Moat's composition layer: sandboxes, their state, guest images, hypervisor
//! backends, and the daemon API.
//!
//! A sandbox is a definition ([`spec`]) stored in SQLite ([`state`]) and, while
//! it runs, a supervisor process ([`supervisor`]) that owns a VM monitor chosen
//! by [`backend`], booted from the images of [`images`]. [`manager::Manager`]
//! drives the lifecycle; [`daemon`] serves it to the CLI; [`agent`] talks to the
//! guest agent inside a running VM.
//!
//! [`templates`] keeps the templates users make (saved sandboxes, programs
//! from the host) that sandboxes boot from.
//!
//! [`host`] guards what a sandbox may take from the host (shares, processes,
//! sizes) and [`owner`] whom its shared files belong to; [`env`] checks the
//! variables a sandbox's processes start with (no credentials among them); [`credentials`] and
//! [`checkpoint`] wire the vault (`moat-secrets`) and review checkpoints
//! (`moat-worktree`) in.
//!
//! Two processes' worth of code live here, with one-way arrows: the control
//! plane ([`spec`], [`state`], [`manager`], [`daemon`]) starts and reads the
//! per-VM runtime ([`supervisor`], [`backend`], [`egress`]), which never names
//! the control plane (a tidy rule, `cargo xtask tidy`).
//!
//! This crate does not parse command lines or draw terminals (that is
//! `moat-cli`). Policy matching, the proxy, the vault and git live in their own
//! crates: [`egress`] stores the rules and runs `moat-netproxy` for each VM with
//! the vault-backed credential injector.

pub mod agent;
pub mod backend;
pub mod checkpoint;
pub mod credentials;
pub mod daemon;
mod db;
pub mod egress;
pub mod env;
pub mod host;
pub mod images;
pub mod manager;
pub mod owner;
pub mod paths;
pub mod session;
pub mod spec;
pub mod state;
pub mod supervisor;
pub mod templates;
pub mod threads;
