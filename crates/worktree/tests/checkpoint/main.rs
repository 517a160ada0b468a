//! Checkpoints against real git repositories in temporary folders.

mod apply;
mod diff;
mod lfs;
mod lifecycle;
mod remove;
mod safety;
mod submodules;

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
