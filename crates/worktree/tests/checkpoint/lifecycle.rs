//! create → commit in the workspace → diff → apply → remove, in both modes.

use std::os::unix::fs::MetadataExt;

use moat_worktree::test_utils::{commit_all, git, isolate_git, TestRepo};
use moat_worktree::{BranchName, Checkpoint, CreateError, Mode};

use crate::{has_ref, status};

#[test]
fn branch_mode_round_trip_with_spaces_and_unicode() {
    isolate_git();
    let repo = TestRepo::new("my repo ü");
    let gitignore = std::fs::read_to_string(repo.path.join(".gitignore")).unwrap();

    let cp = Checkpoint::create_branch(&repo.path, BranchName::Auto, "agent box é ☕").unwrap();
    assert_eq!(cp.mode(), Mode::Branch);
    assert_eq!(cp.branch(), "moat/agent-box-é");
    assert_eq!(cp.workspace(), repo.path.join(".moat/worktrees/agent box é ☕"));
    assert!(cp.workspace().join(".git").is_dir(), "the workspace must hold its own .git for the guest");
    assert!(cp.workspace().join("README.md").exists());
    assert!(has_ref(&repo.path, "refs/heads/moat/agent-box-é"));
    assert_eq!(cp.guest_read_only_paths(), [repo.path.join(".git/objects")]);
    // `.moat/` is excluded privately; the tracked .gitignore is untouched.
    let exclude = std::fs::read_to_string(repo.path.join(".git/info/exclude")).unwrap();
    assert!(exclude.lines().any(|l| l == "/.moat/"), "{exclude}");
    assert_eq!(std::fs::read_to_string(repo.path.join(".gitignore")).unwrap(), gitignore);
    assert_eq!(status(&repo.path), "");

    // The agent commits inside its workspace.
    std::fs::write(cp.workspace().join("feature.txt"), "new feature\n").unwrap();
    commit_all(cp.workspace(), "add feature");
    assert!(!repo.path.join("feature.txt").exists());

    let diff = cp.diff().unwrap();
    assert!(diff.contains("+new feature"), "{diff}");
    let out = crate::streamed_diff(&cp);
    assert!(out.contains("+new feature"));
    assert!(cp.review().unwrap().is_empty(), "{:?}", cp.review().unwrap());

    let mut cp = Checkpoint::open(&repo.path, "agent box é ☕").unwrap();
    let applied = cp.apply(false).unwrap();
    assert!(applied.fast_forward);
    assert_eq!(applied.commits, 1);
    assert_eq!(std::fs::read_to_string(repo.path.join("feature.txt")).unwrap(), "new feature\n");

    let ws = cp.workspace().to_path_buf();
    cp.remove(false).unwrap();
    assert!(!ws.exists());
    assert!(!has_ref(&repo.path, "refs/heads/moat/agent-box-é"));
    assert!(Checkpoint::list(&repo.path).unwrap().is_empty());
}

#[test]
fn auto_names_do_not_collide_and_named_branches_are_checked() {
    isolate_git();
    let repo = TestRepo::new("names");
    repo.git(&["branch", "moat/box"]);
    let a = Checkpoint::create_branch(&repo.path, BranchName::Auto, "box").unwrap();
    assert_eq!(a.branch(), "moat/box-2");
    let b = Checkpoint::create_branch(&repo.path, BranchName::Auto, "box!").unwrap();
    assert_eq!(b.branch(), "moat/box-3");
    let again = Checkpoint::create_branch(&repo.path, BranchName::Auto, "box");
    assert!(matches!(again, Err(CreateError::AlreadyExists { .. })), "{again:?}");
    let taken = Checkpoint::create_branch(&repo.path, BranchName::Named("main".into()), "other");
    assert!(matches!(taken, Err(CreateError::BranchExists { .. })), "{taken:?}");
    let bad = Checkpoint::create_branch(&repo.path, BranchName::Named("has space".into()), "other");
    assert!(matches!(bad, Err(CreateError::InvalidBranch { .. })), "{bad:?}");
    // Failed attempts leave no workspace behind.
    assert!(!repo.path.join(".moat/worktrees/other").exists());
    assert_eq!(Checkpoint::list(&repo.path).unwrap().len(), 2);
}

#[test]
fn clone_mode_borrows_objects_without_writing_under_the_host_git() {
    isolate_git();
    let repo = TestRepo::new("host");
    let dest = repo.scratch("clone dest ✓");
    let mut cp = Checkpoint::create_clone(&repo.path, BranchName::Named("agent/work".into()), "c1", &dest).unwrap();
    assert_eq!(cp.workspace(), dest);
    assert_eq!(cp.host_ref(), "refs/moat/clones/agent/work");
    assert!(!has_ref(&repo.path, "refs/heads/agent/work"));
    let alternates = std::fs::read_to_string(dest.join(".git/objects/info/alternates")).unwrap();
    assert_eq!(alternates.trim(), repo.path.join(".git/objects").to_str().unwrap());

    let host_objects = || git(&repo.path, &["count-objects", "-v"]);
    let before = host_objects();
    std::fs::write(dest.join("a.txt"), "one\n").unwrap();
    commit_all(&dest, "first");
    std::fs::write(dest.join("b.txt"), "two\n").unwrap();
    commit_all(&dest, "second");
    assert_eq!(host_objects(), before, "the agent's commits must not land in the host's object store");
    // No file of the clone's object store is shared with the host by hard link.
    for entry in walk(&dest.join(".git/objects")) {
        assert_eq!(std::fs::metadata(&entry).unwrap().nlink(), 1, "{} is hard-linked", entry.display());
    }

    // The user moved on meanwhile: apply cherry-picks.
    repo.write("user.txt", "user\n");
    repo.commit_all("user work");
    let applied = cp.apply(false).unwrap();
    assert!(!applied.fast_forward);
    assert_eq!(applied.commits, 2);
    let log = repo.git(&["log", "--format=%s", "-3"]);
    assert_eq!(log, "second\nfirst\nuser work\n");
    assert!(has_ref(&repo.path, "refs/moat/clones/agent/work"));
    cp.remove(false).unwrap();
    assert!(!dest.exists());
    assert!(!has_ref(&repo.path, "refs/moat/clones/agent/work"));
}

#[test]
fn squash_makes_one_commit() {
    isolate_git();
    let repo = TestRepo::new("squash");
    let mut cp = Checkpoint::create_branch(&repo.path, BranchName::Auto, "sq").unwrap();
    for (file, msg) in [("x", "one"), ("y", "two"), ("z", "three")] {
        std::fs::write(cp.workspace().join(file), msg).unwrap();
        commit_all(cp.workspace(), msg);
    }
    let before = repo.git(&["rev-list", "--count", "HEAD"]);
    let applied = cp.apply(true).unwrap();
    assert_eq!(applied.commits, 3);
    assert_eq!(
        repo.git(&["rev-list", "--count", "HEAD"]).trim().parse::<u32>().unwrap(),
        before.trim().parse::<u32>().unwrap() + 1
    );
    let msg = repo.git(&["log", "-1", "--format=%B"]);
    assert!(msg.contains("* one") && msg.contains("* three"), "{msg}");
    assert!(repo.path.join("z").exists());
    cp.remove(false).unwrap();
}

#[test]
fn submodules_are_checked_out_in_the_workspace() {
    isolate_git();
    let sub = TestRepo::new("sub");
    sub.write("lib.txt", "library\n");
    sub.commit_all("lib");
    let repo = TestRepo::new("super");
    repo.git(&["-c", "protocol.file.allow=always", "submodule", "add", "-q", sub.path.to_str().unwrap(), "libs/sub"]);
    repo.commit_all("add submodule");

    let cp = Checkpoint::create_branch(&repo.path, BranchName::Auto, "with sub").unwrap();
    let lib = cp.workspace().join("libs/sub/lib.txt");
    assert_eq!(std::fs::read_to_string(&lib).unwrap(), "library\n");
    assert_eq!(cp.guest_read_only_paths().len(), 2, "{:?}", cp.guest_read_only_paths());
    assert!(cp.guest_read_only_paths()[1].ends_with(".git/modules/libs/sub/objects"));
    // The superproject sees a clean, populated submodule and the agent can commit.
    assert_eq!(status(cp.workspace()), "");
    std::fs::write(cp.workspace().join("top.txt"), "t").unwrap();
    commit_all(cp.workspace(), "top");
    let review = cp.review().unwrap();
    assert!(review.is_empty(), "{review:?}");
    cp.remove(true).unwrap();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
