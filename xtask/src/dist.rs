//! Building the shipped binaries: `moat`, the vsock backend `moat-vsock`, the
//! KVM monitor `moat-vmm` (`--backend vmm`), and the static guest agent.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::util::{cargo, root, run};

/// The guest agent runs as PID 1 from an initramfs, so it is linked statically.
const AGENT_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds the static guest agent (release) and returns its path.
pub fn agent() -> Result<PathBuf> {
    // A separate target dir keeps the static flags from invalidating host builds.
    let target_dir = root().join("target/guest");
    run(cargo()
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "moat-guest-agent",
            "--bin",
            "moat-guest-agent",
            "--target",
            AGENT_TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS", "-C target-feature=+crt-static")
        // The initramfs carries it on every boot: keep it small.
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols"))?;
    Ok(target_dir.join(AGENT_TARGET).join("release/moat-guest-agent"))
}

/// Built binaries.
pub struct Built {
    /// The `moat` executable.
    pub moat: PathBuf,
    /// The vhost-user vsock backend the supervisor runs.
    pub vsock: PathBuf,
    /// The KVM monitor the supervisor runs for `--backend vmm` (found beside `moat`).
    pub vmm: PathBuf,
    /// The static guest agent (in `target/guest/`, where `moat` looks for it; a plain
    /// `cargo build` would put a dynamic one beside `moat`).
    pub agent: PathBuf,
}

/// Builds `moat`, `moat-vsock`, `moat-vmm` and the static agent.
pub fn build(release: bool) -> Result<Built> {
    let agent = agent()?;
    let mut c = cargo();
    c.args(["build", "--quiet", "-p", "moat-cli", "-p", "moat-vsock", "-p", "moat-vmm", "--bins"]);
    if release {
        c.arg("--release");
    }
    run(&mut c)?;
    let out = root().join("target").join(if release { "release" } else { "debug" });
    Ok(Built { moat: out.join("moat"), vsock: out.join("moat-vsock"), vmm: out.join("moat-vmm"), agent })
}

/// Installs `moat`, `moat-vsock`, `moat-vmm` and the agent into `~/.cargo/bin`
/// (where the supervisor finds the vsock backend and the monitor).
pub fn install() -> Result<()> {
    let built = build(true)?;
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/root".into());
    let bin = home.join(".cargo/bin");
    std::fs::create_dir_all(&bin)?;
    copy_exe(&built.moat, &bin.join("moat"))?;
    copy_exe(&built.vsock, &bin.join("moat-vsock"))?;
    copy_exe(&built.vmm, &bin.join("moat-vmm"))?;
    copy_exe(&built.agent, &bin.join("moat-guest-agent"))?;
    eprintln!("==> installed moat, moat-vsock, moat-vmm and moat-guest-agent into {}", bin.display());
    Ok(())
}

/// Copies through a temporary name so a running copy is never overwritten in place.
fn copy_exe(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
    std::fs::rename(&tmp, to).with_context(|| format!("installing {}", to.display()))?;
    Ok(())
}
