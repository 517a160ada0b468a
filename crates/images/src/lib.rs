//! Guest images: the kernel, template root file systems and the agent's
//! initramfs, built from recipes in `crates/images/recipes/` and kept in a
//! content-addressed cache. Usable alone (xtask builds images with nothing
//! else of Moat).
//!
//! ```text
//! <cache>/kernel/linux-6.12-<hash16>/{vmlinux, bzImage, config, build.log}
//! <cache>/rootfs/base-<hash16>/{rootfs.ext4, build.log}
//! <cache>/layer/<template>-<hash16>/{layer.ext4, build.log}
//! <cache>/initramfs/agent-<hash16>/initramfs.cpio
//! <cache>/downloads/npm/<package>-<version>.tgz
//! ```
//!
//! Besides the cache: [`binary_layer`] packs programs brought from the host
//! into a layer of their own (after [`elf::classify`] says the base can run
//! them), for templates users make.
//!
//! `<cache>` is `$MOAT_CACHE_DIR`, else `$XDG_CACHE_HOME/moat`, else
//! `~/.cache/moat`. `<hash16>` is the sha256 of the recipe (files embedded
//! with `include_str!`, build-step version, input package versions), so a
//! hit costs only hashing and a recipe change builds a new artifact beside
//! the old one. Builds run in a `.partial` directory under a lock and are
//! renamed into place.
//!
//! ```no_run
//! use moat_images::{ImageCache, StderrProgress, Template};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = ImageCache::open_default()?;
//! let kernel = cache.kernel(&StderrProgress)?;           // KernelImage { vmlinux, bz_image, .. }
//! let claude = Template::builtin("claude")?;
//! let images = cache.template(&claude, &StderrProgress)?; // base + claude's layer (needs root to build)
//! let initrd = cache.initramfs("target/release/moat-guest-agent".as_ref())?;
//! # let _ = (kernel, images, initrd); Ok(()) }
//! ```
//!
//! Not here: booting the images (the hypervisor backends) and the guest
//! agent itself.

mod binary;
mod cache;
mod command;
mod cpio;
pub mod elf;
mod ext4;
mod hash;
mod initramfs;
mod io;
mod kconfig;
mod kernel;
mod layer;
mod npm;
mod progress;
mod rootfs;
mod template;
pub mod tools;

pub use binary::{binary_layer, BinaryLayerError, HostProgram, BIN_DIR};
pub use cache::{CacheError, CacheOutcome, ImageCache};
pub use command::ToolError;
pub use cpio::CpioWriter;
pub use elf::is_static_elf;
pub use ext4::{Ext4Error, ImageSize};
pub use hash::{RecipeDigest, RecipeHash};
pub use initramfs::{initramfs_for, write_initramfs, Initramfs, InitramfsError};
pub use io::PathIoError;
pub use kconfig::dropped_options;
pub use kernel::{KernelError, KernelImage, KERNEL_FRAGMENT, SOURCE_PACKAGE};
pub use layer::{LayerError, LayerImage, TemplateDigests, TemplateImages};
pub use npm::{NpmError, NpmPackage};
pub use progress::{Progress, Silent, StderrProgress};
pub use rootfs::{RootfsError, RootfsImage, RootfsRecipe, BASE, SOURCE_DATE_EPOCH};
pub use template::{builtin_names, NeedsTerminal, Template, TemplateError, TemplateSpec, PREPARE_PATH};
