//! `cargo xtask images`: builds or locates the guest images through
//! `moat_images` and prints where they are.

use anyhow::Context;
use moat_images::{CacheOutcome, ImageCache, StderrProgress, Template};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Templates to build (the base and each one's layer); `all` for every
    /// template Moat ships.
    #[arg(long = "template", default_value = "shell")]
    templates: Vec<String>,
    /// Only the kernel.
    #[arg(long, conflicts_with = "rootfs_only")]
    kernel_only: bool,
    /// Only the templates.
    #[arg(long)]
    rootfs_only: bool,
    /// Also pack an initramfs around this guest agent binary.
    #[arg(long, value_name = "AGENT_BINARY")]
    initramfs: Option<PathBuf>,
}

/// The kernel (CPU-bound) and the templates (network- and disk-bound) build
/// in parallel.
pub fn run(mut args: Args) -> anyhow::Result<()> {
    if args.templates.iter().any(|t| t == "all") {
        args.templates = moat_images::builtin_names().into_iter().map(String::from).collect();
    }
    let templates =
        args.templates.iter().map(|t| Template::builtin(t)).collect::<Result<Vec<_>, _>>().context("--template")?;
    let cache = ImageCache::open_default()?;
    eprintln!("==> image cache: {}", cache.root().display());
    let progress = StderrProgress;
    let (kernel, rootfs) = std::thread::scope(|s| {
        let kernel = (!args.rootfs_only).then(|| s.spawn(|| cache.kernel(&progress)));
        let rootfs = (!args.kernel_only).then(|| {
            s.spawn(|| {
                templates
                    .iter()
                    .map(|t| cache.template(t, &progress).with_context(|| format!("template `{}`", t.name)))
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
    for (images, template) in rootfs.transpose()?.unwrap_or_default().iter().zip(&args.templates) {
        println!("template {template}:");
        println!("  base     {} ({})", images.base.path.display(), outcome(images.base.outcome));
        for layer in &images.layers {
            println!("  layer    {} ({})", layer.path.display(), outcome(layer.outcome));
        }
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

/// Builds (or finds) the kernel and every template, for `setup` and `test`.
pub fn ensure_all() -> anyhow::Result<()> {
    run(Args { templates: vec!["all".into()], kernel_only: false, rootfs_only: false, initramfs: None })
}
