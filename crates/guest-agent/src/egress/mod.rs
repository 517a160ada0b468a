//! The guest side of the way out: the agent turns the host's vsock egress
//! ports into what ordinary programs expect, and nothing more.
//!
//! - [`setup`]: at boot, fetch the host's [`GuestNetConfig`], bring up `lo`
//!   and the `moat0` dummy device (default route, gateway address), install
//!   the nftables rules that redirect every outbound TCP connection to the
//!   agent, point DNS at the agent, trust the installation's CA, and write
//!   the proxy environment for shells and apt.
//! - [`relay`]: the gateway's proxy port and the transparent-redirect port,
//!   each connection relayed to its host vsock port.
//! - [`dns`]: the resolver on port 53 (UDP and TCP), forwarded to the host.
//!
//! None of this is a security boundary: root in the guest can undo all of it.
//! The boundary is that the VM has no network device to the outside and the
//! host only answers these vsock ports, each through the policy proxy.
//!
//! [`GuestNetConfig`]: moat_proto::egress::GuestNetConfig

mod dns;
mod relay;
mod setup;
mod vsock;

pub use setup::{fetch_config, start};
