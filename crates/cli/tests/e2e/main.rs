//! End-to-end tests: the `moat` binary, its daemon, and real Linux guests under QEMU
//! (and moat-vmm, `vmm`).
//!
//! Each test gets its own Moat installation (see `harness`). Without the guest
//! prerequisites these tests skip loudly; `MOAT_REQUIRE_E2E=1` makes that a failure.

mod agents;
mod api;
mod checkpoint;
mod completions;
mod confine;
mod docker;
mod egress;
mod env;
mod escape;
mod exec;
mod harness;
mod host;
mod injection;
mod lifecycle;
mod model_api;
mod policy;
mod pty;
mod secrets;
mod templates;
mod terminal;
mod vmm;
mod workspace;
