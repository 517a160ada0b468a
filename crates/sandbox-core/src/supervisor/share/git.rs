//! What to fix in place in a shared folder so that the user's own `git`, run
//! there on the host, trusts nothing the guest wrote.
//!
//! Git on the host reads a repository's executable surfaces from its git
//! folder: `config` (and what it includes), `hooks/`, `info/`, `commondir` and
//! `config.worktree` (which redirect or extend the config), `modules/` and
//! `worktrees/` (the git folders of submodules and linked worktrees, with
//! configs of their own), and `objects/info/alternates` (other object stores,
//! or a FIFO that hangs git). The guest must still commit, so objects, refs,
//! logs, the index and `HEAD` stay writable.
//!
//! The [`Shield`] of a share says, from what is on disk when the VM starts:
//! * which paths virtiofsd sees **read-only** (bind mounts in its own mount
//!   namespace: every surface above that exists);
//! * which folders are **pinned** (bound onto themselves, so the guest can neither
//!   rename nor remove them: the git folder, its `objects/` and `objects/info/`;
//!   renaming a folder that merely *contains* a mount point is allowed, hence
//!   each level);
//! * which **names may not be created** in which pinned folder (by `open`,
//!   `mkdir`, `mknod`, `symlink`, `link` or `rename`): the surfaces that do not
//!   exist yet, and, at the root of a share that is not a repository, `.git`
//!   and `HEAD` (so the guest can make the folder neither a repository nor a
//!   bare one).
//!
//! Not covered, and said so in ARCHITECTURE.md: repositories nested below the
//! share's root (the guest can make new ones there), and a rebase, `am` or
//! cherry-pick the agent left in progress (its todo list may hold `exec` lines
//! that `--continue` runs).

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A folder, by device and inode number (stable while it is pinned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirId {
    pub dev: u64,
    pub ino: u64,
}

impl DirId {
    pub(crate) fn of(path: &Path) -> Option<DirId> {
        let m = std::fs::symlink_metadata(path).ok().filter(|m| m.is_dir())?;
        Some(DirId { dev: m.dev(), ino: m.ino() })
    }
}

/// One bind mount onto itself in virtiofsd's mount namespace.
#[derive(Debug, Clone)]
pub(crate) struct Bind {
    pub path: CString,
    pub read_only: bool,
    /// `MS_NOSUID`/`MS_NODEV`/`MS_NOEXEC`/atime flags of the mount it sits on,
    /// which a read-only remount must repeat (a user namespace may not drop them).
    pub keep: libc::c_ulong,
}

/// Names in the git folder that git reads as configuration, programs or
/// redirections.
const GIT_SURFACES: &[&str] = &[
    "config",
    "config.worktree",
    "commondir",
    "gitdir",
    "hooks",
    "info",
    "modules",
    "worktrees",
    "branches",
    "remotes",
];
/// Names in `objects/info` that send git to other object stores.
const ALTERNATES: &[&str] = &["alternates", "http-alternates"];

/// What to bind and what to refuse in one share.
#[derive(Debug, Default)]
pub(crate) struct Shield {
    pub binds: Vec<Bind>,
    pub refused: Vec<(DirId, &'static [&'static str])>,
}

impl Shield {
    /// The shield of the read-write share rooted at `root`, from what is there now.
    pub(crate) fn for_share(root: &Path) -> Shield {
        let mut s = Shield::default();
        let Some(root_id) = DirId::of(root) else { return s };
        let git = root.join(".git");
        let meta = std::fs::symlink_metadata(&git).ok();
        match meta {
            Some(m) if m.is_dir() => {
                s.refused.push((root_id, &[".git"]));
                s.protect_git_dir(&git);
            }
            Some(m) if m.is_file() => {
                // A `gitdir:` file: it may not change or be replaced.
                s.refused.push((root_id, &[".git"]));
                s.bind(&git, true);
            }
            // Absent (or a symlink, which the guest could remove): the guest may
            // make the root neither a repository nor a bare one.
            _ => s.refused.push((root_id, &[".git", "HEAD"])),
        }
        s
    }

    fn protect_git_dir(&mut self, git: &Path) {
        self.pin_dir(git, GIT_SURFACES);
        for name in GIT_SURFACES {
            let p = git.join(name);
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir() || m.is_file()) {
                self.bind(&p, true);
            }
        }
        let objects = git.join("objects");
        let info = objects.join("info");
        if DirId::of(&info).is_some() {
            self.pin_dir(&objects, &[]);
            self.pin_dir(&info, ALTERNATES);
            for name in ALTERNATES {
                let p = info.join(name);
                if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
                    self.bind(&p, true);
                }
            }
        } else if DirId::of(&objects).is_some() {
            self.pin_dir(&objects, &["info"]);
        }
    }

    /// Binds `dir` onto itself (pinned, still writable) and refuses `names` in it.
    fn pin_dir(&mut self, dir: &Path, names: &'static [&'static str]) {
        if let Some(id) = DirId::of(dir) {
            self.bind(dir, false);
            if !names.is_empty() {
                self.refused.push((id, names));
            }
        }
    }

    fn bind(&mut self, path: &Path, read_only: bool) {
        if let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) {
            self.binds.push(Bind { keep: mount_flags(path), path: c, read_only });
        }
    }

    /// Whether creating `name` in the folder `dir` is refused.
    pub(crate) fn refuses(&self, dir: DirId, name: &[u8]) -> bool {
        self.refused.iter().any(|(d, names)| *d == dir && names.iter().any(|n| n.as_bytes() == name))
    }

    /// Whether `name` is refused in some folder: for calls whose folder can't
    /// be told (a path with `/` in it), refused wherever its last part is.
    pub(crate) fn refuses_anywhere(&self, name: &[u8]) -> bool {
        self.refused.iter().any(|(_, names)| names.iter().any(|n| n.as_bytes() == name))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.binds.is_empty() && self.refused.is_empty()
    }
}

/// The flags of the mount `path` is on that a bind remount has to keep.
fn mount_flags(path: &Path) -> libc::c_ulong {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else { return 0 };
    // SAFETY: statvfs writes only into `st`, a zeroed struct it fully owns.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    let map = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    map.iter().filter(|(st_flag, _)| st.f_flag & *st_flag != 0).fold(0, |acc, (_, ms)| acc | ms)
}
