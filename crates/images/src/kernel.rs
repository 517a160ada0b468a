//! The guest kernel: Debian's `linux-source-6.12`, `make tinyconfig`, plus
//! the fragment `images/kernel.config`, built to `vmlinux` (PVH entry) and
//! `bzImage`.

use super::cache::{CacheError, CacheOutcome, ImageCache};
use super::command::{self, Heartbeat, ToolError};
use super::hash::RecipeHash;
use super::io::PathIoError;
use super::kconfig::dropped_options;
use super::progress::Progress;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The config fragment merged on top of `tinyconfig`.
pub const KERNEL_FRAGMENT: &str = include_str!("../recipes/kernel.config");
/// The Debian package that provides the kernel source.
pub const SOURCE_PACKAGE: &str = "linux-source-6.12";
const SOURCE_TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";
/// Bump when the build steps below change in a way that changes the output.
const RECIPE: &str = "kernel/1: tinyconfig, merge_config.sh -m, olddefconfig, vmlinux bzImage";
const SETUP_HINT: &str = "install the kernel build tools (`apt-get install build-essential flex bison bc libelf-dev libssl-dev`) or run `cargo xtask setup`";

/// A built guest kernel.
#[derive(Debug, Clone)]
pub struct KernelImage {
    /// The uncompressed ELF kernel; boots through its PVH entry point.
    pub vmlinux: PathBuf,
    /// The compressed kernel for the Linux boot protocol.
    pub bz_image: PathBuf,
    /// The final `.config` it was built with.
    pub config: PathBuf,
    /// The build log (present when built, kept in the cache).
    pub log: PathBuf,
    /// Whether it came from the cache.
    pub outcome: CacheOutcome,
}

/// Building the guest kernel failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The Debian kernel source package is missing.
    #[error("kernel source {SOURCE_TARBALL} not found: `apt-get install {SOURCE_PACKAGE}` or run `cargo xtask setup`")]
    NoSource,
    /// Kconfig dropped options of the fragment (their dependencies are off).
    #[error("kernel config lost {} option(s) of images/kernel.config (enable their dependencies in the fragment): {}; final config: {}", options.len(), options.join(", "), config.display())]
    DroppedOptions { options: Vec<String>, config: PathBuf },
    /// A build tool failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Reading or writing a build file failed.
    #[error(transparent)]
    Io(#[from] PathIoError),
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> KernelError + 'a {
    move |source| KernelError::Io(PathIoError { action, path: path.to_path_buf(), source })
}

impl ImageCache {
    /// Returns the guest kernel, building it first if the cache lacks it
    /// (about 5–8 minutes on two cores).
    pub fn kernel(&self, progress: &dyn Progress) -> Result<KernelImage, KernelError> {
        if !Path::new(SOURCE_TARBALL).is_file() {
            return Err(KernelError::NoSource);
        }
        let dpkg = command::find_tool("dpkg-query", "image builds need a Debian-based host")?;
        let source_version =
            command::output(Command::new(dpkg).args(["-W", "-f=${Version}", SOURCE_PACKAGE]), "dpkg-query")?;
        let gcc = command::find_tool("gcc", SETUP_HINT)?;
        let compiler = command::output(Command::new(gcc).arg("--version"), "gcc")?;
        let digest = RecipeHash::new("kernel")
            .field("recipe", RECIPE)
            .field("fragment", KERNEL_FRAGMENT)
            .field("source", &source_version)
            .field("compiler", compiler.lines().next().unwrap_or_default())
            .finish();
        let artifact = "kernel";
        let (dir, outcome) = self.get_or_build(("kernel", "linux-6.12"), &digest, progress, |dir| {
            progress.stage(
                artifact,
                &format!("building {SOURCE_PACKAGE} {source_version} (log: {})", dir.join("build.log").display()),
            );
            build(dir, progress)
        })?;
        Ok(KernelImage {
            vmlinux: dir.join("vmlinux"),
            bz_image: dir.join("bzImage"),
            config: dir.join("config"),
            log: dir.join("build.log"),
            outcome,
        })
    }
}

fn build(dir: &Path, progress: &dyn Progress) -> Result<(), KernelError> {
    let log = dir.join("build.log");
    let src = dir.join("src");
    let make = command::find_tool("make", SETUP_HINT)?;
    let tar = command::find_tool("tar", SETUP_HINT)?;
    // bzImage compression (CONFIG_KERNEL_LZ4 in the fragment).
    command::find_tool("lz4", "`apt-get install lz4` or run `cargo xtask setup`")?;
    fs::create_dir(&src).map_err(io_err("create", &src))?;

    progress.stage("kernel", "extracting source");
    command::run_logged(
        Command::new(tar).arg("-xf").arg(SOURCE_TARBALL).arg("-C").arg(&src).arg("--strip-components=1"),
        "tar",
        &log,
        None,
    )?;

    progress.stage("kernel", "configuring (tinyconfig + images/kernel.config)");
    let kbuild = |cmd: &mut Command| {
        cmd.current_dir(&src)
            .env("KBUILD_BUILD_USER", "moat")
            .env("KBUILD_BUILD_HOST", "moat")
            .env("KBUILD_BUILD_TIMESTAMP", "1970-01-01");
    };
    let mut tiny = Command::new(&make);
    kbuild(tiny.arg("tinyconfig"));
    command::run_logged(&mut tiny, "make tinyconfig", &log, None)?;
    let fragment = dir.join("kernel.config");
    fs::write(&fragment, KERNEL_FRAGMENT).map_err(io_err("write", &fragment))?;
    let mut merge = Command::new(src.join("scripts/kconfig/merge_config.sh"));
    kbuild(merge.arg("-m").arg(".config").arg(&fragment));
    command::run_logged(&mut merge, "merge_config.sh", &log, None)?;
    let mut olddef = Command::new(&make);
    kbuild(olddef.arg("olddefconfig"));
    command::run_logged(&mut olddef, "make olddefconfig", &log, None)?;

    let final_config = dir.join("config");
    fs::copy(src.join(".config"), &final_config).map_err(io_err("copy", &final_config))?;
    let config = fs::read_to_string(&final_config).map_err(io_err("read", &final_config))?;
    let options = dropped_options(KERNEL_FRAGMENT, &config);
    if !options.is_empty() {
        return Err(KernelError::DroppedOptions { options, config: final_config });
    }

    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    progress.stage("kernel", &format!("compiling vmlinux and bzImage with {jobs} jobs"));
    let mut compile = Command::new(&make);
    kbuild(compile.arg(format!("-j{jobs}")).args(["vmlinux", "bzImage"]));
    let heartbeat = Heartbeat {
        progress,
        artifact: "kernel",
        counts: |line| line.starts_with("  CC ") || line.starts_with("  AS "),
        noun: "objects compiled",
    };
    command::run_logged(&mut compile, "make vmlinux bzImage", &log, Some(&heartbeat))?;

    for (from, to) in [("vmlinux", "vmlinux"), ("arch/x86/boot/bzImage", "bzImage")] {
        let to = dir.join(to);
        fs::copy(src.join(from), &to).map_err(io_err("copy", &to))?;
    }
    progress.stage("kernel", "removing the build tree");
    fs::remove_dir_all(&src).map_err(io_err("remove", &src))?;
    Ok(())
}
