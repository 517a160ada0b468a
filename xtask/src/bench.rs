//! `cargo xtask bench`: the benchmarks, on release builds.

use anyhow::Result;

use crate::util::{cargo, run};

/// Builds release binaries (with the static agent) and runs each benchmark program.
pub fn run_benches() -> Result<()> {
    let built = crate::dist::build(true)?;
    crate::images::ensure_all()?;
    run(cargo()
        .args(["run", "--release", "--quiet", "-p", "moat-benches", "--bin", "lifecycle"])
        .env("MOAT_BIN", &built.moat)
        .env("MOAT_AGENT_BIN", &built.agent))
}
