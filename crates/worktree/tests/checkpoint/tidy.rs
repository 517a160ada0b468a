//! Only `crates/worktree/src/git.rs` builds a `git` command: every git call
//! Moat makes on the host goes through its one audited runner.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            // Tests and fuzz targets drive git themselves, as the user or the agent.
            if !["target", "tests", "fuzz", ".git"].contains(&name.to_str().unwrap_or("")) {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs")
            // Unit-test modules (`tests.rs`, `tests_*.rs`) drive git as the user does.
            && !name.to_str().is_some_and(|n| n == "tests.rs" || n.starts_with("tests_"))
        {
            out.push(path);
        }
    }
}

#[test]
fn only_git_rs_runs_git() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
    let mut files = Vec::new();
    for top in ["crates", "xtask", "examples", "benches"] {
        rust_files(&root.join(top), &mut files);
    }
    assert!(files.len() > 50, "the workspace was not found from {}", root.display());
    let allowed = [root.join("crates/worktree/src/git.rs"), root.join("crates/worktree/src/test_utils.rs")];
    let mut offenders = Vec::new();
    for file in files.iter().filter(|f| !allowed.contains(f)) {
        let text = std::fs::read_to_string(file).unwrap();
        let squashed: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if squashed.contains("Command::new(\"git\")") || squashed.contains("Command::new(\"git\".") {
            offenders.push(file.strip_prefix(&root).unwrap().display().to_string());
        }
    }
    assert!(
        offenders.is_empty(),
        "these files build a `git` command; go through moat-worktree's `Git` (git.rs) instead: {offenders:?}"
    );
}
