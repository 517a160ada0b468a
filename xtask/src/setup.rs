//! `cargo xtask setup`: everything a fresh Debian 12 machine needs to run Moat.

use std::process::Command;

use anyhow::{bail, Result};

use crate::util::{cargo, have, is_root, run};

/// Debian packages: QEMU, image building (debootstrap, kernel toolchain), e2fsprogs, zstd,
/// the C libraries virtiofsd links against, and what the tests use.
const APT_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "debootstrap",
    "linux-source-6.12",
    "build-essential",
    "flex",
    "bison",
    "bc",
    "libelf-dev",
    "libssl-dev",
    "libseccomp-dev",
    "libcap-ng-dev",
    "pkg-config",
    "e2fsprogs",
    "cpio",
    "xz-utils",
    "lz4",
    // Template export and import (`moat template export|import`).
    "zstd",
    // Tests: test CAs and certificates (openssl), stand-in HTTPS services (python3), LFS repositories,
    // the vault key in a desktop keyring (a private session bus and gnome-keyring's Secret Service).
    "openssl",
    "python3",
    "git-lfs",
    "dbus-daemon",
    "gnome-keyring",
];

/// Rust tools from crates.io: the virtio-fs daemon, pinned. (The vsock backend,
/// `moat-vsock`, and the monitor, `moat-vmm`, are built from this workspace by `dist::install`.)
const CARGO_TOOLS: &[(&str, &str, &str)] = &[("virtiofsd", "virtiofsd", "1.14.0")];

pub fn run_setup() -> Result<()> {
    apt()?;
    for (krate, bin, version) in CARGO_TOOLS {
        if have(bin) {
            eprintln!("==> {bin}: present");
            continue;
        }
        run(cargo().args(["install", "--locked", "--quiet", krate, "--version", version]))?;
    }
    crate::images::ensure_all()?;
    crate::dist::install()
}

fn apt() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        eprintln!("==> apt packages: present");
        return Ok(());
    }
    eprintln!("==> apt packages to install: {}", missing.join(" "));
    let sudo: &[&str] = if is_root() {
        &[]
    } else if have("sudo") {
        &["sudo"]
    } else {
        bail!("installing packages needs root: run `sudo apt-get install {}`", missing.join(" "));
    };
    let apt = |args: &[&str]| {
        let mut all: Vec<&str> = sudo.to_vec();
        all.push("apt-get");
        all.extend_from_slice(args);
        let mut c = Command::new(all[0]);
        c.args(&all[1..]).env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut c)
    };
    apt(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    apt(&args)
}
