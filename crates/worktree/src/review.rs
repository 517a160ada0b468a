//! What deserves a human look before the sandbox's work is applied, including
//! what `git diff` does not show.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::checkpoint::Checkpoint;
use crate::error::{ReviewError, SyncError};
use crate::git::{changes_between, changes_in, Git, GitError, TreeChange, UntrustedError};
use crate::{lfs, state};

/// Why a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Concern {
    /// A git hook exists or changed: it runs when someone uses git there.
    Hook,
    /// Git config changed (it can name programs git runs).
    GitConfig,
    /// CI configuration: runs with CI's secrets when pushed.
    Ci,
    /// Build recipes (`Makefile`, `*.mk`, `build.rs`, `.cargo/config*`…) run on build.
    Build,
    /// `package.json` scripts, run by `npm install`/`run`.
    PackageScripts,
    /// Editor settings (`.vscode/`, `.idea/`) can run tasks on open.
    Editor,
    /// `.envrc`, `.devcontainer/`, pre-commit configs: run when entering or opening.
    DevEnvironment,
    /// `.gitattributes`, `.gitmodules`, `.lfsconfig`: select git drivers and sources.
    GitMetadata,
    /// A new file mode 100755.
    Executable,
    /// A committed symlink pointing outside the repository.
    ExternalSymlink,
    /// A submodule pointer changed.
    Submodule,
    /// A repository inside the workspace that is not one of its submodules.
    NestedRepository,
    /// Not committed: `apply` will not bring it over.
    Untracked,
    /// Modified but not committed: `apply` will not bring it over.
    Uncommitted,
    /// A Git LFS pointer whose content neither repository has: `apply` refuses.
    LfsMissing,
}

/// One thing to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub concern: Concern,
    /// Path relative to the workspace, or an absolute path for host-side files.
    pub path: String,
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {} — {}", self.concern, self.path, self.detail)
    }
}

/// Everything [`Checkpoint::review`] found.
#[derive(Debug, Clone, Default)]
pub struct Review {
    pub findings: Vec<Finding>,
}

impl Review {
    /// Whether nothing needs a look.
    pub fn is_empty(&self) -> bool {
        self.findings.is_empty()
    }

    /// Findings of one kind.
    pub fn of(&self, concern: Concern) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.concern == concern)
    }

    fn add(&mut self, concern: Concern, path: impl Into<String>, detail: impl Into<String>) {
        self.findings.push(Finding { concern, path: path.into(), detail: detail.into() });
    }
}

impl Checkpoint {
    /// Syncs, then lists the changes that deserve a human look: sensitive files in
    /// the committed changes, new executables, escaping symlinks, submodule
    /// pointers; uncommitted and untracked files; hooks and config of the
    /// workspace's `.git`, of nested repositories, and changes to the host
    /// repository's hooks and config since the checkpoint was made.
    pub fn review(&self) -> Result<Review, ReviewError> {
        let mut review = Review::default();
        let ws = self.workspace().to_path_buf();
        match self.sync() {
            Ok(_) | Err(SyncError::BranchGone { .. }) | Err(SyncError::WorkspaceMissing { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let host = Git::at(self.repo())?;
        committed(self, &host, &mut review)?;
        if ws.exists() {
            uncommitted(self, &mut review)?;
            let git_dir = ws.join(".git");
            for hook in state::hook_stamps(&git_dir.join("hooks")) {
                review.add(Concern::Hook, format!(".git/hooks/{}", hook.name), "hook in the workspace's repository");
            }
            let now = state::read_config(&git_dir.join("config"));
            config_change(&mut review, ".git/config", &self.state.workspace_config, &now);
            nested(self, &ws, &mut review);
        }
        let common = host.common_dir()?;
        let hooks = state::hook_stamps(&common.join("hooks"));
        for hook in hooks.iter().filter(|h| !self.state.host_hooks.contains(h)) {
            let path = common.join("hooks").join(&hook.name);
            review.add(
                Concern::Hook,
                path.display().to_string(),
                "host repository hook added or changed since the checkpoint",
            );
        }
        let now = state::read_config(&common.join("config"));
        config_change(&mut review, &common.join("config").display().to_string(), &self.state.host_config, &now);
        Ok(review)
    }
}

/// Findings in the commits between the base and the branch tip.
fn committed(cp: &Checkpoint, host: &Git, review: &mut Review) -> Result<(), GitError> {
    let Ok(tip) = host.run(["rev-parse", "--verify", "--quiet", cp.host_ref()]) else { return Ok(()) };
    let tip = tip.trim();
    let from = host.run(["merge-base", cp.base(), tip])?.trim().to_string();
    lfs_missing(cp, host, tip, &from, review)?;
    for change in changes_between(host, &from, tip)? {
        let TreeChange { old_mode, new_mode, old_sha, new_sha, status, path } = &change;
        let (old_mode, new_mode, path) = (old_mode.as_str(), new_mode.as_str(), path.as_str());
        if status == "D" {
            continue;
        }
        if let Some((concern, why)) = classify(path) {
            if concern != Concern::PackageScripts || scripts_changed(host, old_sha, new_sha) {
                review.add(concern, path, why);
            }
        }
        match new_mode {
            "100755" if old_mode != "100755" => review.add(Concern::Executable, path, "new executable file"),
            "120000" => {
                let target = host.run(["cat-file", "blob", new_sha.as_str()])?;
                if escapes(path, &target) {
                    review.add(Concern::ExternalSymlink, path, format!("symlink to {target} (outside the repository)"));
                }
            }
            "160000" => review.add(Concern::Submodule, path, format!("submodule now at {new_sha}")),
            _ => {}
        }
    }
    Ok(())
}

/// Files in no commit, in the workspace and the repositories inside it: the
/// same list [`Checkpoint::changes`] shows and `remove` refuses to lose.
fn uncommitted(cp: &Checkpoint, review: &mut Review) -> Result<(), UntrustedError> {
    for entry in crate::changes::entries(cp)? {
        let path = entry.path.as_str();
        if entry.code == "??" {
            review.add(Concern::Untracked, path, "untracked: not part of any commit");
        } else {
            review.add(Concern::Uncommitted, path, format!("uncommitted change ({})", entry.code.trim()));
        }
        if let Some((concern, why)) = classify(path) {
            review.add(concern, path, format!("{why} (uncommitted)"));
        }
    }
    Ok(())
}

/// LFS pointers in the commits whose content neither the host's store nor the
/// workspace's has: `apply` would refuse them.
fn lfs_missing(cp: &Checkpoint, host: &Git, tip: &str, from: &str, review: &mut Review) -> Result<(), GitError> {
    let changes = changes_in(host, &[tip, "--not", from])?;
    let blobs: Vec<String> =
        changes.iter().filter(|c| c.new_mode.starts_with("100")).map(|c| c.new_sha.clone()).collect();
    let store = lfs::host_store(host)?;
    for (sha, pointer, _) in lfs::pointers(host, &blobs)? {
        if lfs::host_has(&store, &pointer) || lfs::workspace_verified(cp.workspace(), &pointer) {
            continue;
        }
        let paths: Vec<String> = changes.iter().filter(|c| c.new_sha == sha).map(|c| c.path.clone()).collect();
        for path in lfs::lfs_paths(host, &paths, Some(tip))? {
            let detail = format!(
                "Git LFS content {} is in neither repository (or fails its SHA-256 check); apply will refuse",
                pointer.oid
            );
            if !review.findings.iter().any(|f| f.path == path && f.concern == Concern::LfsMissing) {
                review.add(Concern::LfsMissing, path, detail);
            }
        }
    }
    Ok(())
}

/// Nested repositories: their hooks and risky config, and any that is not a submodule.
fn nested(cp: &Checkpoint, ws: &Path, review: &mut Review) {
    for repo in nested_repositories(ws, false) {
        let rel = repo.strip_prefix(ws).unwrap_or(&repo).to_string_lossy().into_owned();
        let git = repo.join(".git");
        if !git.is_dir() || git.is_symlink() {
            review.add(Concern::NestedRepository, &rel, "nested repository whose .git is a file or symlink");
            continue;
        }
        if !cp.state.submodules.contains(&rel) {
            review.add(Concern::NestedRepository, &rel, "repository inside the workspace that is not a submodule");
        }
        for hook in state::hook_stamps(&git.join("hooks")) {
            review.add(Concern::Hook, format!("{rel}/.git/hooks/{}", hook.name), "hook in a nested repository");
        }
        let config = state::read_config(&git.join("config")).to_ascii_lowercase();
        let risky = [
            "hookspath",
            "fsmonitor",
            "[filter",
            "[diff",
            "[merge",
            "command",
            "pager",
            "editor",
            "askpass",
            "helper",
            "gpg",
            "program",
            "external",
            "textconv",
            "include",
        ];
        if let Some(word) = risky.iter().find(|w| config.contains(*w)) {
            review.add(
                Concern::GitConfig,
                format!("{rel}/.git/config"),
                format!("nested repository config mentions {word}"),
            );
        }
    }
}

/// Repositories under `ws` (folders holding a `.git`), not following symlinks and
/// not descending into `.git` folders; `ws` itself first when `include_self`.
pub(crate) fn nested_repositories(ws: &Path, include_self: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if include_self {
        out.push(ws.to_path_buf());
    }
    let mut stack = vec![ws.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else { continue };
            if entry.file_name() == ".git" {
                if dir != ws {
                    out.push(dir.clone());
                }
                continue;
            }
            if kind.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    out[usize::from(include_self)..].sort();
    out
}

fn config_change(review: &mut Review, path: &str, before: &str, after: &str) {
    if before == after {
        return;
    }
    let lines = |t: &str| t.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect::<Vec<_>>();
    let (old, new) = (lines(before), lines(after));
    let mut changes: Vec<String> = new.iter().filter(|l| !old.contains(l)).map(|l| format!("+{l}")).collect();
    changes.extend(old.iter().filter(|l| !new.contains(l)).map(|l| format!("-{l}")));
    if !changes.is_empty() {
        review.add(Concern::GitConfig, path, format!("git config changed: {}", changes.join("; ")));
    }
}

/// Which sensitive category a path falls in.
pub(crate) fn classify(path: &str) -> Option<(Concern, &'static str)> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let under = |dir: &str| path.starts_with(dir) || path.contains(&format!("/{dir}"));
    let ci = [
        ".gitlab-ci.yml",
        "Jenkinsfile",
        "azure-pipelines.yml",
        ".travis.yml",
        "bitbucket-pipelines.yml",
        ".drone.yml",
        "appveyor.yml",
        ".woodpecker.yml",
    ];
    if path.starts_with(".github/workflows/")
        || path.starts_with(".github/actions/")
        || under(".circleci/")
        || under(".buildkite/")
        || under(".gitlab/")
        || ci.contains(&name)
    {
        return Some((Concern::Ci, "CI configuration"));
    }
    if ["Makefile", "makefile", "GNUmakefile", "build.rs", "justfile", "Justfile", "Taskfile.yml"].contains(&name)
        || name.ends_with(".mk")
        || under(".cargo/config")
    {
        return Some((Concern::Build, "build recipe: runs when you build"));
    }
    if name == "package.json" {
        return Some((Concern::PackageScripts, "package.json scripts changed"));
    }
    if under(".vscode/") || under(".idea/") {
        return Some((Concern::Editor, "editor settings can run tasks"));
    }
    if name == ".envrc"
        || under(".devcontainer/")
        || under(".husky/")
        || name == ".pre-commit-config.yaml"
        || name == "lefthook.yml"
    {
        return Some((Concern::DevEnvironment, "runs when the folder is entered, opened or committed in"));
    }
    if [".gitattributes", ".gitmodules", ".lfsconfig"].contains(&name) {
        return Some((Concern::GitMetadata, "selects git drivers or fetch sources"));
    }
    None
}

fn scripts_changed(host: &Git, old: &str, new: &str) -> bool {
    let scripts = |sha: &str| -> Option<serde_json::Value> {
        if sha.bytes().all(|b| b == b'0') {
            return None;
        }
        let text = host.run(["cat-file", "blob", sha]).ok()?;
        serde_json::from_str::<serde_json::Value>(&text).ok()?.get("scripts").cloned()
    };
    scripts(old) != scripts(new)
}

/// Whether a symlink at `path` with `target` points outside the repository.
pub(crate) fn escapes(path: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return true;
    }
    let mut depth: i64 = path.matches('/').count() as i64;
    for part in target.split('/') {
        match part {
            ".." => depth -= 1,
            "" | "." => {}
            _ => depth += 1,
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_that_leave_the_repository_are_caught() {
        assert!(escapes("a", "/etc/passwd"));
        assert!(escapes("a", "../x"));
        assert!(escapes("d/a", "../../x"));
        assert!(!escapes("d/a", "../x"));
        assert!(!escapes("a", "b/../c"));
    }

    #[test]
    fn sensitive_paths_are_classified() {
        assert_eq!(classify(".github/workflows/ci.yml").unwrap().0, Concern::Ci);
        assert_eq!(classify("sub/rules.mk").unwrap().0, Concern::Build);
        assert_eq!(classify("web/.vscode/tasks.json").unwrap().0, Concern::Editor);
        assert_eq!(classify(".envrc").unwrap().0, Concern::DevEnvironment);
        assert_eq!(classify("x/.gitattributes").unwrap().0, Concern::GitMetadata);
        assert!(classify("src/main.rs").is_none());
    }
}
