//! Guest images for the sandbox manager, from the cache and the agent binary.

use std::path::PathBuf;

use crate::manager::{GuestImages, ImageProvider};
pub use moat_images::*;

/// Images from the default cache plus an initramfs around the guest agent binary.
#[derive(Debug)]
pub struct CachedImages {
    cache: ImageCache,
    agent: PathBuf,
}

/// Why the image provider could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The cache folder is unusable.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// No guest agent binary was found.
    #[error(
        "guest agent binary not found at {0} (set MOAT_AGENT_BIN, or build and install with `cargo xtask install`)"
    )]
    NoAgent(PathBuf),
    /// The agent binary needs a dynamic loader, which the initramfs doesn't have.
    #[error("the guest agent {0} is dynamically linked and cannot run as the guest's init; build the static one with `cargo xtask build` (or point MOAT_AGENT_BIN at it)")]
    DynamicAgent(PathBuf),
    /// A build failed.
    #[error("building the {what} image failed")]
    Build {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl CachedImages {
    /// The default cache; the agent is `$MOAT_AGENT_BIN`, else `moat-guest-agent`
    /// beside the running executable.
    pub fn from_env() -> Result<CachedImages, ProviderError> {
        let agent = default_agent_path();
        Ok(CachedImages { cache: ImageCache::open_default()?, agent })
    }

    /// Builds whatever is missing (with progress on stderr) and returns the
    /// images of `agent`'s template.
    pub fn ensure(&self, agent: &str) -> Result<GuestImages, ProviderError> {
        let template =
            Template::builtin(agent).map_err(|e| ProviderError::Build { what: "template", source: e.into() })?;
        let bytes = std::fs::read(&self.agent).map_err(|_| ProviderError::NoAgent(self.agent.clone()))?;
        if !is_static_elf(&bytes) {
            return Err(ProviderError::DynamicAgent(self.agent.clone()));
        }
        let build = |what| move |e: Box<dyn std::error::Error + Send + Sync>| ProviderError::Build { what, source: e };
        let kernel = self.cache.kernel(&StderrProgress).map_err(|e| build("kernel")(e.into()))?;
        let images = self.cache.template(&template, &StderrProgress).map_err(|e| build("template")(e.into()))?;
        let initramfs = self.cache.initramfs(&self.agent).map_err(|e| build("initramfs")(e.into()))?;
        Ok(GuestImages {
            kernel: kernel.vmlinux,
            rootfs: images.base.path,
            layers: images.layers.into_iter().map(|l| l.path).collect(),
            initramfs: initramfs.path,
        })
    }
}

/// The guest agent binary: `$MOAT_AGENT_BIN`, else the first static
/// `moat-guest-agent` of [`agent_candidates`] (else the first that exists).
pub fn default_agent_path() -> PathBuf {
    match std::env::var_os("MOAT_AGENT_BIN").filter(|v| !v.is_empty()) {
        Some(p) => std::path::absolute(&p).unwrap_or_else(|_| PathBuf::from(p)),
        None => {
            let candidates =
                std::env::current_exe().ok().and_then(|e| e.parent().map(agent_candidates)).unwrap_or_default();
            // The first static one; else the first that exists (ensure() then says it's dynamic).
            candidates
                .iter()
                .find(|p| std::fs::read(p).is_ok_and(|b| is_static_elf(&b)))
                .or_else(|| candidates.iter().find(|p| p.is_file()))
                .or(candidates.first())
                .cloned()
                .unwrap_or_else(|| PathBuf::from("moat-guest-agent"))
        }
    }
}

/// Where a static agent may sit relative to the folder of the `moat` executable:
/// beside it (installed), or where `cargo xtask build` puts it in a source tree
/// (`target/guest/…`, which plain `cargo build` never overwrites with a dynamic one).
fn agent_candidates(exe_dir: &std::path::Path) -> Vec<PathBuf> {
    let mut c = vec![exe_dir.join("moat-guest-agent")];
    if let Some(target) = exe_dir.parent() {
        c.push(target.join("guest/x86_64-unknown-linux-gnu/release/moat-guest-agent"));
    }
    c
}

impl ImageProvider for CachedImages {
    fn images(&self, agent: &str) -> Result<GuestImages, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.ensure(agent)?)
    }

    fn digests(&self, agent: &str) -> Result<TemplateDigests, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.cache.template_digests(&Template::builtin(agent)?)?)
    }
}
