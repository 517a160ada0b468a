//! The egress policy engine: rules, presets, address classes and decisions.
//!
//! Pure and synchronous: no sockets, no DNS, no async. The proxy calls
//! [`Policy::decide`] with the host and port a sandbox asked for, resolves an
//! allowed name itself, then calls [`Policy::decide_address`] for each
//! address before connecting, so DNS answers cannot steer a connection to
//! the host, the LAN or a metadata service. See [`compiled`] for the order of
//! precedence and [`Rule::port_set`] for default ports. The one piece that
//! is not pure is the live [`Policy`]'s [`PolicyChanges`]: an async wake-up
//! on every update, for connections that must decide again while open.

mod address;
pub mod compiled;
mod decision;
mod host;
mod index;
mod preset;
mod request;
mod rule;
mod shared;

#[cfg(any(test, feature = "test-utils"))]
pub mod reference;

#[cfg(test)]
mod tests;

pub use address::{classify, AddressClass, IpNet};
pub use compiled::CompiledPolicy;
pub use decision::{Decision, Origin, Reason, Remedy, Request, RuleEntry, Verdict};
pub use host::{HostPattern, NameProblem, HOST_ALIAS, MAX_NAME_LEN};
pub use preset::{Preset, PresetError};
pub use request::{Methods, PathPattern, RequestProblem, RequestTarget};
pub use rule::{
    parse_resources, Action, PortSet, Ports, Resource, ResourceError, ResourceProblem, Rule, RuleError, RuleRefused,
    Scope, VALID_FORMS,
};
pub use shared::{Policy, PolicyChanges};
