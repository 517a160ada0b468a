//! Review checkpoints for sandboxes (`--branch`, `--clone`), through `moat_worktree`.
//!
//! The sandbox's workspace becomes the checkpoint's clone, and the host
//! repository's object stores are shared read-only at their paths so git works in
//! the guest without a byte of the host's `.git` being writable there.

use std::path::Path;

use moat_worktree::{BranchName, Checkpoint};

use crate::manager::ManagerError;
use crate::spec::{CreateRequest, Mount, SandboxSpec};

/// Makes `spec` work on a new checkpoint of its workspace's repository if `req`
/// asks for one. Clone mode puts the clone at `clone_dir`.
pub fn attach(
    spec: &mut SandboxSpec,
    req: &CreateRequest,
    clone_dir: &Path,
) -> Result<Option<Checkpoint>, ManagerError> {
    if req.branch.is_none() && !req.clone {
        return Ok(None);
    }
    let name = match req.branch.as_deref() {
        None | Some("auto") => BranchName::Auto,
        Some(n) => BranchName::Named(n.to_string()),
    };
    let repo = spec.workspace.clone();
    let checkpoint = if req.clone {
        Checkpoint::create_clone(&repo, name, &spec.name, clone_dir)
    } else {
        Checkpoint::create_branch(&repo, name, &spec.name)
    }
    .map_err(|e| ManagerError::Checkpoint(Box::new(e)))?;
    spec.workspace = checkpoint.workspace().to_path_buf();
    spec.checkpoint_repo = Some(repo);
    for path in checkpoint.guest_read_only_paths() {
        spec.mounts.push(Mount { path: path.clone(), read_only: true });
    }
    Ok(Some(checkpoint))
}

/// The checkpoint of a sandbox, if it has one.
pub fn open(spec: &SandboxSpec) -> Result<Option<Checkpoint>, ManagerError> {
    let Some(repo) = &spec.checkpoint_repo else { return Ok(None) };
    Checkpoint::open(repo, &spec.name).map(Some).map_err(|e| ManagerError::Checkpoint(Box::new(e)))
}

/// Removes a sandbox's checkpoint; without `force`, refuses (saying what would be
/// lost) when it holds work that is on no other branch.
pub fn remove(spec: &SandboxSpec, force: bool) -> Result<(), ManagerError> {
    match open(spec) {
        Ok(Some(c)) => c.remove(force).map_err(|e| ManagerError::Checkpoint(Box::new(e))),
        Ok(None) => Ok(()),
        // Already gone (e.g. removed by hand): nothing to lose.
        Err(_) if force => Ok(()),
        Err(e) => Err(e),
    }
}

/// Refuses, without changing anything, if removing would lose work.
pub fn check_removable(spec: &SandboxSpec) -> Result<(), ManagerError> {
    let Some(c) = open(spec).ok().flatten() else { return Ok(()) };
    let lost = c.unsaved().map_err(|e| ManagerError::Checkpoint(Box::new(e)))?;
    if lost.is_empty() {
        Ok(())
    } else {
        // Let the library phrase what would be lost.
        c.remove(false).map_err(|e| ManagerError::Checkpoint(Box::new(e)))
    }
}
