//! Throw-away git repositories for tests and benchmarks. Each command runs
//! with a fixed identity and without the machine's system or global config.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A repository in a temporary folder, deleted on drop.
#[derive(Debug)]
pub struct TestRepo {
    _dir: tempfile::TempDir,
    /// The repository's work tree (canonical).
    pub path: PathBuf,
}

impl TestRepo {
    /// `git init -b main` in `<tmp>/<name>` with one commit (`README.md`, `.gitignore`).
    pub fn new(name: &str) -> TestRepo {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().canonicalize().unwrap().join(name);
        std::fs::create_dir_all(&path).unwrap();
        git(&path, &["init", "-q", "-b", "main"]);
        let repo = TestRepo { _dir: dir, path };
        repo.write("README.md", "hello\n");
        repo.write(".gitignore", "target/\n");
        repo.commit_all("initial");
        repo
    }

    /// A sibling folder in the same temporary directory (deleted with the repo).
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.path.parent().unwrap().join(name)
    }

    /// Writes `rel` (creating folders).
    pub fn write(&self, rel: &str, content: &str) {
        write(&self.path, rel, content);
    }

    /// `git <args>` here; panics on failure.
    pub fn git(&self, args: &[&str]) -> String {
        git(&self.path, args)
    }

    /// `git add -A && git commit`.
    pub fn commit_all(&self, msg: &str) -> String {
        commit_all(&self.path, msg)
    }
}

/// Writes `dir/rel`, creating folders.
pub fn write(dir: &Path, rel: &str, content: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// Stages everything and commits in `dir`, with hooks off (this plays the agent).
pub fn commit_all(dir: &Path, msg: &str) -> String {
    git(dir, &["add", "-A"]);
    git(dir, &["-c", "core.hooksPath=/dev/null", "commit", "-q", "--allow-empty", "-m", msg]);
    git(dir, &["rev-parse", "HEAD"]).trim().to_string()
}

/// A plain `git` (hooks and config honoured) with a fixed identity; panics on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_command(dir).args(args).output().expect("run git");
    assert!(out.status.success(), "git {args:?} in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The command [`git`] runs, for callers that expect failure.
pub fn git_command(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_COMMITTER_NAME", "Test Committer")
        .env("GIT_COMMITTER_EMAIL", "committer@example.com");
    cmd
}

/// Makes this process's own git calls (the library's) use the same identity and
/// no machine config. Call at the start of every test.
pub fn isolate_git() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for (k, v) in [
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("GIT_CONFIG_GLOBAL", "/dev/null"),
            ("GIT_AUTHOR_NAME", "Test Author"),
            ("GIT_AUTHOR_EMAIL", "author@example.com"),
            ("GIT_COMMITTER_NAME", "Test Committer"),
            ("GIT_COMMITTER_EMAIL", "committer@example.com"),
        ] {
            std::env::set_var(k, v);
        }
    });
}

/// A shell script at `path` that creates `marker` when run; made executable.
pub fn marker_script(path: &Path, marker: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\necho \"$0 $*\" >> '{}'\ncat\n", marker.display())).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The Git LFS pointer file for `content`, and its object id.
pub fn lfs_pointer(content: &[u8]) -> (String, String) {
    use sha2::Digest;
    let oid: String = sha2::Sha256::digest(content).iter().map(|b| format!("{b:02x}")).collect();
    let text = format!("version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {}\n", content.len());
    (oid, text)
}

/// Stores `content` under `<git_dir>/lfs/objects` as Git LFS would; returns its path.
pub fn put_lfs_object(git_dir: &Path, content: &[u8]) -> PathBuf {
    let (oid, _) = lfs_pointer(content);
    let path = git_dir.join("lfs/objects").join(&oid[0..2]).join(&oid[2..4]).join(&oid);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, content).unwrap();
    path
}

/// Whether the `git-lfs` program is installed (`git lfs version` works).
pub fn has_git_lfs() -> bool {
    Command::new("git").args(["lfs", "version"]).output().is_ok_and(|o| o.status.success())
}
