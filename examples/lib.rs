//! Examples of embedding Moat's crates in another tool:
//!
//! - `embed.rs`: a sandbox from `moat-sandbox-core`, without the CLI or the
//!   daemon (`cargo run -p moat-examples --example embed -- FOLDER COMMAND...`);
//! - [`standalone_proxy`] and `proxy.rs`: `moat-netproxy`'s policy proxy on
//!   its own, no VM anywhere (`cargo run -p moat-examples --example proxy`).

pub mod standalone_proxy;
