//! Checkpoints against real git repositories in temporary folders.

mod apply;
mod diff;
mod guest_config;
mod lfs;
mod lifecycle;
mod remove;
mod safety;
mod submodules;
mod tidy;

use std::path::Path;

use moat_worktree::test_utils::git;

/// Whether `refs` exists in the repository at `repo`.
pub fn has_ref(repo: &Path, name: &str) -> bool {
    moat_worktree::test_utils::git_command(repo)
        .args(["rev-parse", "--verify", "--quiet", name])
        .output()
        .unwrap()
        .status
        .success()
}

/// `git status --porcelain` of `repo`.
pub fn status(repo: &Path) -> String {
    git(repo, &["-c", "core.hooksPath=/dev/null", "status", "--porcelain"])
}

/// Everything [`Checkpoint::diff_stream`] writes.
pub fn streamed_diff(cp: &moat_worktree::Checkpoint) -> String {
    use std::io::Read;
    let mut out = cp.diff_stream().unwrap();
    let mut text = String::new();
    out.read_to_string(&mut text).unwrap();
    out.finish().unwrap();
    text
}
