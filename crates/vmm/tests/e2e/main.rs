//! End-to-end tests: real `/dev/kvm`, freestanding guests built with gcc.
//!
//! Skipped (loudly) without /dev/kvm or gcc, unless `MOAT_REQUIRE_E2E=1`,
//! in which case a missing prerequisite fails the run.

mod api;
mod binary;
mod blk;
mod boot;
mod linux;
mod smp;
mod util;
