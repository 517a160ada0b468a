//! Why a template operation failed.

use std::path::PathBuf;

use super::manifest::{ManifestError, NameError};
use super::tar::ArchiveError;

/// A template could not be saved, made, imported, exported, removed or used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// No user template has that name.
    #[error("no template named {0:?}; see `moat template ls`")]
    NotFound(String),
    /// The name is taken.
    #[error("a template named {0:?} exists; choose another name, or replace it with --force")]
    Exists(String),
    /// The name can't be used.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A template Moat ships can't be changed this way.
    #[error("{name:?} is a template Moat ships (built from its recipe by `moat image build`); {what}")]
    Shipped { name: String, what: &'static str },
    /// A create request names another agent than its template's.
    #[error("template {name:?} runs the {agent} agent, not {asked}")]
    OtherAgent { name: String, agent: String, asked: String },
    /// Sandboxes boot from it.
    #[error("template {name:?} is used by {}: remove {} first (`moat rm {}`)", sandboxes.join(", "), if sandboxes.len() == 1 { "it" } else { "them" }, sandboxes.join(" "))]
    InUse { name: String, sandboxes: Vec<String> },
    /// The sandbox runs, so its disk is changing.
    #[error("sandbox {0:?} is running; stop it first (`moat stop {0}`), or pass --stop")]
    Running(String),
    /// The sandbox's last run did not end with the guest powering off.
    #[error("sandbox {sandbox:?} did not shut down cleanly last time ({why}), so its disk may hold writes that only its journal has, which a template never replays; start and stop it again (`moat start {sandbox} && moat stop {sandbox}`), then save")]
    Unclean { sandbox: String, why: String },
    /// The source sandbox's own template is gone.
    #[error("sandbox {sandbox:?} was made from template {template:?}, which is gone; it can't be saved or started")]
    ParentGone { sandbox: String, template: String },
    /// The chain would be too long to boot.
    #[error("this template would have {layers} layers of its own, and a sandbox booting it has room for {max}: QEMU's microvm has 8 virtio devices, root, state, vsock and the workspace take 4 and the agent's own images the rest; save from a sandbox of a shorter chain")]
    TooManyLayers { layers: usize, max: usize },
    /// The manifest (stored or imported) is not valid.
    #[error("template {name:?}")]
    Manifest {
        name: String,
        #[source]
        source: ManifestError,
    },
    /// An import was refused.
    #[error("{} is not an export Moat accepts", file.display())]
    Archive {
        file: PathBuf,
        #[source]
        source: ArchiveError,
    },
    /// The layers were made over other images than this Moat's.
    #[error("template {name:?} was made over {agent}'s images {theirs}, and this Moat has {ours}: files the layers changed would hide the newer ones; import it with --other-base to use it anyway")]
    OtherBase { name: String, agent: String, theirs: String, ours: String },
    /// Moat can't tell how to start the programs.
    #[error("Moat knows no default way to start {0}; say how with --launch 'PROGRAM ARGS…'")]
    NoLaunch(String),
    /// A program can't be brought into a template.
    #[error(transparent)]
    Program(#[from] moat_images::BinaryLayerError),
    /// The shipped template's images could not be looked up.
    #[error("the images of template {agent:?}")]
    Images {
        agent: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Not enough room in `$MOAT_HOME`.
    #[error("not enough free space: this needs {need} MiB and the filesystem holding {} has {free} MiB free (Moat keeps 1 GiB spare)", dir.display())]
    NoSpace { dir: PathBuf, need: u64, free: u64 },
    /// `zstd` is missing or failed.
    #[error("`zstd` {0}; install it with `apt-get install zstd`")]
    Zstd(String),
    /// A file operation failed.
    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl TemplateError {
    /// A `map_err` adapter for file operations.
    pub(crate) fn io(what: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TemplateError {
        let path = path.to_path_buf();
        move |source| TemplateError::Io { what, path, source }
    }
}
