//! One error enum per operation. Messages say what failed and what to do; the
//! `#[source]` chain carries git's own words.

use std::io;
use std::path::PathBuf;

use crate::git::{GitError, UntrustedError};

/// Creating a checkpoint failed; nothing was left behind.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("sandbox name {name:?} cannot name a folder; use text without '/', control characters or a leading '.'")]
    InvalidSandbox { name: String },
    #[error("{} is not inside a git repository with a work tree; run from a clone (bare repositories are not supported)", path.display())]
    NotARepository { path: PathBuf, source: GitError },
    #[error("the repository has no commits yet; commit something before starting a checkpoint")]
    NoCommits,
    #[error("{name:?} is not a valid branch name; see `git help check-ref-format`")]
    InvalidBranch { name: String },
    #[error("branch {name:?} already exists; pick another name or use an automatic one")]
    BranchExists { name: String },
    #[error("no free branch name for sandbox {sandbox:?}; name one explicitly")]
    NoFreeName { sandbox: String },
    #[error("sandbox {sandbox:?} already has a checkpoint in this repository; remove it first")]
    AlreadyExists { sandbox: String },
    #[error("{} already exists and is not empty; choose an empty or new folder for the clone", path.display())]
    DestinationNotEmpty { path: PathBuf },
    #[error("could not {what} {}", path.display())]
    Io { what: &'static str, path: PathBuf, source: io::Error },
    #[error("git failed while setting up the checkpoint")]
    Git(#[from] GitError),
}

/// Loading a saved checkpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("no checkpoint for sandbox {sandbox:?} in {}; `list` shows the ones that exist", repo.display())]
    NotFound { sandbox: String, repo: PathBuf },
    #[error("checkpoint record {} is unreadable; delete it and the sandbox's branch by hand", path.display())]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("could not {what} {}", path.display())]
    Io { what: &'static str, path: PathBuf, source: io::Error },
    #[error("{} is not inside a git repository", path.display())]
    NotARepository { path: PathBuf, source: GitError },
}

/// Bringing the sandbox's branch from its workspace into the host repository failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the workspace {} is gone; its commits can no longer be fetched", path.display())]
    WorkspaceMissing { path: PathBuf },
    #[error("the sandbox's workspace cannot be read safely")]
    Untrusted(#[from] UntrustedError),
    #[error("branch {branch:?} no longer exists in the workspace; the sandbox deleted or renamed it")]
    BranchGone { branch: String },
    #[error("could not fetch the sandbox's branch into the repository (is {host_ref} checked out?)")]
    Fetch { host_ref: String, source: GitError },
    #[error("git failed while reading the checkpoint")]
    Git(#[from] GitError),
}

/// Reviewing a checkpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("could not bring the sandbox's work in for review")]
    Sync(#[from] SyncError),
    #[error("the sandbox's workspace cannot be read safely")]
    Untrusted(#[from] UntrustedError),
    #[error("git failed while reviewing")]
    Git(#[from] GitError),
}

/// Collecting the sandbox's changes for `diff` failed.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("could not bring the sandbox's work in")]
    Sync(#[from] SyncError),
    #[error("the sandbox's workspace cannot be read safely")]
    Untrusted(#[from] UntrustedError),
    #[error("git failed while collecting the changes")]
    Git(#[from] GitError),
}

/// Applying the sandbox's commits to the current branch failed; the user's
/// branch and files are as they were.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("could not bring the sandbox's work in")]
    Sync(#[from] SyncError),
    #[error("your working tree has uncommitted changes ({}); commit or stash them first", files.join(", "))]
    DirtyTree { files: Vec<String> },
    #[error("HEAD is detached; check out the branch to apply to first")]
    Detached,
    #[error("{branch:?} has no commits that are not already on your branch")]
    NothingToApply { branch: String },
    #[error("applying {what} conflicts in {}; nothing was changed — merge {branch:?} by hand", files.join(", "))]
    Conflict { what: String, branch: String, files: Vec<String> },
    #[error(
        "the Git LFS content of {} is in neither your repository nor the sandbox's workspace (or fails its SHA-256 check); nothing was changed — fetch it into your repository (`git lfs fetch`) and apply again",
        files.join(", ")
    )]
    LfsContent { files: Vec<String> },
    #[error("submodule {path} would point at commit {commit}, which neither your submodule nor the sandbox's has; nothing was changed")]
    SubmoduleCommit { path: String, commit: String },
    #[error("the commits are applied, but submodule {path} could not be moved to its new commit; run `git submodule update` there")]
    SubmoduleCheckout { path: String, source: GitError },
    #[error("could not {what} {}", path.display())]
    Io { what: &'static str, path: PathBuf, source: io::Error },
    #[error("could not record the applied state in {}", path.display())]
    Record { path: PathBuf, source: io::Error },
    #[error("git failed while applying")]
    Git(#[from] GitError),
}

/// Removing a checkpoint failed or was refused.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("{}", lost.describe(sandbox))]
    WouldLoseWork { sandbox: String, lost: Box<crate::Lost> },
    #[error("branch {branch:?} is checked out in your repository; switch away from it first")]
    CheckedOut { branch: String },
    #[error("the sandbox's workspace cannot be read safely; pass force to delete it anyway")]
    Untrusted(#[from] UntrustedError),
    #[error("could not bring the sandbox's work in to check for unsaved commits; pass force to delete anyway")]
    Sync(#[from] SyncError),
    #[error("could not {what} {}", path.display())]
    Io { what: &'static str, path: PathBuf, source: io::Error },
    #[error("git failed while removing the checkpoint")]
    Git(#[from] GitError),
}
