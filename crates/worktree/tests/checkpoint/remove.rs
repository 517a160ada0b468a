//! remove refuses to lose work and says exactly what would be lost.

use moat_worktree::test_utils::{commit_all, isolate_git, TestRepo};
use moat_worktree::{BranchName, Checkpoint, RemoveError};

use crate::has_ref;

#[test]
fn refuses_with_a_precise_message_then_forces() {
    isolate_git();
    let repo = TestRepo::new("rm");
    let cp = Checkpoint::create_branch(&repo.path, BranchName::Named("work".into()), "rm box").unwrap();
    let ws = cp.workspace().to_path_buf();
    std::fs::write(ws.join("a.txt"), "a").unwrap();
    commit_all(&ws, "first change");
    std::fs::write(ws.join("b.txt"), "b").unwrap();
    commit_all(&ws, "second change");
    std::fs::write(ws.join("notes.txt"), "scratch").unwrap();
    std::fs::write(ws.join("README.md"), "edited").unwrap();

    let lost = cp.unsaved().unwrap();
    assert_eq!(lost.commits.iter().map(|c| c.1.as_str()).collect::<Vec<_>>(), ["first change", "second change"]);
    assert_eq!(lost.dirty, ["README.md", "notes.txt"]);

    let err = cp.clone().remove(false).unwrap_err();
    assert!(matches!(err, RemoveError::WouldLoseWork { .. }));
    let msg = err.to_string();
    for part in [
        "\"rm box\"",
        "2 commits",
        "first change",
        "second change",
        "2 uncommitted files",
        "README.md",
        "notes.txt",
        "force",
    ] {
        assert!(msg.contains(part), "message {msg:?} lacks {part:?}");
    }
    assert!(ws.exists() && has_ref(&repo.path, "refs/heads/work"));

    // Work that is on another branch is not lost.
    std::fs::remove_file(ws.join("notes.txt")).unwrap();
    moat_worktree::test_utils::git(&ws, &["checkout", "--", "README.md"]);
    repo.git(&["branch", "keep", "work"]);
    assert!(cp.unsaved().unwrap().is_empty(), "{:?}", cp.unsaved().unwrap());
    repo.git(&["branch", "-D", "keep"]);

    Checkpoint::open(&repo.path, "rm box").unwrap().remove(true).unwrap();
    assert!(!ws.exists());
    assert!(!has_ref(&repo.path, "refs/heads/work"));
}

#[test]
fn commits_on_other_workspace_branches_count_as_lost() {
    isolate_git();
    let repo = TestRepo::new("side");
    let cp = Checkpoint::create_branch(&repo.path, BranchName::Auto, "s").unwrap();
    let ws = cp.workspace();
    moat_worktree::test_utils::git(ws, &["checkout", "-q", "-b", "side"]);
    std::fs::write(ws.join("s.txt"), "s").unwrap();
    commit_all(ws, "side work");
    let lost = cp.unsaved().unwrap();
    assert_eq!(lost.commits.len(), 1);
    assert_eq!(lost.commits[0].1, "side work");
}

#[test]
fn a_checked_out_branch_is_not_removed() {
    isolate_git();
    let repo = TestRepo::new("co");
    let cp = Checkpoint::create_branch(&repo.path, BranchName::Named("mine".into()), "co").unwrap();
    repo.git(&["checkout", "-q", "mine"]);
    assert!(matches!(cp.remove(true), Err(RemoveError::CheckedOut { .. })));
}
