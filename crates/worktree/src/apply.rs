//! Bringing the sandbox's commits onto the user's current branch.

use std::path::Path;

use crate::checkpoint::Checkpoint;
use crate::error::ApplyError;
use crate::git::{changes_between, changes_in, nul_fields, Git, GitError, TreeChange};
use crate::lfs::Staged;
use crate::submodules::{self, Fetched};
use crate::{lfs, state};

/// What [`Checkpoint::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// How many of the sandbox's commits were brought over.
    pub commits: usize,
    /// Whether the branch was simply fast-forwarded.
    pub fast_forward: bool,
    /// The user's branch tip afterwards.
    pub head: String,
    /// Git LFS objects copied (verified) from the workspace into the host's store.
    pub lfs_objects: usize,
    /// LFS files written with their content in place of a pointer file: those
    /// the apply changed (only when the user's git has LFS's smudge filter set
    /// up) and those that held content before and were pointers meanwhile.
    pub lfs_files: usize,
    /// LFS files left as pointers because writing their content failed; `git
    /// lfs checkout` fixes them.
    pub lfs_pointers: Vec<String>,
    /// Host submodules moved to the commit the applied work points them at.
    pub submodules: Vec<String>,
}

impl Checkpoint {
    /// Syncs, then brings the sandbox's commits onto the current branch: a
    /// fast-forward when possible, otherwise a cherry-pick of each commit, or
    /// with `squash` a single commit. Refuses a dirty tree; on a conflict it
    /// aborts and leaves the branch, index and files exactly as they were.
    /// No hook, filter or merge driver runs.
    ///
    /// Before the branch moves, everything the commits need is brought in: Git
    /// LFS content they point at (from the workspace's store, verified by
    /// SHA-256) and commits of submodules they point at (fetched into the host's
    /// submodule repositories) — refusing if any is missing. Afterwards the
    /// host's submodules are moved to their new commits and LFS files get their
    /// content, as the user's own `git submodule update` and LFS checkout would.
    pub fn apply(&mut self, squash: bool) -> Result<Applied, ApplyError> {
        let tip = self.sync()?;
        let top = self.repo().to_path_buf();
        let ws = self.workspace().to_path_buf();
        let host = Git::at(&top)?;
        let head_ref = host.run(["symbolic-ref", "--quiet", "HEAD"]).map_err(|_| ApplyError::Detached)?;
        let head_ref = head_ref.trim().to_string();
        let head = host.run(["rev-parse", "HEAD"])?.trim().to_string();
        let merge_base = host.run(["merge-base", "HEAD", &tip])?.trim().to_string();
        let range = format!("{merge_base}..{tip}");
        let subjects: Vec<String> =
            host.run(["log", "--reverse", "--format=%s", &range])?.lines().map(String::from).collect();
        let changes = changes_in(&host, &[&tip, "--not", &merge_base])?;
        let (mut dirty, stale) = dirty(&host, &top)?;
        dirty.extend(submodules::dirty(&top, &changes)?);
        if !dirty.is_empty() {
            return Err(ApplyError::DirtyTree { files: dirty });
        }
        if subjects.is_empty() {
            return Err(ApplyError::NothingToApply { branch: self.branch().to_string() });
        }
        let store = lfs::host_store(&host)?;
        let lfs_objects = bring_lfs(&host, &store, &ws, &tip, &changes)?;
        let mut fetched = Fetched::default();
        if let Err(e) = submodules::fetch(self, &top, &changes, "", &mut fetched) {
            fetched.undo();
            return Err(e);
        }
        let parked = park(&host, &top, &store, &stale).inspect_err(|_| fetched.undo())?;

        let fast_forward = !squash && merge_base == head;
        let outcome = if fast_forward {
            host.run(["merge", "--quiet", "--ff-only", &tip]).map(drop)
        } else if squash {
            let message = squash_message(self, &subjects);
            host.run(["merge", "--quiet", "--squash", "--no-commit", &tip])
                .and_then(|_| host.run(["commit", "--quiet", "--no-verify", "-m", &message]).map(drop))
        } else {
            host.run(["cherry-pick", "--allow-empty", &range]).map(drop)
        };
        if outcome.is_err() {
            let files = conflicted(&host)?;
            restore(&host, &head_ref, &head, squash);
            fetched.undo();
            materialize_lfs(&host, &top, &store, &parked, false)?;
            let what =
                if squash { "the squashed changes".to_string() } else { format!("{} commit(s)", subjects.len()) };
            return Err(ApplyError::Conflict { what, branch: self.branch().to_string(), files });
        }
        self.state.applied_tip = Some(tip);
        let path = self.state_path();
        state::save(&path, &self.state).map_err(|source| ApplyError::Record { path, source })?;
        let new_head = host.run(["rev-parse", "HEAD"])?.trim().to_string();
        let mut changed = Vec::new();
        if lfs::smudges(&host) {
            changed = changes_between(&host, &head, &new_head)?
                .into_iter()
                .filter(|c| c.new_mode.starts_with("100") && !parked.contains(&c.path))
                .map(|c| c.path)
                .collect();
        }
        let (mut lfs_files, mut lfs_pointers) = materialize_lfs(&host, &top, &store, &changed, true)?;
        let (again, left) = materialize_lfs(&host, &top, &store, &parked, false)?;
        lfs_files += again;
        lfs_pointers.extend(left);
        let submodules = submodules::check_out(&top, &head, &new_head, "")?;
        Ok(Applied {
            commits: subjects.len(),
            fast_forward,
            head: new_head,
            lfs_objects,
            lfs_files,
            lfs_pointers,
            submodules,
        })
    }
}

/// Copies into the host's LFS store the content of every pointer `changes`
/// add that the host lacks; refuses, naming the files, if the workspace lacks
/// it too (or it fails verification) for a path LFS tracks.
fn bring_lfs(host: &Git, store: &Path, ws: &Path, tip: &str, changes: &[TreeChange]) -> Result<usize, ApplyError> {
    let mut blobs: Vec<String> =
        changes.iter().filter(|c| c.new_mode.starts_with("100")).map(|c| c.new_sha.clone()).collect();
    blobs.sort();
    blobs.dedup();
    let (mut copied, mut missing) = (0, Vec::new());
    for (sha, pointer, _) in lfs::pointers(host, &blobs)? {
        if lfs::host_has(store, &pointer) {
            continue;
        }
        match lfs::import(store, ws, &pointer, &lfs::workspace_object(&pointer.oid)) {
            Ok(true) => copied += 1,
            Ok(false) => missing.extend(changes.iter().filter(|c| c.new_sha == sha).map(|c| c.path.clone())),
            Err(source) => {
                return Err(ApplyError::Io { what: "copy Git LFS content into", path: store.into(), source })
            }
        }
    }
    missing.sort();
    missing.dedup();
    // A file that merely looks like a pointer is not LFS's business.
    let missing = lfs::lfs_paths(host, &missing, Some(tip))?;
    if !missing.is_empty() {
        return Err(ApplyError::LfsContent { files: missing });
    }
    Ok(copied)
}

/// Gives LFS files in the index their content in place of the pointer file
/// git wrote: `paths` the apply changed (`tracked_only`: only where the
/// attributes select LFS), or files [`park`] turned into pointers. Returns how
/// many were written and which stayed pointers.
fn materialize_lfs(
    host: &Git,
    top: &Path,
    store: &Path,
    paths: &[String],
    tracked_only: bool,
) -> Result<(usize, Vec<String>), GitError> {
    let paths = if tracked_only { lfs::lfs_paths(host, paths, None)? } else { paths.to_vec() };
    let (mut written, mut left) = (Vec::new(), Vec::new());
    for staged in lfs::index_pointers(host, &paths)? {
        match lfs::materialize(top, store, &staged.path, &staged.pointer, &staged.bytes) {
            Ok(true) => written.push(staged),
            Ok(false) if staged.pointer.extended => {}
            Ok(false) | Err(_) => left.push(staged.path),
        }
    }
    lfs::unstat(host, &written)?;
    Ok((written.len(), left))
}

/// Git without LFS's clean filter cannot tell that an LFS file holding its
/// content is unchanged when its index entry's stat data does not match (it
/// is racy, or [`materialize_lfs`] wrote it), so it would refuse to merge over
/// it. For the duration of the apply such files hold their pointer text again
/// (re-read into the index: same blob); their content is in the host's store
/// first, and [`materialize_lfs`] puts it back.
fn park(host: &Git, top: &Path, store: &Path, stale: &[Staged]) -> Result<Vec<String>, ApplyError> {
    let mut parked = Vec::new();
    for staged in stale {
        let in_store = lfs::host_has(store, &staged.pointer) || {
            // The file is the content (verified): store it, as LFS's clean filter would.
            lfs::import(store, top, &staged.pointer, &staged.path).map_err(|source| ApplyError::Io {
                what: "copy Git LFS content into",
                path: store.into(),
                source,
            })?
        };
        if !in_store || lfs::write_pointer(top, &staged.path, &staged.bytes).is_err() {
            let _ = materialize_lfs(host, top, store, &parked, false);
            return Err(ApplyError::DirtyTree { files: vec![staged.path.clone()] });
        }
        parked.push(staged.path.clone());
    }
    lfs::restat(host, &parked)?;
    Ok(parked)
}

fn squash_message(cp: &Checkpoint, subjects: &[String]) -> String {
    let mut msg = format!("{} (sandbox {})\n\n", subjects.last().map(String::as_str).unwrap_or(""), cp.sandbox());
    if subjects.len() > 1 {
        msg = format!("Apply {} commits from sandbox {}\n\n", subjects.len(), cp.sandbox());
    }
    for s in subjects {
        msg.push_str(&format!("* {s}\n"));
    }
    msg
}

/// Tracked files with changes (untracked files are left to git, which refuses
/// to overwrite them), and apart the files git reports modified only because it
/// could not run the LFS clean filter: they hold exactly their pointer's
/// content, with the pointer's bytes.
fn dirty(host: &Git, top: &Path) -> Result<(Vec<String>, Vec<Staged>), GitError> {
    let out = host.run(["status", "--porcelain=v1", "-z", "--untracked-files=no", "--ignore-submodules=dirty"])?;
    let (mut files, mut suspects) = (Vec::new(), Vec::new());
    for entry in nul_fields(&out).filter(|e| e.len() > 3) {
        let path = entry[3..].to_string();
        if &entry[..2] == " M" {
            suspects.push(path);
        } else {
            files.push(path);
        }
    }
    let unchanged = lfs::unchanged(host, top, &suspects)?;
    files.extend(suspects.into_iter().filter(|p| !unchanged.iter().any(|u| &u.path == p)));
    Ok((files, unchanged))
}

fn conflicted(host: &Git) -> Result<Vec<String>, GitError> {
    let out = host.run(["diff", "--no-ext-diff", "--name-only", "-z", "--diff-filter=U"])?;
    Ok(nul_fields(&out).map(String::from).collect())
}

/// Puts branch, index and files back to `head` after a failed apply.
fn restore(host: &Git, head_ref: &str, head: &str, squash: bool) {
    if !squash {
        let _ = host.run(["cherry-pick", "--abort"]);
    }
    // The tree was clean before we started (LFS files git cannot compare are
    // parked as pointers), so a hard reset to the old head only undoes what the
    // failed apply wrote.
    let _ = host.run(["update-ref", head_ref, head]);
    let _ = host.run(["reset", "--quiet", "--hard", head]);
}
