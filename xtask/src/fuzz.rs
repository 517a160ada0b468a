//! `cargo xtask fuzz`: the cargo-fuzz targets in `fuzz`, each for
//! a while, with a summary of executions and crashes. Needs a nightly
//! toolchain (libFuzzer's instrumentation); installs cargo-fuzz if missing.
//! Not part of `cargo xtask test` or CI.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use anyhow::{bail, Context, Result};

use crate::util::{have, root, run};

/// The targets, in the order `fuzz` runs them.
const TARGETS: [&str; 4] = ["mmio_registers", "blk_chains", "vsock_chains", "agent_frames"];
/// The cargo-fuzz release known to build with the toolchains here.
const CARGO_FUZZ: &str = "0.13.2";

/// `cargo xtask fuzz` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// One target (default: every target, one after the other).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    target: Option<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    secs: u64,
}

/// What one target's run came to.
#[derive(Debug)]
struct Outcome {
    target: &'static str,
    secs: f64,
    execs: Option<u64>,
    crashes: Vec<PathBuf>,
}

/// Runs the chosen targets and prints executions and crashes per target.
pub fn run_fuzz(args: &Args) -> Result<()> {
    ensure_tools()?;
    let dir = root().join("fuzz");
    let targets: Vec<&'static str> =
        TARGETS.into_iter().filter(|t| args.target.as_deref().is_none_or(|a| a == *t)).collect();
    let mut outcomes = Vec::new();
    for target in targets {
        outcomes.push(fuzz_one(&dir, target, args.secs)?);
    }
    eprintln!("\n{:<16} {:>8} {:>12} {:>10}  crashes", "target", "secs", "execs", "execs/s");
    for o in &outcomes {
        let execs = o.execs.map_or("?".into(), |n| n.to_string());
        let rate = o.execs.map_or("?".into(), |n| format!("{:.0}", n as f64 / o.secs.max(1.0)));
        eprintln!("{:<16} {:>8.0} {:>12} {:>10}  {}", o.target, o.secs, execs, rate, o.crashes.len());
        for c in &o.crashes {
            eprintln!("    {}", c.display());
        }
    }
    let crashes: usize = outcomes.iter().map(|o| o.crashes.len()).sum();
    if crashes > 0 {
        bail!("{crashes} crash(es); reproduce with `cargo +nightly fuzz run -O <target> <file>` in fuzz");
    }
    Ok(())
}

fn ensure_tools() -> Result<()> {
    let nightly = nightly_cargo().arg("--version").output();
    if !nightly.is_ok_and(|o| o.status.success()) {
        bail!("fuzzing needs a nightly toolchain (`rustup toolchain install nightly`)");
    }
    if !have("cargo-fuzz") {
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked", "--version", CARGO_FUZZ]))?;
    }
    Ok(())
}

/// `cargo +nightly`, free of the variables the outer (stable) cargo set.
fn nightly_cargo() -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly");
    for var in ["CARGO", "RUSTUP_TOOLCHAIN", "RUSTC", "RUSTDOC", "CARGO_TARGET_DIR"] {
        c.env_remove(var);
    }
    c
}

fn fuzz_one(dir: &Path, target: &'static str, secs: u64) -> Result<Outcome> {
    let corpus = dir.join("corpus").join(target);
    let artifacts = dir.join("artifacts").join(target);
    std::fs::create_dir_all(&corpus).context("cannot create the corpus directory")?;
    let log_path = dir.join("target").join(format!("fuzz-{target}.log"));
    std::fs::create_dir_all(dir.join("target"))?;
    let log = File::create(&log_path).context("cannot create the fuzz log")?;
    let started = (Instant::now(), SystemTime::now());
    eprintln!("==> fuzzing {target} for {secs} s (log: {})", log_path.display());
    let mut cmd = nightly_cargo();
    cmd.current_dir(dir)
        .args(["fuzz", "run", "-O", target])
        .arg(&corpus)
        .arg(dir.join("seeds").join(target))
        .arg("--")
        .args([format!("-max_total_time={secs}"), "-timeout=10".into(), "-rss_limit_mb=2048".into()])
        .arg("-print_final_stats=1")
        .env("CARGO_TERM_COLOR", "never")
        .stdout(log.try_clone()?)
        .stderr(log);
    let status = cmd.status().context("cannot run cargo fuzz")?;
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let execs = text
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|n| n.trim().parse().ok());
    // libFuzzer's own clock ("Done N runs in S second(s)") leaves the build out.
    let secs = text
        .lines()
        .find_map(|l| l.strip_prefix("Done ")?.split(" runs in ").nth(1)?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| started.0.elapsed().as_secs_f64());
    let crashes = new_files(&artifacts, started.1);
    if !status.success() && crashes.is_empty() {
        bail!("cargo fuzz failed for {target} ({status}); see {}", log_path.display());
    }
    for line in text.lines().filter(|l| l.contains("panicked at") || l.starts_with("SUMMARY:")) {
        eprintln!("    {line}");
    }
    Ok(Outcome { target, secs, execs, crashes })
}

/// Files libFuzzer wrote to `dir` since `since` (crash-, leak-, oom-, timeout-).
fn new_files(dir: &Path, since: SystemTime) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t >= since))
        .map(|e| e.path())
        .collect()
}
