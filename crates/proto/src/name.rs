//! What a sandbox may be called: one rule for the CLI, the daemon, the guest's
//! hostname and the checkpoint's git branch.
//!
//! A name is 1–63 characters of `a-z`, `0-9`, `-` and `.`, starting and ending
//! with a letter or digit, with no `..`. That is a valid hostname label
//! sequence, a valid git ref component, and safe in a file name. `_` is not
//! allowed (a hostname cannot hold it); [`SandboxName::from_words`] turns a
//! folder name such as `my_project` into `my-project`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest name (a hostname label).
pub const MAX_LEN: usize = 63;

/// A name that follows the rule. Stored records are read back as they were
/// (deserialising never fails), so a name made by an older rule stays usable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SandboxName(String);

/// A string that is not a sandbox name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid sandbox name {0:?}: use 1-63 characters from a-z, 0-9, '-' and '.', starting and ending with a letter or digit"
)]
pub struct NameError(pub String);

impl SandboxName {
    /// Checks `name` against the rule.
    pub fn parse(name: &str) -> Result<SandboxName, NameError> {
        let b = name.as_bytes();
        let edge = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let ok = (1..=MAX_LEN).contains(&b.len())
            && edge(b.first())
            && edge(b.last())
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'.'))
            && !name.contains("..");
        if ok {
            Ok(SandboxName(name.to_string()))
        } else {
            Err(NameError(name.to_string()))
        }
    }

    /// A valid name made of `words` (e.g. an agent and a folder name):
    /// lowercased, every run of other characters turned into one `-`, cut to
    /// the maximum length; `fallback` when nothing is left.
    pub fn from_words(words: &[&str], fallback: &str) -> SandboxName {
        let mut out = String::new();
        for c in words.join("-").chars() {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                out.push(c);
            } else if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
        }
        out.truncate(MAX_LEN);
        let out = out.trim_end_matches('-');
        SandboxName::parse(out).unwrap_or_else(|_| SandboxName(fallback.to_string()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SandboxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SandboxName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        for good in ["a", "shell-proj", "api.v2", "x9", &"a".repeat(63)] {
            assert!(SandboxName::parse(good).is_ok(), "{good:?} refused");
        }
        for bad in ["", "-x", "x-", ".x", "x.", "A", "a b", "a/b", "my_project", "a..b", &"a".repeat(64), "é"] {
            assert!(SandboxName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn words_become_a_valid_name() {
        let name = |w: &[&str]| SandboxName::from_words(w, "sandbox").to_string();
        assert_eq!(name(&["shell", "my_project"]), "shell-my-project");
        assert_eq!(name(&["shell", "My Project"]), "shell-my-project");
        assert_eq!(name(&["claude", "données"]), "claude-donn-es");
        assert_eq!(name(&["shell", "---"]), "shell");
        assert_eq!(name(&["", "___"]), "sandbox");
        assert!(SandboxName::parse(&name(&["shell", &"x".repeat(100)])).is_ok());
    }
}
