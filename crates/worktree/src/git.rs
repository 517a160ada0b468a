//! Running `git` on the host: the only place in Moat that builds a `git`
//! command (a tidy test, `only_git_rs_runs_git`, keeps it so).
//!
//! Two kinds of repository, two kinds of call:
//!
//! - **The user's repositories** ([`Git::at`]): their own config is trusted
//!   (`user.name` for a squash commit, their system and global settings), but
//!   every setting that names a program or turns on a hook is overridden with
//!   `-c` (command-line config beats every file, `include.path` targets too),
//!   each *named* driver (`filter.<x>`, `merge.<x>`) found in any scope is
//!   switched off, and diffs use plumbing or `--no-ext-diff --no-textconv`.
//! - **Repositories derived from what a guest wrote** ([`Git::scratch`],
//!   [`Git::scratch_work_tree`], [`Git::new_clone`]): a Moat-owned bare
//!   repository whose config Moat wrote (see `scratch.rs`), never the guest's
//!   clone itself. No system or global config is read (`GIT_CONFIG_NOSYSTEM`,
//!   `GIT_CONFIG_GLOBAL=/dev/null`), lazy fetching is off (`GIT_NO_LAZY_FETCH`).
//!
//! Both: every transport is refused (`protocol.allow=never`; a call that
//! fetches from a path Moat chose passes `protocol.file.allow=always`
//! itself), and config injected through the parent's environment
//! (`GIT_CONFIG_PARAMETERS`, `GIT_CONFIG_COUNT`/`KEY_n`/`VALUE_n`) and variables
//! naming other repositories or programs are removed. `-c` settings travel to
//! child gits through `GIT_CONFIG_PARAMETERS`, so `upload-pack` run by a local
//! fetch inherits them.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Settings that would otherwise let a repository's config run a program, start a
/// daemon or change what Moat reads. Values are chosen so git treats them as "off".
const SAFE_CONFIG: &[&str] = &[
    // Hooks: `/dev/null/<hook>` can never exist, whatever the agent writes.
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.pager=cat",
    "core.editor=true",
    "sequence.editor=true",
    "core.askPass=",
    "credential.helper=",
    "core.sshCommand=false",
    "core.alternateRefsCommand=true",
    "protocol.allow=never",
    "protocol.ext.allow=never",
    "protocol.fd.allow=never",
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "log.showSignature=false",
    "merge.verifySignatures=false",
    "gc.auto=0",
    "maintenance.auto=false",
    "submodule.recurse=false",
    "fetch.recurseSubmodules=false",
    "diff.noprefix=false",
    "core.quotePath=false",
    "color.ui=false",
];

/// Environment that could point git at another repository or at a program.
const CLEARED_ENV: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_COMMON_DIR",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_EXTERNAL_DIFF",
    "GIT_PAGER",
    "GIT_EDITOR",
    "GIT_SEQUENCE_EDITOR",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_PROXY_COMMAND",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_ALLOW_PROTOCOL",
];

/// `git` failed to start or exited non-zero.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("could not run `git`; install git 2.39 or newer and put it on PATH")]
    Spawn(#[source] std::io::Error),
    #[error("`git {args}` failed in {}: {stderr}", dir.display())]
    Failed { args: String, dir: PathBuf, stderr: String },
}

/// Whose configuration a call may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// The user's own repository: their config (all scopes) is read.
    User,
    /// Derived from guest-written data: only the config Moat wrote.
    Derived,
}

/// `args` as owned strings, and as text for messages.
fn collect_args<I, S>(args: I) -> (Vec<std::ffi::OsString>, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
    let shown = args.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ");
    (args, shown)
}

/// One repository, as Moat's safe `git` sees it.
#[derive(Debug, Clone)]
pub(crate) struct Git {
    dir: PathBuf,
    /// Named explicitly, never discovered.
    git_dir: Option<PathBuf>,
    work_tree: Option<PathBuf>,
    /// A Moat-owned index file (`GIT_INDEX_FILE`).
    index: Option<PathBuf>,
    trust: Trust,
    /// `-c` overrides for the drivers this repository's config defines.
    drivers: Vec<String>,
}

impl Git {
    /// The user's repository (or any repository of theirs Moat reads) at `dir`.
    pub(crate) fn at(dir: &Path) -> Result<Git, GitError> {
        let mut git = Git {
            dir: dir.to_path_buf(),
            git_dir: None,
            work_tree: None,
            index: None,
            trust: Trust::User,
            drivers: Vec::new(),
        };
        git.drivers = git.driver_overrides()?;
        Ok(git)
    }

    /// A clone Moat has just made and no guest has seen yet (checkpoint
    /// creation): `.git` must be a real directory, and it is named explicitly.
    pub(crate) fn new_clone(work_tree: &Path) -> Result<Git, UntrustedError> {
        let git_dir = work_tree.join(".git");
        match std::fs::symlink_metadata(&git_dir) {
            Ok(meta) if meta.is_dir() => {}
            _ => return Err(UntrustedError::NotADirectory { git_dir }),
        }
        Ok(Git {
            dir: work_tree.to_path_buf(),
            git_dir: Some(git_dir),
            work_tree: Some(work_tree.to_path_buf()),
            index: None,
            trust: Trust::Derived,
            drivers: Vec::new(),
        })
    }

    /// A Moat-owned bare repository (`scratch.rs`) whose config Moat wrote.
    pub(crate) fn scratch(git_dir: &Path) -> Git {
        Git {
            dir: git_dir.to_path_buf(),
            git_dir: Some(git_dir.to_path_buf()),
            work_tree: None,
            index: None,
            trust: Trust::Derived,
            drivers: Vec::new(),
        }
    }

    /// The scratch repository `git_dir` looking at the guest's files in
    /// `work_tree` as plain data, with Moat's own copy of the index.
    pub(crate) fn scratch_work_tree(git_dir: &Path, work_tree: &Path, index: &Path) -> Git {
        Git {
            dir: work_tree.to_path_buf(),
            git_dir: Some(git_dir.to_path_buf()),
            work_tree: Some(work_tree.to_path_buf()),
            index: Some(index.to_path_buf()),
            trust: Trust::Derived,
            drivers: Vec::new(),
        }
    }

    /// A `git` command with every safety setting applied and no pager.
    fn command(&self) -> Command {
        let mut cmd = base_command(self);
        for kv in &self.drivers {
            cmd.arg("-c").arg(kv);
        }
        cmd.arg("--no-pager");
        cmd
    }

    /// Starts `git <args>` with stdout piped, for output too large to hold:
    /// read it through the returned [`GitOutput`].
    pub(crate) fn stream<I, S>(&self, args: I) -> Result<GitOutput, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (args, shown) = collect_args(args);
        let mut cmd = self.command();
        cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(GitError::Spawn)?;
        // Drain stderr on a thread (bounded) so git never blocks on it.
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let errors = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut buf);
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            String::from_utf8_lossy(&buf).trim().to_string()
        });
        Ok(GitOutput { child, errors: Some(errors), args: shown, dir: self.dir.clone() })
    }

    /// Runs `git <args>` and returns its stdout.
    pub(crate) fn run<I, S>(&self, args: I) -> Result<String, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (args, shown) = collect_args(args);
        let mut cmd = self.command();
        cmd.args(&args);
        run(cmd, &self.dir, shown)
    }

    /// Runs `git <args>` with `input` on stdin and returns stdout's bytes (for
    /// `--stdin` and `--batch` commands, and blobs that need not be UTF-8).
    pub(crate) fn run_bytes<I, S>(&self, args: I, input: &[u8]) -> Result<Vec<u8>, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (args, shown) = collect_args(args);
        let mut cmd = self.command();
        cmd.args(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(GitError::Spawn)?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        // A writer thread: git may fill stdout before it has read all of stdin.
        let writer = std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, &input);
        });
        let out = child.wait_with_output().map_err(GitError::Spawn)?;
        let _ = writer.join();
        if !out.status.success() {
            return Err(GitError::Failed {
                args: shown,
                dir: self.dir.clone(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out.stdout)
    }

    /// The repository's common git directory, absolute.
    pub(crate) fn common_dir(&self) -> Result<PathBuf, GitError> {
        let out = self.run(["rev-parse", "--path-format=absolute", "--git-common-dir"])?;
        Ok(PathBuf::from(out.trim_end_matches('\n')))
    }

    /// Whether `rev` names a commit this repository has (its own or borrowed).
    pub(crate) fn has_commit(&self, rev: &str) -> Result<bool, GitError> {
        self.succeeds(["cat-file", "-e", &format!("{rev}^{{commit}}")])
    }

    /// Runs `git <args>` and says whether it succeeded (for `--verify` style queries).
    pub(crate) fn succeeds<I, S>(&self, args: I) -> Result<bool, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command();
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        Ok(cmd.status().map_err(GitError::Spawn)?.success())
    }

    /// Names (not values) of every config key git sees here, turned into overrides
    /// that switch off each named filter and merge driver.
    fn driver_overrides(&self) -> Result<Vec<String>, GitError> {
        let mut cmd = base_command(self);
        cmd.args(["--no-pager", "config", "--null", "--name-only", "--list"]);
        let names = run(cmd, &self.dir, "config --list".into()).unwrap_or_default();
        let mut out = Vec::new();
        for name in names.split('\0') {
            let (Some(first), Some(last)) = (name.find('.'), name.rfind('.')) else { continue };
            if first == last {
                continue;
            }
            let section = name[..first].to_ascii_lowercase();
            let driver = &name[first + 1..last];
            let overrides: &[&str] = match section.as_str() {
                "filter" => &["clean=", "smudge=", "process=", "required=false"],
                "merge" => &["driver=false"],
                _ => continue,
            };
            for key in overrides {
                let kv = format!("{section}.{driver}.{key}");
                if !out.contains(&kv) {
                    out.push(kv);
                }
            }
        }
        Ok(out)
    }
}

/// An agent-controlled repository cannot be used safely.
#[derive(Debug, thiserror::Error)]
pub enum UntrustedError {
    #[error(
        "{} is not a plain directory (the sandbox may have replaced it); inspect it by hand",
        git_dir.display()
    )]
    NotADirectory { git_dir: PathBuf },
    #[error("could not read {} from the sandbox's workspace", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("{} is larger than Moat reads from a sandbox ({limit} bytes)", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error(
        "{} is a FIFO or device the sandbox created; Moat does not open those — remove it (or force the removal)",
        path.display()
    )]
    SpecialFile { path: PathBuf },
    #[error(
        "{what} names commit {id}, which is not in the workspace's own object store (nor the host's); \
         the sandbox may point at objects elsewhere — inspect it by hand"
    )]
    MissingObjects { what: String, id: String },
    #[error("could not prepare Moat's copy of the workspace's repository in {}", path.display())]
    Scratch { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Git(#[from] GitError),
}

fn base_command(git: &Git) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(&git.dir);
    for var in CLEARED_ENV {
        cmd.env_remove(var);
    }
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("GIT_CONFIG_KEY_") || name.starts_with("GIT_CONFIG_VALUE_") {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_NO_REPLACE_OBJECTS", "1")
        .env("GIT_LFS_SKIP_SMUDGE", "1")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_PROTOCOL_FROM_USER", "0");
    if git.trust == Trust::Derived {
        cmd.env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env_remove("GIT_CONFIG_SYSTEM")
            .env("GIT_NO_LAZY_FETCH", "1")
            // Moat made the repository and reads the work tree as data; ownership
            // through virtio-fs may differ, and nothing in it is config.
            .arg("-c")
            .arg("safe.directory=*");
    }
    if let Some(git_dir) = &git.git_dir {
        cmd.arg("--git-dir").arg(git_dir);
    }
    if let Some(work_tree) = &git.work_tree {
        cmd.arg("--work-tree").arg(work_tree);
    }
    if let Some(index) = &git.index {
        cmd.env("GIT_INDEX_FILE", index);
    }
    for kv in SAFE_CONFIG {
        cmd.arg("-c").arg(kv);
    }
    cmd
}

/// A running `git` whose stdout is read as a stream ([`Git::stream`]).
#[derive(Debug)]
pub struct GitOutput {
    child: Child,
    errors: Option<std::thread::JoinHandle<String>>,
    args: String,
    dir: PathBuf,
}

impl Read for GitOutput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.child.stdout.as_mut() {
            Some(out) => out.read(buf),
            None => Ok(0),
        }
    }
}

impl GitOutput {
    /// Stops reading (git is killed if it is still writing) and reports how it ended.
    pub fn finish(mut self) -> Result<(), GitError> {
        self.child.stdout.take();
        let status = self.child.wait().map_err(GitError::Spawn)?;
        let stderr = self.errors.take().and_then(|t| t.join().ok()).unwrap_or_default();
        if status.success() {
            return Ok(());
        }
        Err(GitError::Failed { args: self.args.clone(), dir: self.dir.clone(), stderr })
    }
}

impl Drop for GitOutput {
    fn drop(&mut self) {
        if self.errors.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn run(mut cmd: Command, dir: &Path, args: String) -> Result<String, GitError> {
    let out = cmd.stdin(Stdio::null()).output().map_err(GitError::Spawn)?;
    if !out.status.success() {
        return Err(GitError::Failed {
            args,
            dir: dir.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The pager the user chose, as git would pick it outside any repository:
/// `$GIT_PAGER`, `core.pager` in their global or system config, `$PAGER`, `less`.
pub(crate) fn user_pager() -> String {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let Some(pager) = env("GIT_PAGER") {
        return pager;
    }
    for scope in ["--global", "--system"] {
        let mut cmd = Command::new("git");
        for var in CLEARED_ENV {
            cmd.env_remove(var);
        }
        let out =
            cmd.args(["config", scope, "--get", "core.pager"]).stdin(Stdio::null()).stderr(Stdio::null()).output();
        if let Ok(out) = out {
            let pager = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !pager.is_empty() {
                return pager;
            }
        }
    }
    env("PAGER").unwrap_or_else(|| "less".to_string())
}

/// Splits NUL-terminated output, dropping the empty tail.
pub(crate) fn nul_fields(out: &str) -> impl Iterator<Item = &str> {
    out.split('\0').filter(|s| !s.is_empty())
}

/// One line of `git diff-tree -r -z` raw output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TreeChange {
    pub old_mode: String,
    pub new_mode: String,
    pub old_sha: String,
    pub new_sha: String,
    /// `A`, `M`, `D`, `T`… (renames are off).
    pub status: String,
    pub path: String,
}

/// Parses `diff-tree -r -z --no-renames` output; header lines (`--stdin` prints
/// each commit's id) are skipped.
pub(crate) fn parse_raw(raw: &str) -> Vec<TreeChange> {
    let mut out = Vec::new();
    let mut fields = nul_fields(raw);
    while let Some(field) = fields.next() {
        let Some(meta) = field.strip_prefix(':') else { continue };
        let Some(path) = fields.next() else { break };
        let parts: Vec<&str> = meta.split(' ').collect();
        if let [old_mode, new_mode, old_sha, new_sha, status] = parts[..] {
            out.push(TreeChange {
                old_mode: old_mode.into(),
                new_mode: new_mode.into(),
                old_sha: old_sha.into(),
                new_sha: new_sha.into(),
                status: status.into(),
                path: path.into(),
            });
        }
    }
    out
}

/// Every change made by each commit of `revs` (rev-list arguments, e.g.
/// `[tip, "--not", base]`), merges against each parent.
pub(crate) fn changes_in(git: &Git, revs: &[&str]) -> Result<Vec<TreeChange>, GitError> {
    let mut args = vec!["rev-list"];
    args.extend_from_slice(revs);
    let commits = git.run(&args)?;
    if commits.trim().is_empty() {
        return Ok(Vec::new());
    }
    let raw =
        git.run_bytes(["diff-tree", "--stdin", "-r", "-z", "--no-renames", "-m", "--root"], commits.as_bytes())?;
    Ok(parse_raw(&String::from_utf8_lossy(&raw)))
}

/// The changes between two trees.
pub(crate) fn changes_between(git: &Git, from: &str, to: &str) -> Result<Vec<TreeChange>, GitError> {
    Ok(parse_raw(&git.run(["diff-tree", "-r", "-z", "--no-renames", from, to])?))
}
