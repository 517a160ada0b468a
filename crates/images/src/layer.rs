//! Template layers: what a template adds over the base, as its own small
//! read-only ext4 image that the guest stacks above the base with overlayfs.
//!
//! A layer is built in an overlay of the base image (loop-mounted read-only)
//! with an empty upper folder: the template's npm packages are unpacked into
//! it, its `setup.sh` runs in a chroot of it, and the upper folder, which
//! then holds exactly what the template added or changed (deletions as
//! overlayfs whiteouts), is packed into the layer image. Adding an agent
//! costs its own files, not another root file system.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::cache::{remove_tree, CacheError, CacheOutcome, ImageCache};
use super::command::{self, ToolError};
use super::ext4;
use super::hash::{RecipeDigest, RecipeHash};
use super::io::PathIoError;
use super::npm::{self, NpmError};
use super::progress::Progress;
use super::rootfs::{RootfsError, RootfsImage, Step, BASE, SOURCE_DATE_EPOCH};
use super::template::{Template, PREPARE_PATH};

/// Bump when the build steps below change in a way that changes the output.
const RECIPE: &str = "layer/1: overlay on loop-mounted base, npm unpack, prepare, chroot setup.sh, mkfs.ext4 -d upper";

/// A built template layer.
#[derive(Debug, Clone)]
pub struct LayerImage {
    /// The ext4 image.
    pub path: PathBuf,
    /// The build log.
    pub log: PathBuf,
    /// Whether it came from the cache.
    pub outcome: CacheOutcome,
}

/// A template's images, lowest first: the base, then its layers.
#[derive(Debug, Clone)]
pub struct TemplateImages {
    /// The base root file system.
    pub base: RootfsImage,
    /// Layers above it, lowest first (empty for `shell`).
    pub layers: Vec<LayerImage>,
}

/// Building a layer failed.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The base failed.
    #[error("building the base")]
    Base(#[source] RootfsError),
    /// Mounting and chroot need root.
    #[error("building a template layer needs root (loop mount, overlay, chroot): run `sudo cargo xtask images`")]
    NeedsRoot,
    /// A package failed.
    #[error(transparent)]
    Npm(#[from] NpmError),
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
    /// The base and the layer of `template`, building what the cache lacks.
    pub fn template(&self, template: &Template, progress: &dyn Progress) -> Result<TemplateImages, LayerError> {
        let base = self.base(progress).map_err(LayerError::Base)?;
        let layers = if template.has_layer() { vec![self.layer(template, &base, progress)?] } else { Vec::new() };
        Ok(TemplateImages { base, layers })
    }

    /// The layer of `template` over `base`.
    pub fn layer(
        &self,
        template: &Template,
        base: &RootfsImage,
        progress: &dyn Progress,
    ) -> Result<LayerImage, LayerError> {
        let digest = layer_digest(template, &base.digest);
        let artifact = format!("{} layer", template.name);
        let (dir, outcome) = self.get_or_build(("layer", &template.name), &digest, progress, |dir| {
            let tarballs = template
                .spec
                .npm
                .iter()
                .map(|p| Ok((p, self.npm_tarball(p, progress)?)))
                .collect::<Result<Vec<_>, LayerError>>()?;
            let step = Step { progress, artifact: &artifact, dir };
            build(template, &base.path, &tarballs, &step, &digest)
        })?;
        Ok(LayerImage { path: dir.join("layer.ext4"), log: dir.join("build.log"), outcome })
    }

    /// The recipe hashes of `template`'s images and whether they are built,
    /// without building anything.
    pub fn template_digests(&self, template: &Template) -> Result<TemplateDigests, LayerError> {
        let base = self.base_digest().map_err(LayerError::Base)?;
        let layer = template.has_layer().then(|| layer_digest(template, &base));
        let built = self.artifact_dir("rootfs", BASE.name, &base).is_dir()
            && layer.as_ref().is_none_or(|l| self.artifact_dir("layer", &template.name, l).is_dir());
        Ok(TemplateDigests { base, layer, built })
    }
}

/// What a template's images are made from (their recipe hashes), so a
/// layer made over them can tell whether this Moat has the same ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateDigests {
    /// The base root file system.
    pub base: RecipeDigest,
    /// The template's own layer, if it has one.
    pub layer: Option<RecipeDigest>,
    /// Whether all of them are in the cache.
    pub built: bool,
}

fn layer_digest(template: &Template, base: &RecipeDigest) -> RecipeDigest {
    let mut hash = RecipeHash::new("layer");
    hash.field("recipe", RECIPE)
        .field("base", base.0)
        .field("name", &template.name)
        // What shapes the layer's files; launch, env and hosts do not.
        .field("npm", format!("{:?}", template.spec.npm))
        .field("setup", template.setup.as_deref().unwrap_or(""))
        .field("prepare", template.prepare.as_deref().unwrap_or(""))
        .field("epoch", SOURCE_DATE_EPOCH.to_string());
    hash.finish()
}

fn build(
    template: &Template,
    base: &Path,
    tarballs: &[(&npm::NpmPackage, PathBuf)],
    step: &Step<'_>,
    digest: &RecipeDigest,
) -> Result<(), LayerError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(LayerError::NeedsRoot);
    }
    let log = step.dir.join("build.log");
    let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|d| step.dir.join(d));
    for d in [&lower, &upper, &work, &merged] {
        fs::create_dir(d).map_err(PathIoError::on("create", d))?;
    }
    // The upper folder's root becomes the layer's root: the base's modes.
    fs::set_permissions(&upper, fs::Permissions::from_mode(0o755)).map_err(PathIoError::on("chmod", &upper))?;

    let mounts = Mounts::new(step.dir);
    mounts.mount(&["-o", "loop,ro"], base, &lower, &log)?;
    let options = format!(
        "lowerdir={},upperdir={},workdir={},redirect_dir=off,index=off,metacopy=off,xino=off",
        lower.display(),
        upper.display(),
        work.display()
    );
    mounts.mount(&["-t", "overlay", "-o", &options], Path::new("overlay"), &merged, &log)?;

    for (pkg, tarball) in tarballs {
        step.stage(&format!("unpacking {}@{} into {}", pkg.package, pkg.version, pkg.into));
        npm::unpack(tarball, &merged, &pkg.into, &log)?;
    }
    if let Some(prepare) = &template.prepare {
        let path = merged.join(PREPARE_PATH.trim_start_matches('/'));
        let dir = path.parent().expect("PREPARE_PATH has a folder");
        fs::create_dir_all(dir).map_err(PathIoError::on("create", dir))?;
        let script = format!("#!/bin/sh\n# Moat: `{}` prepare.sh\nset -eu\n{prepare}\nexec \"$@\"\n", template.name);
        fs::write(&path, script).map_err(PathIoError::on("write", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(PathIoError::on("chmod", &path))?;
    }
    if let Some(setup) = &template.setup {
        step.stage(&format!("running setup.sh (log: {})", log.display()));
        let script = merged.join("moat-setup.sh");
        fs::write(&script, setup).map_err(PathIoError::on("write", &script))?;
        mounts.mount(&["-t", "proc"], Path::new("proc"), &merged.join("proc"), &log)?;
        mounts.mount(&["--bind"], Path::new("/dev"), &merged.join("dev"), &log)?;
        let chroot = command::find_tool("chroot", "install coreutils")?;
        command::run_logged(
            Command::new(chroot)
                .env_clear()
                .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
                .env("LC_ALL", "C")
                .env("HOME", "/root")
                .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH.to_string())
                .arg(&merged)
                .args(["/bin/sh", "-eu", "/moat-setup.sh"]),
            "setup.sh",
            &log,
            None,
        )?;
        fs::remove_file(&script).map_err(PathIoError::on("remove", &script))?;
    }
    mounts.unmount_all()?;

    step.stage("packing the layer into ext4");
    let image = step.dir.join("layer.ext4");
    let size = ext4::make_image(&upper, &image, digest, SOURCE_DATE_EPOCH, &log).map_err(|e| match e {
        ext4::Ext4Error::Tool(t) => LayerError::Tool(t),
        ext4::Ext4Error::Io(e) => LayerError::Io(e),
    })?;
    step.stage(&format!("{} MiB layer, {} files", size.image_bytes >> 20, size.used_inodes));
    for d in [&lower, &upper, &work, &merged] {
        remove_tree(d)?;
    }
    Ok(())
}

/// Mounts of one build, undone in reverse order (also when the build fails).
struct Mounts<'a> {
    dir: &'a Path,
    done: std::cell::RefCell<Vec<PathBuf>>,
}

impl<'a> Mounts<'a> {
    fn new(dir: &'a Path) -> Self {
        Mounts { dir, done: Default::default() }
    }

    fn mount(&self, options: &[&str], source: &Path, target: &Path, log: &Path) -> Result<(), LayerError> {
        debug_assert!(target.starts_with(self.dir));
        let mount = command::find_tool("mount", "`apt-get install mount`")?;
        command::run_logged(Command::new(mount).args(options).arg(source).arg(target), "mount", log, None)?;
        self.done.borrow_mut().push(target.to_path_buf());
        Ok(())
    }

    fn unmount_all(&self) -> Result<(), LayerError> {
        while let Some(target) = self.done.borrow_mut().pop() {
            nix::mount::umount2(&target, nix::mount::MntFlags::empty()).map_err(|e| PathIoError {
                action: "unmount",
                path: target.clone(),
                source: e.into(),
            })?;
        }
        Ok(())
    }
}

impl Drop for Mounts<'_> {
    fn drop(&mut self) {
        for target in self.done.get_mut().drain(..).rev() {
            let _ = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}
