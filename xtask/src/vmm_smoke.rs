//! `cargo xtask vmm-smoke`: boot moat-vmm's freestanding test guests through
//! the real /dev/kvm and fail if any prerequisite (KVM, gcc) is missing.
//!
//! xtask does not link moat-vmm; it runs the crate's end-to-end test binary
//! (`crates/vmm/tests/e2e`), which builds the guests from C in a temp dir and
//! boots them, with `MOAT_REQUIRE_E2E=1` so nothing is silently skipped.

use anyhow::Result;

use crate::util;

/// Builds and boots the guests; prints `vmm-smoke: ok` last.
pub fn run() -> Result<()> {
    util::run(
        util::cargo()
            .args(["test", "-p", "moat-vmm", "--test", "e2e", "--", "--test-threads=1", "--nocapture"])
            .env("MOAT_REQUIRE_E2E", "1"),
    )?;
    println!("vmm-smoke: ok");
    Ok(())
}
