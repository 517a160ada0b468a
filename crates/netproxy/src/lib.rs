//! Moat's host-side egress policy engine and proxy.
//!
//! Not built yet: this crate is reserved by the workspace layout and is the
//! subject of issue #4. It exports nothing today.
