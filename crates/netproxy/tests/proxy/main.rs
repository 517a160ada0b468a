//! End-to-end tests of the proxy: real sockets, real TLS, loopback only.
//! Test names resolve (through the proxy's own resolver) to 127.0.0.x
//! addresses where the fixture's servers listen.

mod explicit;
mod intercept;
mod live;
mod records;
mod requests;
mod scrub;
mod transparent;
mod tunnel;
mod util;
mod websocket;
