//! `cargo xtask tidy`: repository rules that a compiler doesn't check. Also a `#[test]`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::util::root;

/// Longest source file we accept: a file past this wants splitting.
const MAX_LINES: usize = 800;

/// Checks every rule; fails listing every violation.
pub fn check() -> Result<()> {
    let mut problems = Vec::new();
    let root = root();
    for file in rust_files(&root) {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let rel = file.strip_prefix(&root).unwrap_or(&file).display().to_string();
        let lines = text.lines().count();
        if lines > MAX_LINES {
            problems.push(format!("{rel}: {lines} lines (max {MAX_LINES}); split it"));
        }
        if text.contains(concat!("#[", "ignore")) {
            problems.push(format!("{rel}: an ignore attribute hides a test; fix the test or delete it"));
        }
        if rel.ends_with("lib.rs") && !text.trim_start().starts_with("//!") {
            problems.push(format!("{rel}: lib.rs must open with a //! doc saying what the crate is for"));
        }
        let runtime = ["supervisor", "backend", "egress"].map(|m| format!("crates/sandbox-core/src/{m}"));
        if runtime.iter().any(|m| rel.starts_with(m.as_str())) {
            for control in ["manager", "state", "spec", "daemon"] {
                if text.contains(&format!("crate::{control}")) {
                    problems.push(format!(
                        "{rel}: the per-VM runtime names `crate::{control}`; the arrow goes from the control plane \
                         to the runtime only (move what both need into a shared module)"
                    ));
                }
            }
        }
        if !is_test_file(&rel) && text.contains(concat!("cfg!", "(test)")) {
            let what = concat!("cfg!", "(test)");
            problems.push(format!("{rel}: `{what}` in production code; use #[cfg(test)] items or a parameter"));
        }
    }
    for doc in ["ARCHITECTURE.md", "README.md", "docs/api.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap_or_default();
        for path in repo_paths(&text) {
            if !root.join(&path).exists() {
                problems.push(format!("{doc}: names `{path}`, which does not exist"));
            }
        }
    }
    let arch = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap_or_default();
    for krate in std::fs::read_dir(root.join("crates")).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default() {
        let name = krate.file_name().to_string_lossy().into_owned();
        if !arch.contains(&format!("crates/{name}")) {
            problems.push(format!("ARCHITECTURE.md: no code-map entry for crates/{name}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("tidy found {} problem(s):\n  {}", problems.len(), problems.join("\n  "))
    }
}

/// Test code: integration test folders and unit-test modules.
fn is_test_file(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    rel.split('/').any(|part| part == "tests") || name == "tests.rs" || name.starts_with("tests_")
}

/// Repository paths a document names in backticks (`crates/…`, `xtask/…`,
/// `fuzz/…`, `docs/…`), without a trailing `:line`.
fn repo_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, span) in text.split('`').enumerate() {
        let is_code = i % 2 == 1;
        let rooted = ["crates/", "xtask/", "fuzz/", "docs/"].iter().any(|p| span.starts_with(p));
        if is_code && rooted && !span.contains(['*', '<', ' ', '{']) {
            out.push(span.split(':').next().unwrap_or(span).trim_end_matches('/').to_string());
        }
    }
    out
}

fn rust_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> =
        ["crates", "xtask", "examples", "benches", "fuzz"].iter().map(|d| root.join(d)).collect();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && e.file_name() != "target" {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn tidy() {
    check().unwrap();
}

#[test]
fn documents_name_only_paths_that_exist_and_tests_are_told_apart() {
    let named = repo_paths("see `crates/proto/src/exec/mod.rs:12` and `crates/x/*.rs`, not `moat run`");
    assert_eq!(named, ["crates/proto/src/exec/mod.rs"]);
    assert!(is_test_file("crates/cli/tests/e2e/escape.rs") && is_test_file("crates/a/src/b/tests_git.rs"));
    assert!(!is_test_file("crates/sandbox-core/src/credentials.rs"));
}
