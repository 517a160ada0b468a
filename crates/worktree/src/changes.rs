//! What `moat diff` shows: the branch's commits, and what the workspace holds
//! that no commit does yet (staged, unstaged and untracked files, also inside
//! nested repositories) — the same files [`Checkpoint::review`] flags and
//! [`Checkpoint::remove`] refuses to lose.

use std::fmt;
use std::path::Path;
use std::process::Command;

use crate::checkpoint::Checkpoint;
use crate::error::{DiffError, SyncError};
use crate::git::{nul_fields, user_pager, Git, GitError, UntrustedError};
use crate::review::nested_repositories;
use crate::scratch::{Imported, WorkTree};

/// Everything the sandbox changed against its base, in three parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// The branch the commits are on.
    pub branch: String,
    /// The commit the sandbox started from.
    pub base: String,
    /// `git diff <base>...<branch>`: what `apply` brings over.
    pub committed: String,
    /// Staged and unstaged changes against `HEAD` in the workspace and in each
    /// repository inside it (paths prefixed with the repository's folder).
    pub uncommitted: String,
    /// Untracked files, relative to the workspace (as `git status --short` lists them).
    pub untracked: Vec<String>,
}

impl Changes {
    /// Whether the workspace holds nothing that is not committed.
    pub fn is_committed(&self) -> bool {
        self.uncommitted.is_empty() && self.untracked.is_empty()
    }
}

impl fmt::Display for Changes {
    /// Plain text holding the sandbox's bytes as they are: a terminal needs
    /// them escaped first (the CLI does).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = &self.base[..self.base.len().min(12)];
        writeln!(f, "# moat: committed on {} since {short} (what `apply` brings over)", self.branch)?;
        write!(f, "{}", if self.committed.is_empty() { "(no commits)\n" } else { &self.committed })?;
        writeln!(f, "# moat: uncommitted changes in the workspace, staged and unstaged (`apply` leaves these)")?;
        write!(f, "{}", if self.uncommitted.is_empty() { "(none)\n" } else { &self.uncommitted })?;
        writeln!(f, "# moat: untracked files in the workspace (`apply` leaves these)")?;
        if self.untracked.is_empty() {
            writeln!(f, "(none)")?;
        }
        for path in &self.untracked {
            writeln!(f, "?? {path}")?;
        }
        Ok(())
    }
}

impl Checkpoint {
    /// Syncs, then collects the committed changes (from the host's copy of the
    /// branch) and everything uncommitted in the workspace (read through Moat's
    /// scratch copy of each repository, the files as plain data). No colour,
    /// diff driver, textconv or filter.
    pub fn changes(&self) -> Result<Changes, DiffError> {
        match self.sync() {
            Ok(_) | Err(SyncError::BranchGone { .. }) | Err(SyncError::WorkspaceMissing { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let host = Git::at(self.repo())?;
        let range = format!("{}...{}", self.base(), self.host_ref());
        let committed = host.run(["diff", "--no-color", "--no-ext-diff", "--no-textconv", &range])?;
        let ws = self.workspace();
        let (mut uncommitted, mut untracked) = (String::new(), Vec::new());
        if ws.exists() {
            for (rel, imported) in repositories(self)? {
                let view = WorkTree::open(&imported, &ws.join(&rel))?;
                let same = lfs_unchanged(&view.git, &ws.join(&rel))?;
                uncommitted.push_str(&patch(&view.git, imported.head_commit()?, &rel, &same)?);
            }
            untracked = entries(self)?.into_iter().filter(|e| e.code == "??").map(|e| e.path).collect();
        }
        Ok(Changes {
            branch: self.branch().to_string(),
            base: self.base().to_string(),
            committed,
            uncommitted,
            untracked,
        })
    }
}

/// The workspace's repository and every repository inside it, imported into
/// Moat's scratch copies: `(path relative to the workspace, import)`. A
/// nested repository that cannot be read safely is skipped (review reports it);
/// the workspace's own is required.
fn repositories(cp: &Checkpoint) -> Result<Vec<(String, Imported)>, UntrustedError> {
    let ws = cp.workspace();
    let mut out = Vec::new();
    for repo in nested_repositories(ws, true) {
        let rel = relative(ws, &repo);
        match cp.import(&rel) {
            Ok(imported) => out.push((rel, imported)),
            Err(e) if rel.is_empty() => return Err(e),
            Err(_) => continue,
        }
    }
    Ok(out)
}

/// `git diff <head>` (or against the empty tree before the first commit),
/// with paths shown under `rel/`, leaving out the files in `same`.
fn patch(git: &Git, head: Option<&str>, rel: &str, same: &[String]) -> Result<String, GitError> {
    let head = match head {
        Some(head) => head.to_string(),
        None => git.run(["hash-object", "-t", "tree", "/dev/null"])?.trim().to_string(),
    };
    let dir = if rel.is_empty() { String::new() } else { format!("{rel}/") };
    let (src, dst) = (format!("--src-prefix=a/{dir}"), format!("--dst-prefix=b/{dir}"));
    let mut args = vec!["diff", "--no-color", "--no-ext-diff", "--no-textconv", "--ignore-submodules=dirty"];
    args.extend([src.as_str(), dst.as_str(), head.as_str()]);
    let excluded: Vec<String> = same.iter().map(|p| format!(":(exclude,literal){p}")).collect();
    if !excluded.is_empty() {
        args.extend(["--", ":/"]);
        args.extend(excluded.iter().map(String::as_str));
    }
    git.run(args)
}

/// Files git without the clean filter reports modified that hold exactly the
/// content of the LFS pointer their index entry records: not changes.
fn lfs_unchanged(git: &Git, repo: &Path) -> Result<Vec<String>, GitError> {
    let out = git.run(["diff-files", "-z", "--name-only", "--diff-filter=M"])?;
    let suspects: Vec<String> = nul_fields(&out).map(String::from).collect();
    Ok(crate::lfs::unchanged(git, repo, &suspects)?.into_iter().map(|s| s.path).collect())
}

/// One `git status --porcelain` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The two status letters (`??` untracked, ` M`, `A `…).
    pub code: String,
    /// Relative to the workspace.
    pub path: String,
}

/// Modified, staged and untracked files of the workspace and of every
/// repository inside it, each read through Moat's scratch copy (an LFS file
/// holding its pointer's content is not modified).
pub(crate) fn entries(cp: &Checkpoint) -> Result<Vec<Entry>, UntrustedError> {
    let ws = cp.workspace();
    let mut out = Vec::new();
    for (rel, imported) in repositories(cp)? {
        let repo = ws.join(&rel);
        let view = WorkTree::open(&imported, &repo)?;
        let same = lfs_unchanged(&view.git, &repo)?;
        for mut entry in status(&view.git)?.into_iter().filter(|e| !(e.code == " M" && same.contains(&e.path))) {
            if !rel.is_empty() {
                entry.path = format!("{rel}/{}", entry.path);
            }
            out.push(entry);
        }
    }
    Ok(out)
}

/// `git status` entries, without recursing into submodules.
fn status(git: &Git) -> Result<Vec<Entry>, GitError> {
    let out = git.run(["status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignore-submodules=dirty"])?;
    let mut entries = Vec::new();
    let mut fields = nul_fields(&out);
    while let Some(entry) = fields.next() {
        if entry.len() < 4 {
            continue;
        }
        if entry.starts_with('R') || entry.starts_with('C') {
            fields.next(); // the rename's source
        }
        entries.push(Entry { code: entry[..2].to_string(), path: entry[3..].to_string() });
    }
    Ok(entries)
}

fn relative(ws: &Path, repo: &Path) -> String {
    repo.strip_prefix(ws).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The user's pager, run the way git runs one (`sh -c`, `LESS=FRX` and `LV=-c`
/// unless set), for showing [`Changes`] on a terminal: `$GIT_PAGER`,
/// `core.pager` from the user's global or system config, `$PAGER`, or `less`.
/// `None` when that is `cat` or empty (print directly). A repository's own
/// config is never consulted.
pub fn pager_command() -> Option<Command> {
    let pager = user_pager();
    if pager.trim().is_empty() || pager.trim() == "cat" {
        return None;
    }
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(pager);
    for (k, v) in [("LESS", "FRX"), ("LV", "-c")] {
        if std::env::var_os(k).is_none() {
            cmd.env(k, v);
        }
    }
    Some(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pager_is_the_users_and_cat_means_none() {
        // The only unit test reading these variables.
        std::env::set_var("GIT_PAGER", "cat");
        assert!(pager_command().is_none());
        std::env::set_var("GIT_PAGER", "less -S");
        let cmd = pager_command().unwrap();
        assert_eq!(cmd.get_program(), "sh");
        assert_eq!(cmd.get_args().collect::<Vec<_>>(), ["-c", "less -S"]);
        std::env::remove_var("GIT_PAGER");
    }
}
