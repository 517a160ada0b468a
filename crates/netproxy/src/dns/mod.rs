//! Answering the guest's DNS under policy, with fake addresses.
//!
//! The guest has no network. Its agent forwards each DNS query over vsock to
//! the host, framed as DNS over TCP, and [`Responder::serve_stream`] answers
//! it here: a name the policy lets the sandbox reach on some port (see
//! [`resolvable`]) gets a fake address from `198.18.0.0/15` ([`FakeIps`]),
//! anything else NXDOMAIN. No query is ever forwarded to a real resolver, so
//! labels cannot carry data out, and the guest never learns real addresses:
//! the transparent proxy maps a fake address back to its name with
//! [`FakeIps::lookup_ip`] and decides the connection by that name.
//!
//! This module does not resolve names for real; the proxy does that when it
//! connects, and checks each address it gets with the policy.

mod fake_ips;
mod limiter;
mod resolvable;
mod responder;
mod wire;

#[cfg(test)]
mod tests;

pub use fake_ips::{FakeIps, DEFAULT_CAPACITY, GATEWAY, GATEWAY_NAME};
pub use limiter::{BURST, RATE, WINDOW};
pub use resolvable::{host_alias_resolvable, resolvable};
pub use responder::{Responder, ServeError, MESSAGE_DEADLINE, STREAM_IDLE, TTL};
pub use wire::MAX_MESSAGE;
