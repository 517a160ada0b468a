//! Sandbox and branch names: what is accepted and how `Auto` picks one.

use crate::error::CreateError;
use crate::git::Git;

/// The branch a checkpoint puts the sandbox's work on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BranchName {
    /// Exactly this branch; it must not exist yet.
    Named(String),
    /// `moat/<sandbox>`, or `moat/<sandbox>-2`, `-3`… if that is taken.
    Auto,
}

/// Sandbox names become a folder name and part of a file name: any text without
/// `/`, NUL or control characters, not `.` or `..`. Spaces and Unicode are fine.
pub(crate) fn check_sandbox(name: &str) -> Result<(), CreateError> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.starts_with('.')
        || name.chars().any(|c| c == '/' || c == '\\' || c.is_control());
    if bad {
        return Err(CreateError::InvalidSandbox { name: name.to_string() });
    }
    Ok(())
}

/// A ref-safe, readable form of a sandbox name: letters and digits (any script)
/// kept, everything else becomes one `-`.
pub(crate) fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_alphanumeric() || c == '_' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-').to_string();
    if out.is_empty() {
        "sandbox".to_string()
    } else {
        out
    }
}

/// Whether `refs/heads/<branch>` is a valid ref name.
pub(crate) fn valid_branch(git: &Git, branch: &str) -> Result<bool, CreateError> {
    if branch.starts_with('-') {
        return Ok(false);
    }
    Ok(git.succeeds(["check-ref-format", &format!("refs/heads/{branch}")])?)
}

/// Candidates for `Auto`, in order.
pub(crate) fn auto_candidates(sandbox: &str) -> impl Iterator<Item = String> {
    let base = format!("moat/{}", slug(sandbox));
    (1..=999).map(move |n| if n == 1 { base.clone() } else { format!("{base}-{n}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_readable_and_ref_safe() {
        assert_eq!(slug("my box"), "my-box");
        assert_eq!(slug("café ☕ 2"), "café-2");
        assert_eq!(slug("..//"), "sandbox");
        assert_eq!(auto_candidates("a b").nth(1).unwrap(), "moat/a-b-2");
    }

    #[test]
    fn sandbox_names_reject_paths() {
        assert!(check_sandbox("ok name é").is_ok());
        for bad in ["", ".", "..", "a/b", ".hidden", "tab\there"] {
            assert!(check_sandbox(bad).is_err(), "{bad:?} accepted");
        }
    }
}
