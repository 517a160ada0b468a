//! `cargo xtask bench`: the benchmarks, on release builds.

use anyhow::Result;

use crate::util::{cargo, run};

/// Which benchmarks to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// Every benchmark.
    All,
    /// Sandbox start-up and exec latency (real guests; needs the images).
    Lifecycle,
    /// The agents' template layers (cold and cached builds) and their start-up
    /// against `shell` (real guests; needs root and the images).
    Agents,
    /// The egress proxy on loopback against direct, mitmproxy and squid,
    /// then policy decisions per second with 1,000 rules.
    Egress,
    /// moat-vsock's device code driven by an in-process guest driver, each
    /// way, against a Unix socketpair.
    Vsock,
}

/// `cargo xtask bench` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which benchmarks to run.
    #[arg(value_enum, default_value = "all")]
    which: Which,
    /// Extra arguments for the egress benchmark (e.g. `-- --secs 10 --conns 16,1`).
    #[arg(last = true)]
    egress_args: Vec<String>,
}

/// Runs the chosen benchmark programs.
pub fn run_benches(args: &Args) -> Result<()> {
    // Egress and vsock first: they need no guest images, so their figures
    // come out even where the lifecycle benchmark cannot run.
    if matches!(args.which, Which::All | Which::Egress) {
        egress(&args.egress_args)?;
    }
    if matches!(args.which, Which::All | Which::Vsock) {
        run(cargo().args(["bench", "--quiet", "-p", "moat-vsock", "--bench", "throughput"]))?;
    }
    if matches!(args.which, Which::All | Which::Lifecycle) {
        lifecycle()?;
    }
    if matches!(args.which, Which::All | Which::Agents) {
        agents()?;
    }
    Ok(())
}

/// Times the agents' images and start-up with release binaries.
fn agents() -> Result<()> {
    let built = crate::dist::build(true)?;
    crate::images::ensure_all()?;
    run(cargo()
        .args(["run", "--release", "--quiet", "-p", "moat-benches", "--bin", "agents"])
        .env("MOAT_BIN", &built.moat)
        .env("MOAT_AGENT_BIN", &built.agent))
}

/// Builds release binaries (with the static agent) and times sandboxes.
fn lifecycle() -> Result<()> {
    let built = crate::dist::build(true)?;
    crate::images::ensure_all()?;
    run(cargo()
        .args(["run", "--release", "--quiet", "-p", "moat-benches", "--bin", "lifecycle"])
        .env("MOAT_BIN", &built.moat)
        .env("MOAT_AGENT_BIN", &built.agent))
}

/// The proxy side by side with direct, mitmproxy and squid (tools that are
/// missing are reported as skipped), then the policy engine's decisions/s.
fn egress(extra: &[String]) -> Result<()> {
    run(cargo().args(["run", "--release", "--quiet", "-p", "moat-benches", "--bin", "egress", "--"]).args(extra))?;
    run(cargo().args(["bench", "--quiet", "-p", "moat-netproxy", "--bench", "policy"]))
}
