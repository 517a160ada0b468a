//! Templates users make (issue #13): a stopped sandbox's disk frozen as a
//! template (`moat template save`), programs brought from the host (`moat
//! template programs`), export and import as one file, and the store under
//! `$MOAT_HOME/templates/` that sandboxes boot from (`moat run -t NAME`).
//!
//! A user template is a shipped template (its agent: launch, environment,
//! hosts, credentials, images) plus read-only layers of its own, stacked by
//! the guest's overlay: a saved sandbox's state disk with its `/upper`
//! folder as the layer, or a small image of programs. **A state disk is
//! written by a hostile root guest: the host only copies its bytes** (holes
//! kept) and hands them back to a guest as a read-only disk; it never
//! mounts, checks or parses the file system in it. An import is hostile
//! too: [`tar`] reads it under fixed bounds and creates nothing itself.
//!
//! Not here: parsing the command line (`moat-cli`) and building shipped
//! images (`moat-images`).

mod error;
mod manage;
mod manifest;
mod programs;
mod sparse;
mod store;
mod tar;
mod transfer;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_import;

pub use error::TemplateError;
pub use manage::{Exported, ImportRequest, ProgramsRequest, SaveRequest, TemplateInfo};
pub use manifest::{
    check_name, layer_file, BaseDigests, Launch, Layer, LayerKind, Manifest, ManifestError, NameError, FORMAT,
    MAX_LAYERS, MAX_LAYER_BYTES, MAX_MANIFEST_BYTES, SAVED_LAYER_DIR,
};
pub use programs::{default_launch, parse_launch, MAX_PROGRAM_BYTES};
pub use store::{Staging, StoreLock, TemplateStore};
pub use tar::ArchiveError;
