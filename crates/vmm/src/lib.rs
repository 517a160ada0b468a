//! Moat's KVM microVM monitor on rust-vmm crates.
//!
//! Not built yet: this crate is reserved by the workspace layout and is the
//! subject of issue #3. It exports nothing today.
