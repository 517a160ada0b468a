//! Submodules on the way back. The workspace's submodules are clones of the
//! host's (`create` makes them), so commits the agent makes inside one exist
//! only in the workspace. `apply` fetches each commit a superproject commit
//! points at into the host's submodule repository (`.git/modules/<name>`,
//! kept reachable by `refs/moat/applied/<commit>`) *before* touching the
//! user's branch — refusing if a commit is nowhere to be found — and afterwards
//! moves the host's submodule to the new commit, as `git submodule update`
//! would. `rm` counts submodule commits the host does not have as work to lose.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use crate::checkpoint::Checkpoint;
use crate::error::ApplyError;
use crate::git::{changes_between, changes_in, nul_fields, Git, GitError, TreeChange};

/// Where commits fetched into a host submodule are kept from garbage collection.
const KEEP: &str = "refs/moat/applied/";
/// Submodules inside submodules inside…: followed this deep.
const MAX_DEPTH: usize = 8;
const GITLINK: &str = "160000";

/// Refs `fetch` made, to take back if the apply fails.
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    refs: Vec<(PathBuf, String)>,
}

impl Fetched {
    pub(crate) fn undo(&self) {
        for (dir, name) in &self.refs {
            if let Ok(git) = Git::at(dir) {
                let _ = git.run(["update-ref", "-d", name]);
            }
        }
    }
}

/// The host's submodule repository at `top/path`, if it is initialised there
/// (has its own `.git`) and no folder on the way is a symlink.
fn host_repo(top: &Path, path: &str) -> Option<PathBuf> {
    let mut dir = top.to_path_buf();
    for part in Path::new(path).components() {
        let Component::Normal(name) = part else { return None };
        dir.push(name);
        if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return None;
        }
    }
    std::fs::symlink_metadata(dir.join(".git")).is_ok().then_some(dir)
}

/// The host's object store for the submodule at `path`, if it is initialised.
pub(crate) fn host_objects(top: &Path, path: &str) -> Result<Option<PathBuf>, GitError> {
    let Some(dir) = host_repo(top, path) else { return Ok(None) };
    Ok(Some(Git::at(&dir)?.common_dir()?.join("objects")))
}

/// Gitlinks set by `changes`, each `(path, commit)` once.
fn gitlinks(changes: &[TreeChange]) -> Vec<(&str, &str)> {
    let mut seen = HashSet::new();
    changes
        .iter()
        .filter(|c| c.new_mode == GITLINK && seen.insert((&c.path, &c.new_sha)))
        .map(|c| (c.path.as_str(), c.new_sha.as_str()))
        .collect()
}

/// Brings every commit `changes` (of the host repository at `host_top`) point
/// a submodule at into the host's submodule, from Moat's scratch copy of the
/// workspace's submodule at the same path (`prefix` + path from the
/// workspace); then the same one level down.
pub(crate) fn fetch(
    cp: &Checkpoint,
    host_top: &Path,
    changes: &[TreeChange],
    prefix: &str,
    fetched: &mut Fetched,
) -> Result<(), ApplyError> {
    if prefix.matches('/').count() > MAX_DEPTH {
        return Ok(());
    }
    for (path, commit) in gitlinks(changes) {
        // Not initialised on the host: `git submodule update --init` will fetch
        // it from its URL; nothing local to bring it into.
        let Some(dir) = host_repo(host_top, path) else { continue };
        let host = Git::at(&dir)?;
        if host.has_commit(commit)? {
            continue;
        }
        let full = format!("{prefix}{path}");
        let missing = || ApplyError::SubmoduleCommit { path: full.clone(), commit: commit.to_string() };
        let Ok(ws) = cp.import(&full) else { return Err(missing()) };
        if !ws.git.has_commit(commit)? {
            return Err(missing());
        }
        let keep = format!("{KEEP}{commit}");
        let refspec = format!("+{commit}:{keep}");
        let args: [&std::ffi::OsStr; 10] = [
            "-c".as_ref(),
            "protocol.file.allow=always".as_ref(),
            "fetch".as_ref(),
            "--quiet".as_ref(),
            "--no-tags".as_ref(),
            "--no-recurse-submodules".as_ref(),
            "--no-write-fetch-head".as_ref(),
            "--".as_ref(),
            ws.dir.as_os_str(),
            refspec.as_ref(),
        ];
        host.run(args)?;
        fetched.refs.push((dir.clone(), keep));
        let head = host.run(["rev-parse", "--verify", "HEAD"])?;
        let inner = changes_in(&host, &[commit, "--not", head.trim()])?;
        fetch(cp, &dir, &inner, &format!("{full}/"), fetched)?;
    }
    Ok(())
}

/// Changed files in the host's submodules that `changes` move: updating them
/// would carry or clobber those edits.
pub(crate) fn dirty(host_top: &Path, changes: &[TreeChange]) -> Result<Vec<String>, GitError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (path, _) in gitlinks(changes) {
        let Some(dir) = host_repo(host_top, path).filter(|_| seen.insert(path)) else { continue };
        let status = Git::at(&dir)?.run(["status", "--porcelain=v1", "-z", "--untracked-files=no"])?;
        out.extend(nul_fields(&status).filter(|e| e.len() > 3).map(|e| format!("{path}/{}", &e[3..])));
    }
    Ok(out)
}

/// After the superproject moved from `old` to `new`: each initialised host
/// submodule that was at its old commit is checked out at its new one.
/// Returns the paths moved.
pub(crate) fn check_out(host_top: &Path, old: &str, new: &str, prefix: &str) -> Result<Vec<String>, ApplyError> {
    let mut moved = Vec::new();
    if prefix.matches('/').count() > MAX_DEPTH {
        return Ok(moved);
    }
    let parent = Git::at(host_top)?;
    for c in changes_between(&parent, old, new)? {
        if c.old_mode != GITLINK || c.new_mode != GITLINK {
            continue;
        }
        let Some(dir) = host_repo(host_top, &c.path) else { continue };
        let host = Git::at(&dir)?;
        let head = host.run(["rev-parse", "--verify", "HEAD"]).unwrap_or_default();
        if head.trim() != c.old_sha || !host.has_commit(&c.new_sha)? {
            continue; // the user had moved it elsewhere, or it is not here: leave it
        }
        let full = format!("{prefix}{}", c.path);
        host.run(["checkout", "--quiet", "--detach", &c.new_sha])
            .map_err(|source| ApplyError::SubmoduleCheckout { path: full.clone(), source })?;
        moved.push(full.clone());
        moved.extend(check_out(&dir, &c.old_sha, &c.new_sha, &format!("{full}/"))?);
    }
    Ok(moved)
}

/// Commits in the workspace's submodules (`subs`, paths relative to the
/// workspace, parents first) that the host's submodules do not have:
/// `(path@short id, subject)`.
pub(crate) fn unsaved(cp: &Checkpoint) -> Result<Vec<(String, String)>, GitError> {
    let (top, subs, base) = (cp.repo(), &cp.state.submodules, cp.base());
    let mut out = Vec::new();
    for path in subs {
        let Ok(imported) = cp.import(path) else { continue };
        let inside = &imported.git;
        let head = imported.head_commit().ok().flatten().map(String::from);
        let mut args = vec!["log", "--format=%H %h %s", "--branches", "--not", "--remotes"];
        if let Some(head) = head.as_deref() {
            args.insert(2, head);
        }
        let base = base_of(top, base, subs, path);
        if let Some(b) = base.as_deref().filter(|b| inside.has_commit(b).unwrap_or(false)) {
            args.push(b);
        }
        let log = inside.run(&args)?;
        let candidates: Vec<(&str, &str, &str)> = log
            .lines()
            .filter_map(|l| {
                let (full, rest) = l.split_once(' ')?;
                let (short, subject) = rest.split_once(' ').unwrap_or((rest, ""));
                Some((full, short, subject))
            })
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let present: HashSet<String> = match host_repo(top, path) {
            Some(dir) => {
                let input: String = candidates.iter().map(|c| format!("{}\n", c.0)).collect();
                let out = Git::at(&dir)?.run_bytes(["cat-file", "--batch-check"], input.as_bytes())?;
                String::from_utf8_lossy(&out)
                    .lines()
                    .filter(|l| l.split(' ').nth(1) == Some("commit"))
                    .filter_map(|l| l.split(' ').next().map(String::from))
                    .collect()
            }
            None => HashSet::new(),
        };
        for (full, short, subject) in candidates.into_iter().rev() {
            if !present.contains(full) {
                out.push((format!("{path}@{short}"), subject.to_string()));
            }
        }
    }
    Ok(out)
}

/// The commit the submodule at `path` was checked out at when the checkpoint
/// was made: its gitlink in `base`, or in its parent submodule's base.
fn base_of(top: &Path, base: &str, subs: &[String], path: &str) -> Option<String> {
    let parent = subs.iter().filter(|p| path.starts_with(&format!("{p}/"))).max_by_key(|p| p.len());
    let (dir, commit, rel) = match parent {
        Some(p) => (top.join(p), base_of(top, base, subs, p)?, &path[p.len() + 1..]),
        None => (top.to_path_buf(), base.to_string(), path),
    };
    let out = Git::at(&dir).ok()?.run(["rev-parse", "--verify", "--quiet", &format!("{commit}:{rel}")]).ok()?;
    Some(out.trim().to_string())
}
