//! One error shape for "this filesystem operation on this path failed", shared by
//! every image build step.

use std::io;
use std::path::{Path, PathBuf};

/// A filesystem operation on a named path failed.
#[derive(Debug, thiserror::Error)]
#[error("could not {action} {}", path.display())]
pub struct PathIoError {
    /// What was being done (`read`, `rename`, …).
    pub action: &'static str,
    /// On what.
    pub path: PathBuf,
    /// Why it failed.
    #[source]
    pub source: io::Error,
}

impl PathIoError {
    /// A `map_err` adapter: `.map_err(PathIoError::on("read", &path))?`.
    pub fn on(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PathIoError {
        let path = path.to_path_buf();
        move |source| PathIoError { action, path, source }
    }
}
