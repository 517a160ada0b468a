//! Running `git` so that nothing a repository supplies can execute.
//!
//! Every invocation goes through [`Git`]. It passes `-c` overrides (command-line
//! config beats every config file, including `include.path` targets) for each
//! setting that names a program or turns on a hook, and it reads the repository's
//! config first so that each *named* driver (`filter.<x>`, `merge.<x>`) found in
//! any scope is overridden too. Diff drivers and `diff.external` are never
//! reached because Moat uses plumbing (which ignores them) or passes
//! `--no-ext-diff --no-textconv`. `-c` settings travel to child gits through
//! `GIT_CONFIG_PARAMETERS`, so `upload-pack` run by a local fetch inherits them.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
    "protocol.ext.allow=never",
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
];

/// `git` failed to start or exited non-zero.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("could not run `git`; install git 2.39 or newer and put it on PATH")]
    Spawn(#[source] std::io::Error),
    #[error("`git {args}` failed in {}: {stderr}", dir.display())]
    Failed { args: String, dir: PathBuf, stderr: String },
}

/// One repository, as Moat's safe `git` sees it.
#[derive(Debug, Clone)]
pub(crate) struct Git {
    dir: PathBuf,
    /// Set for repositories the agent controls: never discover `.git`, use this.
    git_dir: Option<PathBuf>,
    /// `-c` overrides for the drivers this repository's config defines.
    drivers: Vec<String>,
}

impl Git {
    /// The user's repository (or any repository Moat reads) at `dir`.
    pub(crate) fn at(dir: &Path) -> Result<Git, GitError> {
        let mut git = Git { dir: dir.to_path_buf(), git_dir: None, drivers: Vec::new() };
        git.drivers = git.driver_overrides()?;
        Ok(git)
    }

    /// A repository whose `.git` the agent could have written: `.git` must be a real
    /// directory (not a symlink or a `gitdir:` file), and it is named explicitly.
    pub(crate) fn untrusted(work_tree: &Path) -> Result<Git, UntrustedError> {
        let git_dir = work_tree.join(".git");
        match std::fs::symlink_metadata(&git_dir) {
            Ok(meta) if meta.is_dir() => {}
            _ => return Err(UntrustedError::NotADirectory { git_dir }),
        }
        let mut git = Git { dir: work_tree.to_path_buf(), git_dir: Some(git_dir), drivers: Vec::new() };
        git.drivers = git.driver_overrides()?;
        Ok(git)
    }

    /// A `git` command with every safety setting applied and no pager.
    pub(crate) fn command(&self) -> Command {
        let mut cmd = self.bare_command();
        cmd.arg("--no-pager");
        cmd
    }

    /// Like [`Git::command`] but leaves paging and colour to the user's own
    /// (global or system) settings: for commands a person reads.
    pub(crate) fn interactive_command(&self) -> Command {
        let mut cmd = base_command(&self.dir, self.git_dir.as_deref());
        let pager = user_pager();
        cmd.arg("-c").arg(format!("core.pager={pager}")).arg("-c").arg("pager.diff=true");
        for kv in &self.drivers {
            cmd.arg("-c").arg(kv);
        }
        cmd
    }

    fn bare_command(&self) -> Command {
        let mut cmd = base_command(&self.dir, self.git_dir.as_deref());
        for kv in &self.drivers {
            cmd.arg("-c").arg(kv);
        }
        cmd
    }

    /// Runs `git <args>` and returns its stdout.
    pub(crate) fn run<I, S>(&self, args: I) -> Result<String, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
        let shown: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let mut cmd = self.command();
        cmd.args(&args);
        run(cmd, &self.dir, shown.join(" "))
    }

    /// Runs `git <args>` with `input` on stdin and returns stdout's bytes (for
    /// `--stdin` and `--batch` commands, and blobs that need not be UTF-8).
    pub(crate) fn run_bytes<I, S>(&self, args: I, input: &[u8]) -> Result<Vec<u8>, GitError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
        let shown = args.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ");
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
        let mut cmd = self.bare_command();
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
    #[error(transparent)]
    Git(#[from] GitError),
}

fn base_command(dir: &Path, git_dir: Option<&Path>) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir);
    for var in CLEARED_ENV {
        cmd.env_remove(var);
    }
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_NO_REPLACE_OBJECTS", "1")
        .env("GIT_LFS_SKIP_SMUDGE", "1")
        .env("GIT_OPTIONAL_LOCKS", "0");
    if let Some(git_dir) = git_dir {
        // Ownership of agent-written files may differ through virtio-fs; every
        // setting that could run code is overridden below, so trust is not needed.
        cmd.arg("-c").arg("safe.directory=*");
        cmd.arg("--git-dir").arg(git_dir).arg("--work-tree").arg(dir);
    }
    for kv in SAFE_CONFIG {
        cmd.arg("-c").arg(kv);
    }
    cmd
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
        let out = Command::new("git")
            .args(["config", scope, "--get", "core.pager"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
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
