//! Who owns, on the host, what a guest writes to a share.
//!
//! Every file a guest creates in a shared folder appears on the host owned by
//! one user: the person who asked for the sandbox. With `sudo` that is the user
//! behind it (`SUDO_UID`/`SUDO_GID`), not root; a Moat run by root itself gives
//! root's files to root. Nobody else ever owns a file a guest wrote.

use serde::{Deserialize, Serialize};

/// A host uid and gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareOwner {
    /// Host user id.
    pub uid: u32,
    /// Host group id.
    pub gid: u32,
}

/// A process that is not root asked for files to be given to someone else.
#[derive(Debug, thiserror::Error)]
#[error(
    "shared files can only belong to you (uid {me}), not uid {asked}: only a Moat running as root may give them to another user"
)]
pub struct OwnerError {
    me: u32,
    asked: u32,
}

impl ShareOwner {
    /// The user behind this process: with `sudo` the user who ran it, otherwise
    /// the effective user.
    pub fn invoking() -> ShareOwner {
        let me = Self::effective();
        let var = |k| std::env::var(k).ok();
        Self::behind(me.uid, me.gid, var("SUDO_UID").as_deref(), var("SUDO_GID").as_deref())
    }

    /// This process's effective uid and gid.
    pub fn effective() -> ShareOwner {
        // SAFETY: geteuid/getegid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        ShareOwner { uid, gid }
    }

    /// [`ShareOwner::invoking`] from its inputs: `sudo`'s variables count only
    /// for root (anyone else could set them) and only when both parse.
    fn behind(euid: u32, egid: u32, sudo_uid: Option<&str>, sudo_gid: Option<&str>) -> ShareOwner {
        let parsed = sudo_uid.and_then(|u| u.parse().ok()).zip(sudo_gid.and_then(|g| g.parse().ok()));
        match parsed {
            Some((uid, gid)) if euid == 0 => ShareOwner { uid, gid },
            _ => ShareOwner { uid: euid, gid: egid },
        }
    }

    /// Whether this process may hand shares to `self`: root may name anyone,
    /// everyone else only themselves (virtiofsd could not do otherwise anyway).
    pub fn check_allowed(&self) -> Result<(), OwnerError> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if me == 0 || me == self.uid {
            Ok(())
        } else {
            Err(OwnerError { me, asked: self.uid })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sudo_names_the_owner_only_for_root() {
        let owner = |euid, u, g| ShareOwner::behind(euid, euid, u, g);
        assert_eq!(owner(0, Some("1000"), Some("1001")), ShareOwner { uid: 1000, gid: 1001 });
        assert_eq!(owner(0, None, None), ShareOwner { uid: 0, gid: 0 });
        // A normal user cannot claim to be someone else by setting sudo's variables.
        assert_eq!(owner(1000, Some("0"), Some("0")), ShareOwner { uid: 1000, gid: 1000 });
        // Half or garbled: the effective user.
        assert_eq!(owner(0, Some("1000"), None), ShareOwner { uid: 0, gid: 0 });
        assert_eq!(owner(0, Some("x"), Some("1")), ShareOwner { uid: 0, gid: 0 });
    }
}
