//! Removing a checkpoint, and refusing to when work would be lost.

use crate::checkpoint::Checkpoint;
use crate::error::{RemoveError, SyncError};
use crate::git::Git;
use crate::submodules;

/// What removing a checkpoint would destroy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lost {
    /// Commits on no other branch and not applied: `(short id, subject)`, oldest first.
    pub commits: Vec<(String, String)>,
    /// Uncommitted or untracked files in the workspace (and its nested repositories),
    /// relative to the workspace: what [`Checkpoint::changes`] shows as uncommitted
    /// and untracked. Commits inside submodules that the host's submodules do
    /// not have are in `commits`, named `path@id`.
    pub dirty: Vec<String>,
}

impl Lost {
    /// Whether nothing would be lost.
    pub fn is_empty(&self) -> bool {
        self.commits.is_empty() && self.dirty.is_empty()
    }

    pub(crate) fn describe(&self, sandbox: &str) -> String {
        let mut parts = Vec::new();
        if !self.commits.is_empty() {
            let list: Vec<String> = self.commits.iter().map(|(id, s)| format!("{id} {s}")).collect();
            parts.push(format!(
                "{} commit{} on no other branch ({})",
                self.commits.len(),
                if self.commits.len() == 1 { "" } else { "s" },
                list.join("; ")
            ));
        }
        if !self.dirty.is_empty() {
            parts.push(format!(
                "{} uncommitted file{} ({})",
                self.dirty.len(),
                if self.dirty.len() == 1 { "" } else { "s" },
                self.dirty.join(", ")
            ));
        }
        format!(
            "removing sandbox {sandbox:?} would lose {}; apply or save them first, or force the removal",
            parts.join(" and ")
        )
    }
}

impl Checkpoint {
    /// What [`Checkpoint::remove`] would destroy right now (syncs first).
    pub fn unsaved(&self) -> Result<Lost, RemoveError> {
        let mut lost = Lost::default();
        let ws = self.workspace();
        let host = Git::at(self.repo())?;
        if ws.exists() {
            match self.sync() {
                Ok(_) | Err(SyncError::BranchGone { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            // Moat's scratch copy of the workspace's repository (`scratch.rs`).
            let inside = self.import("")?;
            // Commits on the workspace's other branches or a detached HEAD.
            let branch = format!("refs/heads/{}", self.branch());
            let mut args = vec!["log", "--reverse", "--format=%h %s", "--branches"];
            if let Some(head) = inside.head_commit()? {
                args.push(head);
            }
            args.extend(["--not", "--remotes"]);
            if inside.refs.contains_key(&branch) {
                args.push(&branch);
            }
            lost.commits.extend(parse_log(&inside.git.run(&args)?));
            // Commits inside submodules that the host's submodules lack.
            lost.commits.extend(submodules::unsaved(self)?);
            lost.dirty = crate::changes::entries(self)?.into_iter().map(|e| e.path).collect();
        }
        let tip = host.run(["rev-parse", "--verify", "--quiet", self.host_ref()]).ok().map(|t| t.trim().to_string());
        if tip.is_some() && tip != self.state.applied_tip {
            // `--exclude` patterns for `--branches` are written without `refs/heads/`.
            let name = self.host_ref().strip_prefix("refs/heads/").unwrap_or(self.host_ref());
            let exclude = format!("--exclude={name}");
            let out =
                host.run(["log", "--reverse", "--format=%h %s", self.host_ref(), "--not", &exclude, "--branches"])?;
            let mut mine = parse_log(&out);
            mine.retain(|c| !lost.commits.contains(c));
            mine.extend(std::mem::take(&mut lost.commits));
            lost.commits = mine;
        }
        Ok(lost)
    }

    /// Deletes the workspace, the host ref and the record. Refuses with
    /// [`RemoveError::WouldLoseWork`] unless `force` when commits or files would be lost.
    pub fn remove(self, force: bool) -> Result<(), RemoveError> {
        let host = Git::at(self.repo())?;
        if self.host_ref().starts_with("refs/heads/") {
            let head = host.run(["symbolic-ref", "--quiet", "HEAD"]).unwrap_or_default();
            if head.trim() == self.host_ref() {
                return Err(RemoveError::CheckedOut { branch: self.branch().to_string() });
            }
        }
        if !force {
            let lost = self.unsaved()?;
            if !lost.is_empty() {
                return Err(RemoveError::WouldLoseWork { sandbox: self.sandbox().to_string(), lost: Box::new(lost) });
            }
        }
        let scratch = self.scratch_root();
        if std::fs::symlink_metadata(&scratch).is_ok() {
            std::fs::remove_dir_all(&scratch).map_err(|source| RemoveError::Io {
                what: "delete",
                path: scratch.clone(),
                source,
            })?;
        }
        let ws = self.workspace();
        if std::fs::symlink_metadata(ws).is_ok() {
            // remove_dir_all never follows symlinks the sandbox may have planted.
            std::fs::remove_dir_all(ws).map_err(|source| RemoveError::Io {
                what: "delete",
                path: ws.into(),
                source,
            })?;
        }
        match host.run(["update-ref", "-d", self.host_ref()]) {
            Ok(_) => {}
            Err(e) if !host.succeeds(["rev-parse", "--verify", "--quiet", self.host_ref()])? => drop(e),
            Err(e) => return Err(e.into()),
        }
        let path = self.state_path();
        std::fs::remove_file(&path).map_err(|source| RemoveError::Io { what: "delete", path, source })
    }
}

fn parse_log(out: &str) -> Vec<(String, String)> {
    out.lines().filter_map(|l| l.split_once(' ').map(|(id, s)| (id.to_string(), s.to_string()))).collect()
}
