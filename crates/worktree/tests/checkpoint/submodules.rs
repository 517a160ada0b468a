//! Submodules: checked out from the host without network, and commits the agent
//! makes inside one come back with `apply` (or stop `rm`).

use std::path::Path;

use moat_worktree::test_utils::{commit_all, git, git_command, isolate_git, marker_script, write, TestRepo};
use moat_worktree::{ApplyError, BranchName, Checkpoint, RemoveError};

use crate::{has_ref, status};

const SUB: &str = "libs/sub ü";

/// A superproject with an initialised submodule at [`SUB`]; its URL is a local path.
fn superproject(name: &str) -> (TestRepo, TestRepo) {
    let sub = TestRepo::new(&format!("{name} sub"));
    sub.write("lib.txt", "library\n");
    sub.commit_all("lib");
    let repo = TestRepo::new(name);
    repo.git(&["-c", "protocol.file.allow=always", "submodule", "add", "-q", sub.path.to_str().unwrap(), SUB]);
    repo.commit_all("add submodule");
    (repo, sub)
}

fn head(dir: &Path) -> String {
    git(dir, &["rev-parse", "HEAD"]).trim().to_string()
}

#[test]
fn commits_inside_a_submodule_come_back_with_apply() {
    isolate_git();
    let (repo, _sub) = superproject("super");
    let mut cp = Checkpoint::create_branch(&repo.path, BranchName::Auto, "sub box").unwrap();
    let ws_sub = cp.workspace().join(SUB);
    // The agent commits inside the submodule, then records it in the superproject.
    write(&ws_sub, "feature.txt", "from the agent\n");
    let commit = commit_all(&ws_sub, "agent: submodule feature");
    write(cp.workspace(), "top.txt", "top\n");
    commit_all(cp.workspace(), "agent: bump submodule");
    // Then plants hooks in its submodule; the host's submodule repository,
    // which apply fetches into and checks out in, has some too. None may run.
    let marker = repo.scratch("HOOK RAN");
    let hooks = ["post-checkout", "reference-transaction", "post-index-change", "post-merge", "pre-auto-gc"];
    for dir in [repo.path.join(".git/modules").join(SUB).join("hooks"), ws_sub.join(".git/hooks")] {
        for hook in hooks {
            marker_script(&dir.join(hook), &marker);
        }
    }

    // Not applied yet: both commits would be lost.
    let lost = cp.unsaved().unwrap();
    let subjects: Vec<&str> = lost.commits.iter().map(|c| c.1.as_str()).collect();
    assert!(subjects.contains(&"agent: submodule feature") && subjects.contains(&"agent: bump submodule"), "{lost:?}");
    assert!(lost.commits.iter().any(|c| c.0.starts_with(&format!("{SUB}@"))), "{lost:?}");
    let host_sub = repo.path.join(SUB);
    let has = |c: &str| git_command(&host_sub).args(["cat-file", "-e", c]).status().unwrap().success();
    assert!(!has(&commit), "the host's submodule cannot have the agent's commit yet");

    let applied = cp.apply(false).unwrap();
    assert!(!marker.exists(), "a hook ran: {}", std::fs::read_to_string(&marker).unwrap());
    assert_eq!(applied.submodules, [SUB]);
    // The host's submodule repository has the commit, is checked out at it,
    // and the superproject agrees.
    assert_eq!(head(&host_sub), commit);
    assert!(has_ref(&host_sub, &format!("refs/moat/applied/{commit}")));
    assert_eq!(std::fs::read_to_string(host_sub.join("feature.txt")).unwrap(), "from the agent\n");
    assert!(has(&commit));
    let git_dir = git(&host_sub, &["rev-parse", "--absolute-git-dir"]);
    assert_eq!(Path::new(git_dir.trim()), repo.path.join(".git/modules").join(SUB));
    let sm = git(&repo.path, &["-c", "core.hooksPath=/dev/null", "submodule", "status"]);
    assert!(sm.starts_with(&format!(" {commit} {SUB}")), "{sm}");
    assert_eq!(status(&repo.path), "");
    assert!(cp.unsaved().unwrap().is_empty(), "{:?}", cp.unsaved().unwrap());
    cp.remove(false).unwrap();
    assert!(!marker.exists(), "a hook ran: {}", std::fs::read_to_string(&marker).unwrap());
    // Control: the planted hooks are live for plain git.
    git(&host_sub, &["checkout", "-q", "--detach", "HEAD~1"]);
    assert!(marker.exists());
}

#[test]
fn a_pointer_to_a_commit_nobody_has_is_refused() {
    isolate_git();
    let (repo, _sub) = superproject("nowhere");
    let before = head(&repo.path);
    let mut cp = Checkpoint::create_branch(&repo.path, BranchName::Auto, "ghost").unwrap();
    let ghost = "0123456789abcdef0123456789abcdef01234567";
    git(cp.workspace(), &["update-index", "--cacheinfo", &format!("160000,{ghost},{SUB}")]);
    git(cp.workspace(), &["-c", "core.hooksPath=/dev/null", "commit", "-qm", "point at nothing"]);
    let err = cp.apply(false).unwrap_err();
    assert!(matches!(&err, ApplyError::SubmoduleCommit { path, commit } if path == SUB && commit == ghost), "{err:?}");
    assert!(err.to_string().contains(SUB), "{err}");
    assert_eq!(head(&repo.path), before);
    assert_eq!(status(&repo.path), "");
}

#[test]
fn submodule_work_not_in_the_superproject_stops_rm_and_shows_in_diff() {
    isolate_git();
    let (repo, _sub) = superproject("unsaved");
    let cp = Checkpoint::create_branch(&repo.path, BranchName::Auto, "forgetful").unwrap();
    let ws_sub = cp.workspace().join(SUB);
    write(&ws_sub, "only here.txt", "x\n");
    commit_all(&ws_sub, "agent: committed in the submodule only");
    write(&ws_sub, "lib.txt", "edited, not committed\n");

    let changes = cp.changes().unwrap();
    assert!(changes.uncommitted.contains(&format!("b/{SUB}/lib.txt")), "{}", changes.uncommitted);
    assert!(changes.uncommitted.contains("+edited, not committed"), "{}", changes.uncommitted);
    // The superproject sees the submodule at a new commit: also uncommitted.
    assert!(changes.uncommitted.contains("Subproject commit"), "{}", changes.uncommitted);

    let err = cp.clone().remove(false).unwrap_err();
    assert!(matches!(err, RemoveError::WouldLoseWork { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("agent: committed in the submodule only"), "{msg}");
    assert!(msg.contains(&format!("{SUB}/lib.txt")), "{msg}");
    assert!(has_ref(&repo.path, cp.host_ref()));
    cp.remove(true).unwrap();
}
