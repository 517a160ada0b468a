//! Moat's credential vault whose values never enter a sandbox.
//!
//! Not built yet: this crate is reserved by the workspace layout and is the
//! subject of issue #5. It exports nothing today.
