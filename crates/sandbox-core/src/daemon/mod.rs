//! The per-user daemon and its client.
//!
//! The daemon serves a [`crate::manager::Manager`] over HTTP/JSON on a Unix
//! socket (`docs/api.md`, `docs/openapi.yaml`). It holds no VM itself: each VM
//! has its own supervisor process, so a daemon restart loses nothing and the
//! next daemon reads the truth from the supervisors.

mod api;
mod client;
mod server;

pub use api::{build_id, error_chain, ApiError, ErrorBody, VersionInfo, API_VERSION};
pub use client::{connect_or_start, start_daemon, ClientError, DaemonClient, DaemonCommand};
pub use server::{serve, ServeError};
