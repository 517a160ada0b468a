//! `cargo xtask test`: the whole test suite, guest end-to-end tests included.

use anyhow::Result;

use crate::util::{cargo, run};

/// Builds the static guest agent, makes sure the guest images exist, then runs
/// every test of the workspace with `MOAT_AGENT_BIN` pointing at that agent.
/// With `MOAT_REQUIRE_E2E=1` (CI), guest tests fail instead of skipping.
pub fn run_tests(extra: &[String]) -> Result<()> {
    let agent = crate::dist::agent()?;
    crate::images::ensure_all()?;
    let mut c = cargo();
    // The fuzz targets are libFuzzer programs (they would fuzz forever as
    // tests); the fuzz crate's own tests replay every seed and regression.
    c.args(["test", "--workspace", "--all-targets", "--exclude", "moat-fuzz"])
        .args(extra)
        .env("MOAT_AGENT_BIN", &agent);
    run(&mut c)?;
    run(cargo().args(["test", "-p", "moat-fuzz", "--lib"]))?;
    crate::tidy::check()
}
