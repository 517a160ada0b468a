//! Accounts from `/etc/passwd` and `/etc/group`, parsed directly.
//!
//! The agent is a static binary: there is no NSS, so `getpwnam` is not an option.

use std::path::Path;

/// A user the agent can run a process as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name (the uid in decimal for a uid that has no passwd entry).
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
    /// Supplementary groups (the primary group first).
    pub groups: Vec<u32>,
}

/// Why a user could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// No passwd entry has this name.
    #[error("no user named `{0}` in /etc/passwd")]
    Unknown(String),
    /// `/etc/passwd` could not be read.
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Resolves `who` (a name or a numeric uid) against `<etc>/passwd` and `<etc>/group`.
///
/// A numeric uid without a passwd entry is allowed: it runs with gid = uid, home `/`.
pub fn lookup(etc: &Path, who: &str) -> Result<Account, UserError> {
    let passwd = read(etc, "passwd")?;
    // A missing /etc/group only means no supplementary groups.
    let group = std::fs::read_to_string(etc.join("group")).unwrap_or_default();
    let numeric: Option<u32> = who.parse().ok();
    let found = passwd_entries(&passwd).find(|e| match numeric {
        Some(uid) => e.uid == uid,
        None => e.name == who,
    });
    let mut account = match (found, numeric) {
        (Some(e), _) => e,
        (None, Some(uid)) => Account {
            name: uid.to_string(),
            uid,
            gid: uid,
            home: "/".into(),
            shell: "/bin/sh".into(),
            groups: Vec::new(),
        },
        (None, None) => return Err(UserError::Unknown(who.to_string())),
    };
    account.groups = groups_of(&group, &account.name, account.gid);
    Ok(account)
}

fn read(etc: &Path, file: &str) -> Result<String, UserError> {
    let path = etc.join(file);
    std::fs::read_to_string(&path).map_err(|source| UserError::Read { path: path.display().to_string(), source })
}

/// Well-formed lines of a passwd file (`name:pw:uid:gid:gecos:home:shell`).
fn passwd_entries(text: &str) -> impl Iterator<Item = Account> + '_ {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || f[0].is_empty() {
            return None;
        }
        Some(Account {
            name: f[0].to_string(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5].to_string(),
            shell: if f[6].is_empty() { "/bin/sh".into() } else { f[6].to_string() },
            groups: Vec::new(),
        })
    })
}

/// The primary gid followed by every group (`name:pw:gid:members`) listing `user`.
fn groups_of(text: &str, user: &str, primary: u32) -> Vec<u32> {
    let mut groups = vec![primary];
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            continue;
        }
        let Ok(gid) = f[2].parse::<u32>() else { continue };
        if f[3].split(',').any(|m| m == user) && !groups.contains(&gid) {
            groups.push(gid);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etc(passwd: &str, group: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("passwd"), passwd).unwrap();
        std::fs::write(dir.path().join("group"), group).unwrap();
        dir
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        broken line\n\
        agent:x:1000:1000:Agent:/home/agent:\n";
    const GROUP: &str = "root:x:0:\nagent:x:1000:\ndocker:x:999:agent,bob\nwheel:x:10:bob\nbad:x:zz:agent\n";

    #[test]
    fn by_name_with_supplementary_groups() {
        let dir = etc(PASSWD, GROUP);
        let a = lookup(dir.path(), "agent").unwrap();
        assert_eq!((a.uid, a.gid, a.home.as_str()), (1000, 1000, "/home/agent"));
        assert_eq!(a.shell, "/bin/sh");
        assert_eq!(a.groups, vec![1000, 999]);
    }

    #[test]
    fn by_uid_known_and_unknown() {
        let dir = etc(PASSWD, GROUP);
        assert_eq!(lookup(dir.path(), "0").unwrap().name, "root");
        let ghost = lookup(dir.path(), "4242").unwrap();
        assert_eq!((ghost.uid, ghost.gid, ghost.home.as_str()), (4242, 4242, "/"));
    }

    #[test]
    fn unknown_name_is_an_error() {
        let dir = etc(PASSWD, GROUP);
        assert!(matches!(lookup(dir.path(), "mallory"), Err(UserError::Unknown(_))));
    }
}
