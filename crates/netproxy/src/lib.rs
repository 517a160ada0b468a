//! Moat's host-side egress policy engine and proxy.
//!
//! Every byte that leaves a sandbox goes through this crate on the host, which
//! decides by policy, logs it, and answers denials with a clear HTTP 403.
//!
//! Today it holds the policy engine ([`policy`]): parsing `allow|deny network
//! …` rules, presets, classifying addresses and deciding requests. It is pure
//! and synchronous so it can be tested without sockets. The proxy itself (an
//! adapter around the engine) is not here yet. This crate does not store rules;
//! callers own persistence and hand it [`policy::Rule`] values.

pub mod dns;
pub mod log;
pub mod policy;
pub mod proxy;

pub use policy::{Decision, Policy, Preset, Request, Rule, Verdict};
