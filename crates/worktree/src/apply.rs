//! Bringing the sandbox's commits onto the user's current branch.

use crate::checkpoint::Checkpoint;
use crate::error::ApplyError;
use crate::git::{nul_fields, Git};
use crate::state;

/// What [`Checkpoint::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// How many of the sandbox's commits were brought over.
    pub commits: usize,
    /// Whether the branch was simply fast-forwarded.
    pub fast_forward: bool,
    /// The user's branch tip afterwards.
    pub head: String,
}

impl Checkpoint {
    /// Syncs, then brings the sandbox's commits onto the current branch: a
    /// fast-forward when possible, otherwise a cherry-pick of each commit, or
    /// with `squash` a single commit. Refuses a dirty tree; on a conflict it
    /// aborts and leaves the branch, index and files exactly as they were.
    /// No hook, filter or merge driver runs.
    pub fn apply(&mut self, squash: bool) -> Result<Applied, ApplyError> {
        let tip = self.sync()?;
        let host = Git::at(self.repo())?;
        let head_ref = host.run(["symbolic-ref", "--quiet", "HEAD"]).map_err(|_| ApplyError::Detached)?;
        let head_ref = head_ref.trim().to_string();
        let dirty = dirty(&host)?;
        if !dirty.is_empty() {
            return Err(ApplyError::DirtyTree { files: dirty });
        }
        let head = host.run(["rev-parse", "HEAD"])?.trim().to_string();
        let merge_base = host.run(["merge-base", "HEAD", &tip])?.trim().to_string();
        let range = format!("{merge_base}..{tip}");
        let subjects: Vec<String> =
            host.run(["log", "--reverse", "--format=%s", &range])?.lines().map(String::from).collect();
        if subjects.is_empty() {
            return Err(ApplyError::NothingToApply { branch: self.branch().to_string() });
        }
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
            let what =
                if squash { "the squashed changes".to_string() } else { format!("{} commit(s)", subjects.len()) };
            return Err(ApplyError::Conflict { what, branch: self.branch().to_string(), files });
        }
        self.state.applied_tip = Some(tip);
        let path = self.state_path();
        state::save(&path, &self.state).map_err(|source| ApplyError::Record { path, source })?;
        let head = host.run(["rev-parse", "HEAD"])?.trim().to_string();
        Ok(Applied { commits: subjects.len(), fast_forward, head })
    }
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
/// to overwrite them).
fn dirty(host: &Git) -> Result<Vec<String>, crate::git::GitError> {
    let out = host.run(["status", "--porcelain=v1", "-z", "--untracked-files=no", "--ignore-submodules=dirty"])?;
    Ok(nul_fields(&out).filter(|e| e.len() > 3).map(|e| e[3..].to_string()).collect())
}

fn conflicted(host: &Git) -> Result<Vec<String>, crate::git::GitError> {
    let out = host.run(["diff", "--no-ext-diff", "--name-only", "-z", "--diff-filter=U"])?;
    Ok(nul_fields(&out).map(String::from).collect())
}

/// Puts branch, index and files back to `head` after a failed apply.
fn restore(host: &Git, head_ref: &str, head: &str, squash: bool) {
    if !squash {
        let _ = host.run(["cherry-pick", "--abort"]);
    }
    // The tree was clean before we started, so a hard reset to the old head only
    // undoes what the failed apply wrote.
    let _ = host.run(["update-ref", head_ref, head]);
    let _ = host.run(["reset", "--quiet", "--hard", head]);
}
