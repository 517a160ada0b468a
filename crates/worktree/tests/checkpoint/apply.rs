//! apply refuses conflicts and dirty trees and leaves the user's tree as it was.

use moat_worktree::test_utils::{commit_all, isolate_git, TestRepo};
use moat_worktree::{ApplyError, BranchName, Checkpoint};

use crate::status;

fn conflicting() -> (TestRepo, Checkpoint) {
    let repo = TestRepo::new("conflict");
    let cp = Checkpoint::create_branch(&repo.path, BranchName::Auto, "c").unwrap();
    std::fs::write(cp.workspace().join("README.md"), "agent\n").unwrap();
    std::fs::write(cp.workspace().join("new.txt"), "agent file\n").unwrap();
    commit_all(cp.workspace(), "agent edit");
    repo.write("README.md", "host\n");
    repo.commit_all("host edit");
    (repo, cp)
}

#[test]
fn conflicts_abort_cleanly() {
    isolate_git();
    for squash in [false, true] {
        let (repo, mut cp) = conflicting();
        let head = repo.git(&["rev-parse", "HEAD"]);
        let err = cp.apply(squash).unwrap_err();
        match &err {
            ApplyError::Conflict { files, .. } => assert_eq!(files, &["README.md"]),
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert!(err.to_string().contains("README.md"), "{err}");
        assert_eq!(repo.git(&["rev-parse", "HEAD"]), head);
        assert_eq!(status(&repo.path), "", "squash={squash}");
        assert_eq!(std::fs::read_to_string(repo.path.join("README.md")).unwrap(), "host\n");
        assert!(!repo.path.join("new.txt").exists());
        assert!(!repo.path.join(".git/CHERRY_PICK_HEAD").exists());
    }
}

#[test]
fn a_dirty_tree_is_refused_and_kept() {
    isolate_git();
    let repo = TestRepo::new("dirty");
    let mut cp = Checkpoint::create_branch(&repo.path, BranchName::Auto, "d").unwrap();
    std::fs::write(cp.workspace().join("a.txt"), "a\n").unwrap();
    commit_all(cp.workspace(), "a");
    repo.write("README.md", "unsaved user edit\n");
    let err = cp.apply(false).unwrap_err();
    assert!(matches!(&err, ApplyError::DirtyTree { files } if files == &["README.md"]), "{err:?}");
    assert_eq!(std::fs::read_to_string(repo.path.join("README.md")).unwrap(), "unsaved user edit\n");
    assert!(!repo.path.join("a.txt").exists());
}

#[test]
fn nothing_to_apply_is_an_error() {
    isolate_git();
    let repo = TestRepo::new("empty");
    let mut cp = Checkpoint::create_branch(&repo.path, BranchName::Auto, "e").unwrap();
    assert!(matches!(cp.apply(false), Err(ApplyError::NothingToApply { .. })));
}
