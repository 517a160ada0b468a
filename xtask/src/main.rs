//! Repository tooling: `cargo xtask <command>`.

mod bench;
mod dist;
mod fuzz;
mod images;
mod setup;
mod test;
mod tidy;
mod util;
mod vmm_smoke;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "Moat repository tooling")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install everything Moat needs on this machine (apt packages, virtiofsd, the
    /// vsock backend, the moat-vmm monitor, guest images) and install `moat` into ~/.cargo/bin.
    Setup,
    /// Build (or find in the cache) the guest kernel and template rootfs.
    Images(images::Args),
    /// Build `moat` (debug) with `moat-vsock`, `moat-vmm` and the static guest agent.
    Build {
        /// Optimized build.
        #[arg(long)]
        release: bool,
    },
    /// Build `moat` (release) and install it with `moat-vsock`, `moat-vmm` and the agent into ~/.cargo/bin.
    Install,
    /// Run every test, guest end-to-end tests included.
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks (release builds) and print the figures: `bench egress`
    /// for the proxy alone, `bench vsock` for the vsock device, `bench lifecycle`
    /// for real guests, nothing for all.
    Bench(bench::Args),
    /// Boot moat-vmm's freestanding test guests through /dev/kvm; prints `vmm-smoke: ok` last.
    VmmSmoke,
    /// Check repository rules (file sizes, docs, no ignored tests).
    Tidy,
    /// Run the cargo-fuzz targets (nightly; installs cargo-fuzz if missing)
    /// for a while each and print executions and crashes. Not part of CI.
    Fuzz(fuzz::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run_setup(),
        Command::Images(args) => images::run(args),
        Command::Build { release } => dist::build(release).map(|b| eprintln!("==> built {}", b.moat.display())),
        Command::Install => dist::install(),
        Command::Test { args } => test::run_tests(&args),
        Command::Tidy => tidy::check(),
        Command::Bench(args) => bench::run_benches(&args),
        Command::VmmSmoke => vmm_smoke::run(),
        Command::Fuzz(args) => fuzz::run_fuzz(&args),
    }
}
