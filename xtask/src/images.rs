//! `cargo xtask images`: builds or locates the guest images through
//! `moat_sandbox_core::images` and prints where they are.

use anyhow::Context;
use moat_sandbox_core::images::{CacheOutcome, ImageCache, StderrProgress};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Rootfs templates to build.
    #[arg(long = "template", default_value = "shell")]
    templates: Vec<String>,
    /// Only the kernel.
    #[arg(long, conflicts_with = "rootfs_only")]
    kernel_only: bool,
    /// Only the rootfs templates.
    #[arg(long)]
    rootfs_only: bool,
    /// Also pack an initramfs around this guest agent binary.
    #[arg(long, value_name = "AGENT_BINARY")]
    initramfs: Option<PathBuf>,
}

/// The kernel (CPU-bound) and the rootfs (network- and disk-bound) build in
/// parallel.
pub fn run(args: Args) -> anyhow::Result<()> {
    let cache = ImageCache::open_default()?;
    eprintln!("==> image cache: {}", cache.root().display());
    let progress = StderrProgress;
    let (kernel, rootfs) = std::thread::scope(|s| {
        let kernel = (!args.rootfs_only).then(|| s.spawn(|| cache.kernel(&progress)));
        let rootfs = (!args.kernel_only).then(|| {
            s.spawn(|| {
                args.templates
                    .iter()
                    .map(|t| cache.rootfs(t, &progress).with_context(|| format!("rootfs `{t}`")))
                    .collect::<anyhow::Result<Vec<_>>>()
            })
        });
        let panicked = "image build thread panicked";
        (kernel.map(|h| h.join().expect(panicked)), rootfs.map(|h| h.join().expect(panicked)))
    });
    if let Some(kernel) = kernel {
        let kernel = kernel.context("guest kernel")?;
        println!("kernel ({}):", outcome(kernel.outcome));
        println!("  vmlinux  {}", kernel.vmlinux.display());
        println!("  bzImage  {}", kernel.bz_image.display());
        println!("  config   {}", kernel.config.display());
    }
    for (image, template) in rootfs.transpose()?.unwrap_or_default().iter().zip(&args.templates) {
        println!("rootfs {template} ({}):", outcome(image.outcome));
        println!("  ext4     {}", image.path.display());
    }
    if let Some(agent) = &args.initramfs {
        let initramfs = cache.initramfs(agent)?;
        println!("initramfs ({}):", outcome(initramfs.outcome));
        println!("  cpio     {}", initramfs.path.display());
    }
    Ok(())
}

fn outcome(outcome: CacheOutcome) -> &'static str {
    match outcome {
        CacheOutcome::Hit => "cache hit",
        CacheOutcome::Built => "built",
    }
}

/// Builds (or finds) the kernel and the `shell` template, for `setup` and `test`.
pub fn ensure_all() -> anyhow::Result<()> {
    run(Args { templates: vec!["shell".into()], kernel_only: false, rootfs_only: false, initramfs: None })
}
