//! How image builds report progress. The library says what is happening;
//! the CLI or xtask decides how to show it.

/// Receives progress from image builds. Builds of different artifacts may
/// run on different threads, hence `Sync`.
pub trait Progress: Sync {
    /// A new stage of building `artifact` (`"kernel"`, `"rootfs shell"`) began.
    fn stage(&self, artifact: &str, message: &str);

    /// A periodic sign of life inside a long stage (at most every few seconds).
    fn tick(&self, artifact: &str, message: &str) {
        self.stage(artifact, message);
    }
}

/// Prints `==> artifact: stage` lines to stderr; ticks are indented.
#[derive(Debug, Default, Clone, Copy)]
pub struct StderrProgress;

impl Progress for StderrProgress {
    fn stage(&self, artifact: &str, message: &str) {
        eprintln!("==> {artifact}: {message}");
    }

    fn tick(&self, artifact: &str, message: &str) {
        eprintln!("    {artifact}: {message}");
    }
}

/// Discards all progress.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {
    fn stage(&self, _artifact: &str, _message: &str) {}
}
