//! Git LFS: pointers stay pointers in Moat's calls (no filter runs), the host's
//! content is readable from the workspace, and `apply` brings the agent's new
//! content back verified.

use std::path::Path;

use moat_worktree::test_utils::{
    commit_all, git, git_command, has_git_lfs, isolate_git, lfs_pointer, marker_script, put_lfs_object, write, TestRepo,
};
use moat_worktree::{ApplyError, BranchName, Checkpoint, Concern};

/// `git status --porcelain` that cannot run the marker filter or hooks (a
/// racily-clean file would make plain git re-read it through the clean filter).
fn status(repo: &Path) -> String {
    let off = [
        "filter.lfs.clean=",
        "filter.lfs.smudge=",
        "filter.lfs.process=",
        "filter.lfs.required=false",
        "core.hooksPath=/dev/null",
    ];
    let mut args: Vec<&str> = off.iter().flat_map(|kv| ["-c", kv]).collect();
    args.push("status");
    args.push("--porcelain");
    git(repo, &args)
}

const HOOKS: &[&str] =
    &["post-index-change", "post-checkout", "post-merge", "reference-transaction", "post-commit", "pre-commit"];

/// A repository whose `*.bin` are LFS pointers, committed without LFS
/// installed, and then LFS's filters "installed" as a marker script: if any
/// Moat call ran a filter, the marker would appear.
fn lfs_repo(name: &str, first: &[u8]) -> (TestRepo, std::path::PathBuf) {
    let repo = TestRepo::new(name);
    repo.write(".gitattributes", "*.bin filter=lfs diff=lfs merge=lfs -text\n");
    repo.write("data.bin", &lfs_pointer(first).1);
    put_lfs_object(&repo.path.join(".git"), first);
    repo.commit_all("track data.bin with LFS");
    let marker = repo.scratch("FILTER RAN");
    let script = repo.scratch("fake-git-lfs.sh");
    marker_script(&script, &marker);
    for (key, value) in [
        ("filter.lfs.clean", script.to_str().unwrap()),
        ("filter.lfs.smudge", script.to_str().unwrap()),
        ("filter.lfs.process", script.to_str().unwrap()),
        ("filter.lfs.required", "true"),
    ] {
        repo.git(&["config", key, value]);
    }
    // And hooks the index updates, checkouts and merges of `apply` would fire.
    for hook in HOOKS {
        marker_script(&repo.path.join(".git/hooks").join(hook), &marker);
    }
    (repo, marker)
}

fn object(git_dir: &Path, content: &[u8]) -> std::path::PathBuf {
    let (oid, _) = lfs_pointer(content);
    git_dir.join("lfs/objects").join(&oid[0..2]).join(&oid[2..4]).join(oid)
}

#[test]
fn lfs_content_comes_back_verified_and_no_filter_runs() {
    isolate_git();
    let (first, second, third) =
        (b"first \x00 binary".as_slice(), b"second \xff version".as_slice(), b"new file".as_slice());
    let (repo, marker) = lfs_repo("lfs host ü", first);
    let mut cp = Checkpoint::create_branch(&repo.path, BranchName::Auto, "lfs box").unwrap();
    let ws = cp.workspace().to_path_buf();
    // The checkpoint holds the pointer; the host's content is shared read-only.
    assert_eq!(std::fs::read_to_string(ws.join("data.bin")).unwrap(), lfs_pointer(first).1);
    assert!(
        cp.guest_read_only_paths().contains(&repo.path.join(".git/lfs/objects")),
        "{:?}",
        cp.guest_read_only_paths()
    );

    // The agent's git-lfs stores new content in the workspace's own store.
    write(&ws, "data.bin", &lfs_pointer(second).1);
    write(&ws, "sub dir/new ☕.bin", &lfs_pointer(third).1);
    put_lfs_object(&ws.join(".git"), second);
    put_lfs_object(&ws.join(".git"), third);
    commit_all(&ws, "agent: new content");
    assert!(!object(&repo.path.join(".git"), second).exists());

    assert!(cp.review().unwrap().of(Concern::LfsMissing).next().is_none());
    let applied = cp.apply(false).unwrap();
    assert!(!marker.exists(), "a filter ran: {}", std::fs::read_to_string(&marker).unwrap());
    assert_eq!((applied.lfs_objects, applied.lfs_files), (2, 2), "{applied:?}");
    assert!(applied.lfs_pointers.is_empty());
    // Content is in the host's store and, as the user's LFS checkout would
    // have written it, in the host's files.
    assert_eq!(std::fs::read(object(&repo.path.join(".git"), second)).unwrap(), second);
    assert_eq!(std::fs::read(repo.path.join("data.bin")).unwrap(), second);
    assert_eq!(std::fs::read(repo.path.join("sub dir/new ☕.bin")).unwrap(), third);
    // The index still records the pointers.
    assert_eq!(repo.git(&["cat-file", "blob", "HEAD:data.bin"]), lfs_pointer(second).1);

    // Moat's own clean-tree check sees those files as unchanged (git without
    // the clean filter cannot): a second apply is not refused as dirty.
    let mut again = Checkpoint::create_branch(&repo.path, BranchName::Auto, "lfs again").unwrap();
    write(again.workspace(), "plain.txt", "plain\n");
    commit_all(again.workspace(), "plain");
    again.apply(false).unwrap();
    assert_eq!(std::fs::read(repo.path.join("data.bin")).unwrap(), second);
    assert!(!marker.exists(), "a filter ran: {}", std::fs::read_to_string(&marker).unwrap());
    // A real edit is still a change.
    std::fs::write(repo.path.join("data.bin"), b"user edit").unwrap();
    let mut third_cp = Checkpoint::create_branch(&repo.path, BranchName::Auto, "lfs third").unwrap();
    write(third_cp.workspace(), "p2.txt", "p\n");
    commit_all(third_cp.workspace(), "p2");
    assert!(matches!(third_cp.apply(false), Err(ApplyError::DirtyTree { files }) if files == ["data.bin"]));
}

#[test]
fn missing_forged_or_symlinked_lfs_content_is_refused() {
    isolate_git();
    let first = b"original".as_slice();
    let (repo, marker) = lfs_repo("lfs refuse", first);
    let head = repo.git(&["rev-parse", "HEAD"]);
    // Content the host has at some path, that a symlink in the workspace's store points at.
    let secret = b"host file the agent wants copied".as_slice();
    let secret_path = repo.scratch("secret.bin");
    std::fs::write(&secret_path, secret).unwrap();
    type Plant<'a> = &'a dyn Fn(&Path);
    let cases: [(&str, &[u8], Plant); 3] = [
        ("missing", b"never stored", &|_: &Path| {}),
        ("forged", b"claimed content", &|ws: &Path| {
            let path = put_lfs_object(&ws.join(".git"), b"claimed content");
            std::fs::write(path, b"claimed CONTENT").unwrap(); // same size, other bytes
        }),
        ("symlinked", secret, &|ws: &Path| {
            let path = object(&ws.join(".git"), secret);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(&secret_path, path).unwrap();
        }),
    ];
    for (name, content, plant) in cases {
        let mut cp = Checkpoint::create_branch(&repo.path, BranchName::Auto, name).unwrap();
        let ws = cp.workspace().to_path_buf();
        write(&ws, "data.bin", &lfs_pointer(content).1);
        // Pointer-shaped text in a file LFS does not track is not LFS's business.
        write(&ws, "fixture.txt", &lfs_pointer(b"not lfs").1);
        plant(&ws);
        commit_all(&ws, name);
        let review = cp.review().unwrap();
        assert!(review.of(Concern::LfsMissing).any(|f| f.path == "data.bin"), "{name}: {review:?}");
        assert!(!review.of(Concern::LfsMissing).any(|f| f.path == "fixture.txt"), "{name}: {review:?}");
        let err = cp.apply(false).unwrap_err();
        assert!(matches!(&err, ApplyError::LfsContent { files } if files == &["data.bin"]), "{name}: {err:?}");
        assert!(err.to_string().contains("data.bin"), "{err}");
        assert_eq!(repo.git(&["rev-parse", "HEAD"]), head, "{name}: nothing was changed");
        assert!(!object(&repo.path.join(".git"), content).exists(), "{name}: the host's store did not gain it");
        assert_eq!(status(&repo.path), "");
    }
    assert!(!marker.exists());
}

#[test]
fn a_real_git_lfs_repository_round_trips() {
    isolate_git();
    if !has_git_lfs() {
        // `cargo xtask setup` installs it; CI sets MOAT_REQUIRE_E2E=1 so a missing one fails there.
        assert!(
            std::env::var("MOAT_REQUIRE_E2E").as_deref() != Ok("1"),
            "MOAT_REQUIRE_E2E=1 but git-lfs is not installed"
        );
        eprintln!("\n!!! SKIPPING a_real_git_lfs_repository_round_trips: git-lfs is not installed (apt-get install git-lfs)\n");
        return;
    }
    let repo = TestRepo::new("real lfs");
    repo.git(&["lfs", "install", "--local"]);
    repo.git(&["lfs", "track", "*.bin"]);
    let original: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(repo.path.join("big.bin"), &original).unwrap();
    repo.commit_all("big binary through git-lfs");
    assert_eq!(
        repo.git(&["cat-file", "-p", "HEAD:big.bin"]).lines().next(),
        Some("version https://git-lfs.github.com/spec/v1")
    );

    let mut cp = Checkpoint::create_branch(&repo.path, BranchName::Auto, "real lfs").unwrap();
    let ws = cp.workspace().to_path_buf();
    // Moat ran no filter: the checkpoint holds the pointer…
    assert!(std::fs::read_to_string(ws.join("big.bin")).unwrap().starts_with("version https://git-lfs"));
    assert!(cp.guest_read_only_paths().contains(&repo.path.join(".git/lfs/objects")));
    // …and the agent's git-lfs finds the content offline, through the alternates.
    git(&ws, &["lfs", "install", "--local"]);
    git(&ws, &["lfs", "checkout"]);
    assert_eq!(std::fs::read(ws.join("big.bin")).unwrap(), original);

    let changed: Vec<u8> = original.iter().rev().copied().collect();
    std::fs::write(ws.join("big.bin"), &changed).unwrap();
    std::fs::write(ws.join("other.bin"), b"\x00\x01 second binary").unwrap();
    commit_all(&ws, "agent: change binaries");
    assert_eq!(crate::status(&ws), "");

    let applied = cp.apply(false).unwrap();
    assert_eq!((applied.lfs_objects, applied.lfs_files), (2, 2), "{applied:?}");
    assert_eq!(std::fs::read(repo.path.join("big.bin")).unwrap(), changed);
    assert_eq!(std::fs::read(repo.path.join("other.bin")).unwrap(), b"\x00\x01 second binary");
    // The user's own git and git-lfs agree the tree is clean and complete.
    let out = git_command(&repo.path).args(["status", "--porcelain"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    git(&repo.path, &["lfs", "fsck"]);
    let files = git(&repo.path, &["lfs", "ls-files"]);
    assert!(files.contains("big.bin") && files.contains("other.bin"), "{files}");
    cp.remove(false).unwrap();
}
