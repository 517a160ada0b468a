//! Making a checkpoint: a new branch in the host repository and a workspace that
//! is a self-contained clone borrowing the host's objects read-only.

use std::path::{Path, PathBuf};

use crate::checkpoint::Checkpoint;
use crate::error::CreateError;
use crate::git::{nul_fields, Git, GitError};
use crate::lfs;
use crate::names::{self, BranchName};
use crate::state::{self, Mode, State};

impl Checkpoint {
    /// Branch mode: the workspace is `<repo>/.moat/worktrees/<sandbox>` and the
    /// branch exists in the repository from the start (`refs/heads/<branch>`).
    /// `.moat/` is excluded through `.git/info/exclude`.
    pub fn create_branch(repo: &Path, name: BranchName, sandbox: &str) -> Result<Checkpoint, CreateError> {
        create(repo, name, sandbox, Mode::Branch, None)
    }

    /// Clone mode: the workspace is a clone at `dest` (new or empty); the branch
    /// comes back as the review ref `refs/moat/clones/<branch>`.
    pub fn create_clone(repo: &Path, name: BranchName, sandbox: &str, dest: &Path) -> Result<Checkpoint, CreateError> {
        create(repo, name, sandbox, Mode::Clone, Some(dest))
    }
}

fn create(
    repo: &Path,
    name: BranchName,
    sandbox: &str,
    mode: Mode,
    dest: Option<&Path>,
) -> Result<Checkpoint, CreateError> {
    names::check_sandbox(sandbox)?;
    let not_repo = |source| CreateError::NotARepository { path: repo.to_path_buf(), source };
    let host = Git::at(repo).map_err(not_repo)?;
    let top = PathBuf::from(host.run(["rev-parse", "--show-toplevel"]).map_err(not_repo)?.trim_end_matches('\n'));
    let host = Git::at(&top)?;
    let common = host.common_dir()?;
    let base = match host.run(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"]) {
        Ok(out) => out.trim().to_string(),
        Err(_) => return Err(CreateError::NoCommits),
    };
    let state_path = state::path(&top, sandbox);
    if state_path.exists() {
        return Err(CreateError::AlreadyExists { sandbox: sandbox.to_string() });
    }
    let workspace = match dest {
        Some(dest) => absolute(dest)?,
        None => top.join(".moat").join("worktrees").join(sandbox),
    };
    if std::fs::read_dir(&workspace).is_ok_and(|mut d| d.next().is_some()) {
        return Err(CreateError::DestinationNotEmpty { path: workspace });
    }
    exclude_moat(&common)?;
    // Scratch copies left by an earlier checkpoint of the same name.
    let _ = std::fs::remove_dir_all(state::scratch_dir(&top, sandbox));

    let namespace = match mode {
        Mode::Branch => "refs/heads/",
        Mode::Clone => "refs/moat/clones/",
    };
    let branch = claim_branch(&host, name, sandbox, namespace, &base)?;
    let host_ref = format!("{namespace}{branch}");
    let made = Made { host: &host, host_ref: &host_ref, workspace: &workspace };
    let result = populate(&host, &top, &workspace, &branch, &base, &common);
    let (read_only, submodules) = match result {
        Ok(v) => v,
        Err(e) => {
            made.undo();
            return Err(e);
        }
    };
    let state = State {
        version: 1,
        mode,
        sandbox: sandbox.to_string(),
        branch,
        host_ref: host_ref.clone(),
        base,
        workspace: workspace.clone(),
        read_only,
        submodules,
        workspace_config: state::read_config(&workspace.join(".git").join("config")),
        host_config: state::read_config(&common.join("config")),
        host_hooks: state::hook_stamps(&common.join("hooks")),
        applied_tip: None,
    };
    if let Err(source) = state::save(&state_path, &state) {
        made.undo();
        return Err(CreateError::Io { what: "write", path: state_path, source });
    }
    Ok(Checkpoint { top, state })
}

/// What to roll back if creation fails half-way.
struct Made<'a> {
    host: &'a Git,
    host_ref: &'a str,
    workspace: &'a Path,
}

impl Made<'_> {
    fn undo(&self) {
        let _ = std::fs::remove_dir_all(self.workspace);
        let _ = self.host.run(["update-ref", "-d", self.host_ref]);
    }
}

/// Creates the host ref at `base`, atomically refusing an existing one.
fn claim_branch(host: &Git, name: BranchName, sandbox: &str, ns: &str, base: &str) -> Result<String, CreateError> {
    let try_claim = |branch: &str| -> Result<bool, GitError> {
        let taken = |ns: &str| host.succeeds(["rev-parse", "--verify", "--quiet", &format!("{ns}{branch}")]);
        if taken("refs/heads/")? || taken("refs/moat/clones/")? {
            return Ok(false);
        }
        host.succeeds(["update-ref", &format!("{ns}{branch}"), base, ""])
    };
    match name {
        BranchName::Named(branch) => {
            if !names::valid_branch(host, &branch)? {
                return Err(CreateError::InvalidBranch { name: branch });
            }
            if !try_claim(&branch)? {
                return Err(CreateError::BranchExists { name: branch });
            }
            Ok(branch)
        }
        BranchName::Auto => {
            for branch in names::auto_candidates(sandbox) {
                if names::valid_branch(host, &branch)? && try_claim(&branch)? {
                    return Ok(branch);
                }
            }
            Err(CreateError::NoFreeName { sandbox: sandbox.to_string() })
        }
    }
}

/// Clones, checks out the branch and the submodules. Returns the host object
/// stores the workspace borrows and the submodule paths checked out.
fn populate(
    host: &Git,
    top: &Path,
    workspace: &Path,
    branch: &str,
    base: &str,
    common: &Path,
) -> Result<(Vec<PathBuf>, Vec<String>), CreateError> {
    clone_shared(host, top, workspace)?;
    let inside = Git::new_clone(workspace).map_err(|e| new_clone_error(e, workspace))?;
    inside.run(["checkout", "--quiet", "-b", branch, base])?;
    let mut read_only = Vec::new();
    add_alternates(&common.join("objects"), &mut read_only);
    // LFS content: found by Git LFS in the guest next to the alternates.
    read_only.extend(lfs::host_objects(host)?);
    let mut submodules = Vec::new();
    checkout_submodules(top, workspace, base, "", &mut read_only, &mut submodules)?;
    Ok((read_only, submodules))
}

/// `git clone --shared --no-checkout` with no templates (so no sample hooks):
/// objects are borrowed through `objects/info/alternates`, never hard-linked, so
/// nothing the agent writes can land in a file under the host's `.git`.
fn clone_shared(git: &Git, src: &Path, dst: &Path) -> Result<(), CreateError> {
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).map_err(|source| CreateError::Io {
            what: "create",
            path: parent.into(),
            source,
        })?;
    }
    let args: [&std::ffi::OsStr; 9] = [
        "-c".as_ref(),
        "protocol.file.allow=always".as_ref(),
        "clone".as_ref(),
        "--quiet".as_ref(),
        "--shared".as_ref(),
        "--no-checkout".as_ref(),
        "--template=".as_ref(),
        src.as_os_str(),
        dst.as_os_str(),
    ];
    git.run(args)?;
    Ok(())
}

/// Checks out every gitlink of `commit` whose repository exists on the host, as
/// its own `--shared` clone, recursively.
fn checkout_submodules(
    src_top: &Path,
    dst_top: &Path,
    commit: &str,
    prefix: &str,
    read_only: &mut Vec<PathBuf>,
    found: &mut Vec<String>,
) -> Result<(), CreateError> {
    let src = Git::at(src_top)?;
    let tree = src.run(["ls-tree", "-r", "-z", "--full-tree", commit])?;
    for entry in nul_fields(&tree) {
        let Some((meta, path)) = entry.split_once('\t') else { continue };
        let mut parts = meta.split(' ');
        let (Some("160000"), Some(_), Some(sha)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let sub_src = src_top.join(path);
        if !sub_src.join(".git").exists() {
            continue; // not initialised on the host: nothing local to borrow
        }
        let sub_git = Git::at(&sub_src)?;
        if !sub_git.succeeds(["cat-file", "-e", &format!("{sha}^{{commit}}")])? {
            continue;
        }
        let sub_dst = dst_top.join(path);
        let _ = std::fs::remove_dir(&sub_dst);
        // Local clone of a repository we chose, from the host: allowed explicitly.
        clone_shared(&sub_git, &sub_src, &sub_dst)?;
        Git::new_clone(&sub_dst)
            .map_err(|e| new_clone_error(e, &sub_dst))?
            .run(["checkout", "--quiet", "--detach", sha])?;
        let sub_objects = sub_git.common_dir()?.join("objects");
        add_alternates(&sub_objects, read_only);
        read_only.extend(lfs::host_objects(&sub_git)?);
        let full = format!("{prefix}{path}");
        found.push(full.clone());
        checkout_submodules(&sub_src, &sub_dst, sha, &format!("{full}/"), read_only, found)?;
    }
    Ok(())
}

fn new_clone_error(e: crate::git::UntrustedError, path: &Path) -> CreateError {
    match e {
        crate::git::UntrustedError::Git(g) => CreateError::Git(g),
        other => {
            CreateError::Io { what: "open the new clone", path: path.into(), source: std::io::Error::other(other) }
        }
    }
}

/// `objects` and, transitively, the object stores it borrows from.
fn add_alternates(objects: &Path, out: &mut Vec<PathBuf>) {
    if out.iter().any(|p| p == objects) {
        return;
    }
    out.push(objects.to_path_buf());
    let Ok(text) = std::fs::read_to_string(objects.join("info").join("alternates")) else { return };
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let alt = objects.join(line);
        if let Ok(alt) = alt.canonicalize() {
            add_alternates(&alt, out);
        }
    }
}

/// Adds `/.moat/` to `info/exclude` once; the tracked `.gitignore` is never touched.
fn exclude_moat(common: &Path) -> Result<(), CreateError> {
    let info = common.join("info");
    let path = info.join("exclude");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    if text.lines().any(|l| l.trim() == "/.moat/") {
        return Ok(());
    }
    let io = |source| CreateError::Io { what: "update", path: path.clone(), source };
    std::fs::create_dir_all(&info).map_err(io)?;
    let sep = if text.is_empty() || text.ends_with('\n') { "" } else { "\n" };
    std::fs::write(&path, format!("{text}{sep}# Moat sandboxes' workspaces and records\n/.moat/\n")).map_err(io)
}

fn absolute(path: &Path) -> Result<PathBuf, CreateError> {
    let cwd = std::env::current_dir().map_err(|source| CreateError::Io { what: "read", path: ".".into(), source })?;
    let path = cwd.join(path);
    // Canonicalise the existing parent so the workspace path matches what the
    // sandbox shares (symlinks resolved).
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if parent.exists() => Ok(parent
            .canonicalize()
            .map_err(|source| CreateError::Io { what: "resolve", path: parent.into(), source })?
            .join(name)),
        _ => Ok(path),
    }
}
