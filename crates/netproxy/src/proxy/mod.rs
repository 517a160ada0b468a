//! The egress proxy: the only way out of a sandbox.
//!
//! Connections arrive as byte streams (from the VM's vsock back-end, so any
//! `AsyncRead + AsyncWrite`, not only TCP) through two doors:
//! [`Proxy::serve`] for clients that use the proxy explicitly (plain-HTTP
//! requests and CONNECT), and [`Proxy::serve_transparent`] for connections
//! redirected inside the guest. Every request is decided by the live
//! [`Policy`](crate::policy::Policy); names are resolved by the proxy
//! ([`Resolve`]), every address is checked before connecting, and
//! connections go only to checked addresses. Denials get a 403 page naming
//! the rule and the command that would allow it. Each connection or request
//! becomes one [`ConnectionRecord`](crate::log::ConnectionRecord).
//!
//! TLS passes through untouched unless the [`Intercept`] hook wants the host
//! (credential injection); then the proxy terminates it with a certificate
//! from its own [`CertificateAuthority`] and forwards request by request.
//!
//! Built on tokio, rustls and rcgen, with its own strict HTTP/1 parsing
//! (`httparse`). Not on hudsucker: it connects tunnels and upstreams by
//! host name with `TcpStream::connect`, re-resolving behind the policy's
//! back, and serves only a `TcpListener`. Not on hyper's server either: it
//! silently drops a `Content-Length` sent with `Transfer-Encoding` and
//! merges duplicate ones, so those requests could not be refused with 400.
//!
//! WebSocket upgrades over plain HTTP and intercepted TLS are decided (and get
//! their credentials) on the opening `GET`, then relayed both ways untouched;
//! no other protocol switch is asked for or relayed (`h2c` gets 502).
//!
//! What is open stays under the live policy: tunnels, WebSockets and
//! responses in flight are cut as soon as the policy denies where they go,
//! and relays idle for [`Limits::tunnel_idle_timeout`] end. One proxy serves
//! at most [`Limits::max_connections`] connections at once (Moat runs one
//! proxy per sandbox); past that, new ones are refused.
//!
//! Not done here: HTTP/2 to the guest (intercepted connections offer
//! `http/1.1` only).

mod admission;
mod body;
mod ca;
mod connect;
mod forward;
mod guard;
mod head;
mod intercept;
mod io;
mod record;
mod reply;
mod resolve;
mod retry;
mod scrub;
mod server;
mod sni;
mod target;
mod transparent;
mod tunnel;
mod upstream;

pub use admission::REFUSALS_LOGGED_EVERY;
pub use ca::{CaError, CertificateAuthority, CA_FILE, DEFAULT_LEAF_CACHE};
pub use intercept::{HeaderError, Headers, Intercept, Redaction};
pub use resolve::{OrSystem, Resolve, ResolveFuture, StaticResolver, SystemResolver};
pub use server::{Limits, Proxy, ProxyConfig, ProxyError, Reserved};
