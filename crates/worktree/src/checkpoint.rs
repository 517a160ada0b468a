//! [`Checkpoint`]: one sandbox's branch, its workspace, and the way back.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{OpenError, SyncError};
use crate::git::{Git, GitError, GitOutput, UntrustedError};
use crate::scratch::{self, Imported};
use crate::state::{self, Mode, State};
use crate::submodules;

/// A sandbox's own line of history and the folder it works in.
///
/// Created by [`Checkpoint::create_branch`] or [`Checkpoint::create_clone`],
/// found again with [`Checkpoint::open`] or [`Checkpoint::list`].
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub(crate) top: PathBuf,
    pub(crate) state: State,
}

impl Checkpoint {
    /// The checkpoint of `sandbox` in the repository containing `repo`.
    pub fn open(repo: &Path, sandbox: &str) -> Result<Checkpoint, OpenError> {
        let top = toplevel(repo)?;
        let path = state::path(&top, sandbox);
        if !path.exists() {
            return Err(OpenError::NotFound { sandbox: sandbox.to_string(), repo: top });
        }
        load(top, &path)
    }

    /// Every checkpoint of the repository containing `repo`, by sandbox name.
    pub fn list(repo: &Path) -> Result<Vec<Checkpoint>, OpenError> {
        let top = toplevel(repo)?;
        let dir = state::dir(&top);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(OpenError::Io { what: "read", path: dir, source }),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "json") {
                out.push(load(top.clone(), &entry.path())?);
            }
        }
        out.sort_by(|a, b| a.state.sandbox.cmp(&b.state.sandbox));
        Ok(out)
    }

    /// Branch or clone.
    pub fn mode(&self) -> Mode {
        self.state.mode
    }

    /// The sandbox this checkpoint belongs to.
    pub fn sandbox(&self) -> &str {
        &self.state.sandbox
    }

    /// The branch the sandbox commits on (inside its workspace).
    pub fn branch(&self) -> &str {
        &self.state.branch
    }

    /// Where the branch lands in the host repository: `refs/heads/<branch>`
    /// (branch mode) or `refs/moat/clones/<branch>` (clone mode).
    pub fn host_ref(&self) -> &str {
        &self.state.host_ref
    }

    /// The commit the sandbox started from.
    pub fn base(&self) -> &str {
        &self.state.base
    }

    /// The repository's top-level folder.
    pub fn repo(&self) -> &Path {
        &self.top
    }

    /// The folder to share read-write with the sandbox, at the same path.
    pub fn workspace(&self) -> &Path {
        &self.state.workspace
    }

    /// Host object stores the workspace borrows (git alternates). Share them
    /// **read-only** at the same paths so git works inside the guest; nothing
    /// else of the host's `.git` is needed or should be shared. None of them
    /// nest inside another or inside the workspace.
    pub fn guest_read_only_paths(&self) -> &[PathBuf] {
        &self.state.read_only
    }

    /// Brings the sandbox's branch into [`Checkpoint::host_ref`] (forced: the
    /// branch belongs to the sandbox). Returns the new tip.
    ///
    /// The workspace's repository is read as data into Moat's scratch copy
    /// (`scratch.rs`), and the host fetches from that copy: no git ever runs
    /// with the workspace's `.git` as its repository.
    pub fn sync(&self) -> Result<String, SyncError> {
        let ws = self.workspace();
        if !ws.exists() {
            return Err(SyncError::WorkspaceMissing { path: ws.to_path_buf() });
        }
        let imported = self.import("")?;
        let branch_ref = format!("refs/heads/{}", self.branch());
        if imported.commit_of(&branch_ref)?.is_none() {
            return Err(SyncError::BranchGone { branch: self.branch().to_string() });
        }
        let host = Git::at(&self.top)?;
        let refspec = format!("+{branch_ref}:{}", self.host_ref());
        let mut fetch: Vec<&std::ffi::OsStr> = [
            "-c",
            "protocol.file.allow=always",
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-recurse-submodules",
            "--no-write-fetch-head",
        ]
        .iter()
        .map(std::ffi::OsStr::new)
        .collect();
        fetch.push(imported.dir.as_os_str());
        fetch.push(std::ffi::OsStr::new(&refspec));
        host.run(fetch).map_err(|source| SyncError::Fetch { host_ref: self.host_ref().to_string(), source })?;
        Ok(host.run(["rev-parse", "--verify", self.host_ref()])?.trim().to_string())
    }

    /// `git diff <base>...<branch>` in the host repository, as a stream of
    /// bytes (no colour, no pager): the patch holds the sandbox's bytes, so
    /// whoever shows it escapes them. Call [`Checkpoint::sync`] first.
    /// External diff drivers and textconv filters are off.
    pub fn diff_stream(&self) -> Result<GitOutput, GitError> {
        let range = format!("{}...{}", self.base(), self.host_ref());
        Git::at(&self.top)?.stream(["diff", "--no-color", "--no-ext-diff", "--no-textconv", &range])
    }

    /// The committed changes as a plain patch (syncs first).
    pub fn diff(&self) -> Result<String, SyncError> {
        self.sync()?;
        let host = Git::at(&self.top)?;
        let range = format!("{}...{}", self.base(), self.host_ref());
        Ok(host.run(["diff", "--no-color", "--no-ext-diff", "--no-textconv", &range])?)
    }

    /// Moat's scratch copies of the workspace's repositories (`scratch.rs`).
    pub(crate) fn scratch_root(&self) -> PathBuf {
        state::scratch_dir(&self.top, &self.state.sandbox)
    }

    /// Reads the repository at `rel` in the workspace (`""`: the workspace
    /// itself) into its scratch copy, borrowing the host's matching object
    /// store (the repository's, or the submodule's).
    pub(crate) fn import(&self, rel: &str) -> Result<Imported, UntrustedError> {
        let root = self.scratch_root();
        let (scratch, borrowed) = if rel.is_empty() {
            (root.join("workspace.git"), Some(Git::at(&self.top)?.common_dir()?.join("objects")))
        } else {
            let digest: String = Sha256::digest(rel.as_bytes())[..8].iter().map(|b| format!("{b:02x}")).collect();
            let borrowed = if self.state.submodules.iter().any(|s| s == rel) {
                submodules::host_objects(&self.top, rel)?
            } else {
                None
            };
            (root.join("nested").join(format!("{digest}.git")), borrowed)
        };
        scratch::import(&self.workspace().join(rel), &scratch, borrowed.as_deref())
    }

    pub(crate) fn state_path(&self) -> PathBuf {
        state::path(&self.top, &self.state.sandbox)
    }
}

fn load(top: PathBuf, path: &Path) -> Result<Checkpoint, OpenError> {
    let bytes = std::fs::read(path).map_err(|source| OpenError::Io { what: "read", path: path.into(), source })?;
    let state = serde_json::from_slice(&bytes).map_err(|source| OpenError::Corrupt { path: path.into(), source })?;
    Ok(Checkpoint { top, state })
}

fn toplevel(repo: &Path) -> Result<PathBuf, OpenError> {
    let not_repo = |source| OpenError::NotARepository { path: repo.to_path_buf(), source };
    let out = Git::at(repo).and_then(|g| g.run(["rev-parse", "--show-toplevel"])).map_err(not_repo)?;
    Ok(PathBuf::from(out.trim_end_matches('\n')))
}
