//! One test per way a guest could make host-side git run a program, read
//! another repository or hang through the workspace's `.git`: none works,
//! because Moat never runs git with that `.git` as its repository (the clone
//! is read as data into a scratch repository, `scratch.rs`). Each test checks
//! that no marker appears and that the operation still works or fails with a
//! clear error. Every Moat call runs under a deadline: a hang fails the test.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use moat_worktree::test_utils::{commit_all, git, git_command, isolate_git, marker_script, write, TestRepo};
use moat_worktree::{BranchName, Checkpoint};

use crate::has_ref;

/// A checkpoint whose agent committed one change and left one uncommitted.
struct Sandbox {
    repo: TestRepo,
    cp: Checkpoint,
    ws: PathBuf,
    marker: PathBuf,
    script: PathBuf,
}

fn sandbox(name: &str) -> Sandbox {
    isolate_git();
    let repo = TestRepo::new(name);
    let cp = Checkpoint::create_branch(&repo.path, BranchName::Auto, name).unwrap();
    let ws = cp.workspace().to_path_buf();
    write(&ws, "data.txt", "agent line\n");
    commit_all(&ws, "agent work");
    write(&ws, "data.txt", "agent line\nuncommitted line\n");
    let marker = repo.scratch("MARKER");
    let script = repo.scratch("evil.sh");
    marker_script(&script, &marker);
    Sandbox { repo, cp, ws, marker, script }
}

impl Sandbox {
    fn config(&self, key: &str, value: &str) {
        git(&self.ws, &["config", key, value]);
    }

    fn assert_no_marker(&self) {
        assert!(!self.marker.exists(), "a planted program ran: {}", std::fs::read_to_string(&self.marker).unwrap());
    }

    /// `diff` (all three parts and the committed patch), `review` and the
    /// `rm` check, each under a deadline: `Ok(output)` or `Err(error chain)`.
    fn operations(&self) -> Vec<Result<String, String>> {
        let cp = self.cp.clone();
        within_deadline(move || {
            vec![
                cp.changes().map(|c| c.to_string()).map_err(|e| chain(&e)),
                cp.review().map(|r| format!("{r:?}")).map_err(|e| chain(&e)),
                cp.unsaved().map(|l| format!("{l:?}")).map_err(|e| chain(&e)),
                cp.diff().map_err(|e| chain(&e)),
            ]
        })
    }

    /// Every operation worked and `diff` shows the agent's work.
    fn assert_works(&self) {
        let results = self.operations();
        self.assert_no_marker();
        for r in &results {
            assert!(r.is_ok(), "{r:?}");
        }
        let changes = results[0].as_ref().unwrap();
        assert!(changes.contains("+agent line") && changes.contains("+uncommitted line"), "{changes}");
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Runs `f` on a thread; a call that blocks (a FIFO, a lazy fetch waiting on
/// a program) fails the test instead of hanging the suite.
fn within_deadline<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(120)).expect("a Moat operation hung")
}

/// Deletes the loose object `id` from the workspace's repository.
fn delete_object(ws: &Path, id: &str) {
    std::fs::remove_file(ws.join(".git/objects").join(&id[..2]).join(&id[2..])).unwrap();
}

/// Makes the workspace a partial clone whose promisor remote `origin` (at
/// `url`) is fetched from by running `uploadpack`, and removes the blob of a
/// staged change that is edited again: any git reading the workspace as a
/// repository that looks that blob up (`diff` checking for LFS pointers
/// does) fetches it lazily. `config` writes the remote's settings.
fn promisor(s: &Sandbox, url: &str, config: &dyn Fn(&str, &str)) {
    write(&s.ws, "data.txt", "agent line\nstaged line\n");
    git(&s.ws, &["add", "data.txt"]);
    let blob = git(&s.ws, &["rev-parse", ":data.txt"]);
    write(&s.ws, "data.txt", "agent line\nuncommitted line\n");
    git(&s.ws, &["config", "core.repositoryformatversion", "1"]);
    git(&s.ws, &["config", "extensions.partialClone", "origin"]);
    config("remote.origin.url", url);
    config("remote.origin.promisor", "true");
    config("remote.origin.uploadpack", s.script.to_str().unwrap());
    config("remote.origin.receivepack", s.script.to_str().unwrap());
    delete_object(&s.ws, blob.trim());
}

#[test]
fn a_planted_hook_never_runs() {
    let s = sandbox("hook");
    for hook in ["post-checkout", "post-index-change", "reference-transaction", "post-merge", "pre-auto-gc"] {
        marker_script(&s.ws.join(".git/hooks").join(hook), &s.marker);
    }
    s.assert_works();
    s.cp.clone().apply(false).unwrap();
    s.assert_no_marker();
}

#[test]
fn core_fsmonitor_never_runs() {
    let s = sandbox("fsmonitor");
    s.config("core.fsmonitor", s.script.to_str().unwrap());
    s.assert_works();
}

#[test]
fn filter_and_merge_drivers_never_run() {
    let s = sandbox("drivers");
    write(&s.ws, ".gitattributes", "* filter=evil merge=evil diff=evil\n");
    for key in ["filter.evil.clean", "filter.evil.smudge", "filter.evil.process", "merge.evil.driver"] {
        s.config(key, s.script.to_str().unwrap());
    }
    s.config("filter.evil.required", "true");
    s.config("diff.evil.textconv", s.script.to_str().unwrap());
    s.assert_works();
}

#[test]
fn a_promisor_remote_is_never_fetched_from() {
    let s = sandbox("promisor");
    let url = s.repo.path.to_str().unwrap().to_string();
    promisor(&s, &url, &|k, v| s.config(k, v));
    // The staged blob is simply missing from Moat's copy: nothing is fetched.
    s.assert_works();
}

#[test]
fn an_included_config_file_never_runs_a_program() {
    let s = sandbox("include");
    let included = s.ws.join("evil.cfg");
    let url = s.repo.path.to_str().unwrap().to_string();
    promisor(&s, &url, &|k, v| drop(git(&s.ws, &["config", "--file", included.to_str().unwrap(), k, v])));
    s.config("include.path", included.to_str().unwrap());
    s.config("core.fsmonitor", "false");
    git(&s.ws, &["config", "--file", included.to_str().unwrap(), "core.fsmonitor", s.script.to_str().unwrap()]);
    s.assert_works();
}

#[test]
fn ext_and_fd_urls_are_never_used() {
    for url in [format!("ext::sh -c touch% {}", "MARKER"), "fd::0".to_string()] {
        let s = sandbox("urls");
        let url = url.replace("MARKER", s.marker.to_str().unwrap());
        promisor(&s, &url, &|k, v| s.config(k, v));
        s.assert_works();
    }
}

#[test]
fn alternates_to_another_repository_are_never_followed() {
    let s = sandbox("alternates");
    // A repository of the user's that the sandbox must not read.
    let secret = TestRepo::new("secret");
    secret.write("secret.txt", "the user's secret\n");
    let secret_commit = secret.commit_all("secret");
    let alternates = s.ws.join(".git/objects/info/alternates");
    let mut text = std::fs::read_to_string(&alternates).unwrap();
    text.push_str(&format!("{}\n", secret.path.join(".git/objects").display()));
    std::fs::write(&alternates, text).unwrap();
    // The agent's branch now names the secret commit.
    let branch = git(&s.ws, &["symbolic-ref", "HEAD"]);
    git(&s.ws, &["update-ref", branch.trim(), &secret_commit]);
    let results = s.operations();
    let err = results[0].as_ref().unwrap_err();
    assert!(err.contains("not in the workspace's own object store"), "{err}");
    s.assert_no_marker();
    let reached = git_command(&s.repo.path).args(["cat-file", "-e", &secret_commit]).output().unwrap();
    assert!(!reached.status.success(), "the secret commit reached the host repository");
}

#[test]
fn alternates_that_are_a_fifo_never_block() {
    let s = sandbox("fifo");
    let alternates = s.ws.join(".git/objects/info/alternates");
    std::fs::remove_file(&alternates).unwrap();
    let path = std::ffi::CString::new(alternates.to_str().unwrap()).unwrap();
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    // Moat never opens it: its scratch copy borrows the host's objects itself.
    s.assert_works();
}

#[test]
fn a_git_file_or_symlink_to_another_repository_is_refused() {
    for kind in ["gitfile", "symlink"] {
        let s = sandbox(kind);
        let other = TestRepo::new("other");
        git(&other.path, &["config", "core.fsmonitor", s.script.to_str().unwrap()]);
        std::fs::remove_dir_all(s.ws.join(".git")).unwrap();
        match kind {
            "gitfile" => {
                std::fs::write(s.ws.join(".git"), format!("gitdir: {}\n", other.path.join(".git").display())).unwrap()
            }
            _ => std::os::unix::fs::symlink(other.path.join(".git"), s.ws.join(".git")).unwrap(),
        }
        let results = s.operations();
        s.assert_no_marker();
        for r in &results[..3] {
            let err = r.as_ref().unwrap_err();
            assert!(err.contains("is not a plain directory"), "{kind}: {err}");
        }
    }
}

#[test]
fn commondir_never_redirects_refs_or_config() {
    let s = sandbox("commondir");
    let other = TestRepo::new("other");
    other.write("other.txt", "another repository's work\n");
    other.commit_all("other");
    git(&other.path, &["config", "core.fsmonitor", s.script.to_str().unwrap()]);
    let branch = git(&s.ws, &["symbolic-ref", "HEAD"]);
    git(&other.path, &["update-ref", branch.trim(), "HEAD"]);
    std::fs::write(s.ws.join(".git/commondir"), format!("{}\n", other.path.join(".git").display())).unwrap();
    s.assert_works();
    // What came back is the agent's commit, read from the workspace's own refs.
    let host = git(&s.repo.path, &["log", "--format=%s", "-1", s.cp.host_ref()]);
    assert_eq!(host.trim(), "agent work");
}

#[test]
fn a_config_that_flips_between_calls_never_runs_its_driver() {
    let s = sandbox("flip");
    write(&s.ws, ".gitattributes", "* filter=flip\n");
    commit_all(&s.ws, "attributes");
    write(&s.ws, "data.txt", "agent line\nuncommitted line\n");
    let config = s.ws.join(".git/config");
    let plain = std::fs::read_to_string(&config).unwrap();
    let evil =
        format!("{plain}[filter \"flip\"]\n\tclean = {0}\n\tsmudge = {0}\n\trequired = true\n", s.script.display());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (stop, config) = (stop.clone(), config.clone());
        std::thread::spawn(move || {
            let tmp = config.with_extension("flip");
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::fs::write(&tmp, if n % 2 == 0 { &plain } else { &evil }).unwrap();
                std::fs::rename(&tmp, &config).unwrap();
                n += 1;
                std::thread::sleep(Duration::from_micros(300));
            }
        })
    };
    for _ in 0..5 {
        // Stat-dirty every tracked file so status re-reads them (through the filter, if any).
        for f in ["data.txt", "README.md", ".gitignore", ".gitattributes"] {
            let text = std::fs::read(s.ws.join(f)).unwrap();
            std::fs::write(s.ws.join(f), text).unwrap();
        }
        let results = s.operations();
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flipper.join().unwrap();
    s.assert_no_marker();
    assert!(has_ref(&s.repo.path, s.cp.host_ref()));
}
