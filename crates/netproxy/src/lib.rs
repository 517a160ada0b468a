//! Moat's host-side egress policy engine and proxy.
//!
//! Every byte that leaves a sandbox goes through this crate on the host, which
//! decides by policy, logs it, and answers denials with a clear HTTP 403.
//!
//! - [`policy`]: the pure engine — `allow|deny network …` rules, presets,
//!   special-address classification, decisions that name their rule and the
//!   command that would change them. Synchronous, no sockets.
//! - [`proxy`]: the proxy around it — plain-HTTP forwarding and CONNECT
//!   (explicit) and redirected connections (transparent), SNI checks, strict
//!   HTTP/1 framing, resolution by the proxy itself with every address checked,
//!   TLS interception only where an [`proxy::Intercept`] hook asks (credential
//!   injection), the installation's CA.
//! - [`dns`]: answering a sandbox's DNS under the same policy, with fake
//!   addresses that tell the transparent proxy which name was meant.
//! - [`log`]: one record per connection, request or DNS answer; the SQLite
//!   store (bounded, never blocking the proxy) and its readers.
//!
//! This crate does not store rules or credentials and knows nothing of VMs:
//! callers hand it [`policy::Rule`] values, an [`proxy::Intercept`] hook and
//! byte streams.

pub mod dns;
pub mod log;
pub mod policy;
pub mod proxy;

pub use policy::{Decision, Policy, Preset, Request, Rule, Verdict};
