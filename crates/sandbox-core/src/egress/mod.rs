//! The way out of a sandbox, as far as composition goes: where the network
//! policy is kept ([`store`]) and the per-VM service that runs
//! `moat-netproxy` on the VM's vsock egress ports ([`service`]).
//!
//! The policy itself (matching, presets), the proxy, DNS and the connection
//! log live in `moat-netproxy`; this module only wires them to a VM.

pub mod inject;
pub mod service;
pub mod store;

pub use inject::CredentialInjector;
pub use service::{EgressError, EgressPaths, EgressService};
pub use store::{PolicyStore, PolicyStoreError, StoredRule};
