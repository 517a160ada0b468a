//! `cargo xtask tidy`: repository rules that a compiler doesn't check. Also a `#[test]`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::util::root;

/// Longest source file we accept (see ../shared/STYLE.md: "small files").
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

fn rust_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = ["crates", "xtask", "examples", "benches"].iter().map(|d| root.join(d)).collect();
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
