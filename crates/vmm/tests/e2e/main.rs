//! End-to-end tests: real `/dev/kvm`, freestanding guests built with gcc,
//! real vhost-user back-ends (`virtiofsd`, `moat-vsock`).
//!
//! Skipped (loudly) without /dev/kvm, gcc or a back-end binary, unless
//! `MOAT_REQUIRE_E2E=1`, in which case a missing prerequisite fails the run.

mod api;
mod binary;
mod blk;
mod boot;
mod linux;
mod smp;
mod util;
mod vhost_user;
