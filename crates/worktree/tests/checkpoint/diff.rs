//! `changes()` shows the commits and, separately, what is not committed yet;
//! `review` flags the same files and `rm` refuses to lose them.

use moat_worktree::test_utils::{commit_all, git, isolate_git, write, TestRepo};
use moat_worktree::{BranchName, Checkpoint, Concern};

#[test]
fn diff_shows_commits_and_uncommitted_work_separately() {
    isolate_git();
    let repo = TestRepo::new("diff repo ☕");
    let dest = repo.scratch("clone ü");
    let name = BranchName::Named("feature/naïve-ü".into());
    let cp = Checkpoint::create_clone(&repo.path, name, "diff box é", &dest).unwrap();
    assert_eq!(cp.host_ref(), "refs/moat/clones/feature/naïve-ü");
    let ws = cp.workspace().to_path_buf();
    write(&ws, "naïve file.txt", "committed line\n");
    commit_all(&ws, "agent: commit");
    // Staged, unstaged and untracked work on top.
    write(&ws, "README.md", "staged edit\n");
    git(&ws, &["add", "README.md"]);
    write(&ws, "naïve file.txt", "committed line\nunstaged edit\n");
    write(&ws, "notes ü/todo.txt", "untracked\n");

    let changes = cp.changes().unwrap();
    assert!(changes.committed.contains("+committed line"), "{}", changes.committed);
    assert!(!changes.committed.contains("edit"), "{}", changes.committed);
    assert!(changes.uncommitted.contains("+staged edit"), "{}", changes.uncommitted);
    assert!(changes.uncommitted.contains("+unstaged edit"), "{}", changes.uncommitted);
    assert!(changes.uncommitted.contains("b/naïve file.txt"), "paths are not quoted: {}", changes.uncommitted);
    assert!(!changes.uncommitted.contains("+committed line"), "{}", changes.uncommitted);
    assert_eq!(changes.untracked, ["notes ü/todo.txt"]);
    assert!(!changes.is_committed());
    let text = changes.to_string();
    let at = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("{needle:?} missing in\n{text}"));
    assert!(at("# moat: committed on feature/naïve-ü") < at("+committed line"));
    assert!(
        at("+committed line") < at("# moat: uncommitted changes")
            && at("# moat: uncommitted changes") < at("+staged edit")
    );
    assert!(
        at("+unstaged edit") < at("# moat: untracked files")
            && at("# moat: untracked files") < at("?? notes ü/todo.txt")
    );
    // The committed-only views are unchanged.
    assert!(!cp.diff().unwrap().contains("edit"));
    let out = crate::streamed_diff(&cp);
    assert!(!out.contains("edit"));

    // review flags exactly these files, rm refuses naming them.
    let review = cp.review().unwrap();
    let flagged = |c: Concern| review.of(c).map(|f| f.path.clone()).collect::<Vec<_>>();
    assert_eq!(flagged(Concern::Uncommitted), ["README.md", "naïve file.txt"], "{review:?}");
    assert_eq!(flagged(Concern::Untracked), ["notes ü/todo.txt"], "{review:?}");
    let lost = cp.unsaved().unwrap();
    assert_eq!(lost.dirty, ["README.md", "naïve file.txt", "notes ü/todo.txt"]);
    let msg = cp.clone().remove(false).unwrap_err().to_string();
    for part in ["\"diff box é\"", "agent: commit", "3 uncommitted files", "naïve file.txt", "notes ü/todo.txt"] {
        assert!(msg.contains(part), "{msg:?} lacks {part:?}");
    }

    // Once everything is committed, the workspace part is empty.
    commit_all(&ws, "agent: the rest");
    let changes = cp.changes().unwrap();
    assert!(changes.is_committed(), "{changes:?}");
    assert!(changes.to_string().contains("(none)"));
    cp.remove(true).unwrap();
}

#[test]
fn a_fresh_checkpoint_shows_nothing() {
    isolate_git();
    let repo = TestRepo::new("fresh");
    let cp = Checkpoint::create_branch(&repo.path, BranchName::Auto, "fresh").unwrap();
    let changes = cp.changes().unwrap();
    assert_eq!((changes.committed.as_str(), changes.uncommitted.as_str()), ("", ""));
    assert!(changes.untracked.is_empty());
    assert!(changes.to_string().contains("(no commits)"));
}
