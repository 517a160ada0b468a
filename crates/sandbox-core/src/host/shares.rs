//! Which host folders a sandbox may share.
//!
//! A share is writable by root in a hostile guest (or readable, for `:ro`), so
//! it must never be, contain, or lie inside a folder whose contents the host
//! trusts: `$MOAT_HOME` (the vault and its key, `policy.db`, the `hosts`
//! override, every sandbox's disk), the image cache (what every sandbox boots),
//! or the folder of a program the host runs (`moat` itself, `moat-vsock`,
//! `moat-vmm`, `virtiofsd`, QEMU, `mkfs.ext4`, the guest agent). The user's home
//! folder itself is refused too (it holds their credentials), though a folder
//! inside it is fine; under `sudo`, the invoking user's home as well.
//!
//! Folders are compared after resolving symlinks, by path and by device and
//! inode: a bind mount of a protected folder elsewhere has the same identity,
//! so it is caught wherever it is mounted.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::backend::{find_tool, Tool};
use crate::paths::Home;

/// A file's identity: device and inode.
type Id = (u64, u64);

fn id_of(path: &Path) -> Option<Id> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// What a protected folder is, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guarded {
    /// `$MOAT_HOME`.
    MoatHome,
    /// The guest image cache.
    ImageCache,
    /// The folder of a program the host runs.
    Program(String),
    /// A user's home folder (sharing a folder inside it is fine).
    HomeFolder,
}

impl Guarded {
    fn noun(&self) -> String {
        match self {
            Guarded::MoatHome => "Moat's own folder".into(),
            Guarded::ImageCache => "Moat's image cache".into(),
            Guarded::Program(name) => format!("the folder of {name}"),
            Guarded::HomeFolder => "a home folder".into(),
        }
    }

    fn why(&self) -> &'static str {
        match self {
            Guarded::MoatHome => "holds the vault and its key, the network policy and every sandbox's disk",
            Guarded::ImageCache => "holds what every sandbox boots",
            Guarded::Program(_) => "holds a program the host runs",
            Guarded::HomeFolder => "holds its user's credentials and Moat's own data",
        }
    }
}

/// How a share relates to a protected folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// The same folder (perhaps through a symlink or a bind mount).
    Is,
    /// The share holds the protected folder.
    Contains,
    /// The share lies inside the protected folder.
    Inside,
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Relation::Is => "it is",
            Relation::Contains => "it contains",
            Relation::Inside => "it is inside",
        })
    }
}

/// Why a folder may not be shared.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// The folder is, holds or lies inside a folder the host trusts.
    #[error(
        "cannot share {path}: {relation} {noun} ({guarded}), which {why}; {advice}",
        noun = .what.noun(), why = .what.why(), advice = advice(*.relation, .what)
    )]
    Protected { path: PathBuf, relation: Relation, guarded: PathBuf, what: Guarded },
    /// The folder resolves elsewhere than when the sandbox was created.
    #[error(
        "cannot share {path}: it now resolves to {now} (it became a symlink or moved since the sandbox was created); \
         put the folder back or recreate the sandbox"
    )]
    Moved { path: PathBuf, now: PathBuf },
    /// The folder is gone or unreadable.
    #[error("cannot share {path}: it is not an existing folder any more; put it back or recreate the sandbox")]
    Missing { path: PathBuf, source: std::io::Error },
}

fn advice(relation: Relation, what: &Guarded) -> &'static str {
    match (relation, what) {
        (Relation::Is, Guarded::HomeFolder) => "share a project folder inside it instead",
        _ => "share a project folder that neither contains nor lies inside it",
    }
}

#[derive(Debug, Clone)]
struct Protected {
    /// Canonical path (or, for a folder not made yet, its nearest existing ancestor's
    /// canonical path plus the rest).
    path: PathBuf,
    what: Guarded,
    /// Its identity, if it exists.
    id: Option<Id>,
    /// The identities of the folder and all its existing ancestors up to `/`.
    ancestors: Vec<Id>,
    /// Whether a folder strictly inside it may be shared.
    inside_ok: bool,
}

/// The folders no share may be, contain or lie inside (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct ProtectedDirs {
    dirs: Vec<Protected>,
    /// Folders inside a protected one that may nonetheless be shared (a clone-mode
    /// checkpoint's workspace in the sandbox's own folder).
    allowed: Vec<Id>,
}

impl ProtectedDirs {
    /// Nothing protected yet.
    pub fn new() -> ProtectedDirs {
        ProtectedDirs::default()
    }

    /// What this process's environment makes precious: `home`, the image cache, the
    /// folders of `moat` and of every back-end program and the guest agent (as
    /// they would be found now), `$HOME` and, under `sudo`, `$SUDO_USER`'s home.
    pub fn detect(home: &Home) -> ProtectedDirs {
        let mut p = ProtectedDirs::new();
        p.protect(home.root(), Guarded::MoatHome);
        if let Ok(cache) = crate::images::ImageCache::default_root() {
            p.protect(&cache, Guarded::ImageCache);
        }
        if let Ok(exe) = std::env::current_exe() {
            p.protect_program(&exe, "moat");
        }
        for tool in [Tool::Qemu, Tool::Virtiofsd, Tool::VsockBackend, Tool::Vmm, Tool::MkfsExt4] {
            if let Ok(path) = find_tool(tool) {
                p.protect_program(&path, tool.binary());
            }
        }
        p.protect_program(&crate::images::default_agent_path(), "moat-guest-agent");
        p.protect_home(&crate::paths::home_dir());
        if let Some(user) = std::env::var("SUDO_USER").ok().filter(|u| !u.is_empty() && u != "root") {
            if let Ok(Some(u)) = nix::unistd::User::from_name(&user) {
                p.protect_home(&u.dir);
            }
        }
        p
    }

    /// Protects `dir`: no share may be it, contain it or lie inside it.
    pub fn protect(&mut self, dir: &Path, what: Guarded) {
        self.add(dir, what, false);
    }

    /// Protects a home folder: no share may be it or contain it; inside is fine.
    pub fn protect_home(&mut self, dir: &Path) {
        self.add(dir, Guarded::HomeFolder, true);
    }

    /// Protects the folder of `program`, both where it is named and, if that is a
    /// symlink, where it really is (either can be replaced to change what runs).
    pub fn protect_program(&mut self, program: &Path, name: &str) {
        if let Some(dir) = program.parent().filter(|d| !d.as_os_str().is_empty()) {
            self.protect(dir, Guarded::Program(name.to_string()));
        }
        if let Some(dir) = std::fs::canonicalize(program).ok().and_then(|p| p.parent().map(Path::to_path_buf)) {
            self.protect(&dir, Guarded::Program(name.to_string()));
        }
    }

    /// Lets `dir` (and what is inside it) be shared although it lies inside a
    /// protected folder. It must still not contain one.
    pub fn allow(&mut self, dir: &Path) {
        if let Some(id) = id_of(dir) {
            self.allowed.push(id);
        }
    }

    fn add(&mut self, dir: &Path, what: Guarded, inside_ok: bool) {
        let Some(path) = resolve_as_far_as_exists(dir) else { return };
        let ancestors = path.ancestors().filter_map(id_of).collect();
        self.dirs.push(Protected { id: id_of(&path), path, what, ancestors, inside_ok });
    }

    /// Refuses `share` (an existing folder; symlinks are resolved here) if it is,
    /// contains or lies inside a protected folder.
    pub fn check(&self, share: &Path) -> Result<(), ShareError> {
        let canon =
            std::fs::canonicalize(share).map_err(|source| ShareError::Missing { path: share.to_path_buf(), source })?;
        // The share and each of its ancestors, nearest first.
        let chain: Vec<(&Path, Option<Id>)> = canon.ancestors().map(|a| (a, id_of(a))).collect();
        let own = chain[0].1;
        // Every conflict, the most telling reported: the folder itself, then the
        // one it lies in, then one it contains.
        let mut found: Option<(Relation, &Protected)> = None;
        for p in &self.dirs {
            let relation = relation_to(p, &chain, own, &canon, &self.allowed);
            if let Some(r) = relation.filter(|r| found.is_none_or(|(f, _)| rank(*r) < rank(f))) {
                found = Some((r, p));
            }
        }
        match found {
            None => Ok(()),
            Some((relation, p)) => Err(ShareError::Protected {
                path: share.to_path_buf(),
                relation,
                guarded: p.path.clone(),
                what: p.what.clone(),
            }),
        }
    }

    /// [`check`](Self::check) at start: `share` must still resolve to itself (it was
    /// canonical when the sandbox was created), then pass the check again.
    pub fn recheck(&self, share: &Path) -> Result<(), ShareError> {
        let now =
            std::fs::canonicalize(share).map_err(|source| ShareError::Missing { path: share.to_path_buf(), source })?;
        if now != share || !now.is_dir() {
            return Err(ShareError::Moved { path: share.to_path_buf(), now });
        }
        self.check(share)
    }
}

fn rank(r: Relation) -> u8 {
    match r {
        Relation::Is => 0,
        Relation::Inside => 1,
        Relation::Contains => 2,
    }
}

/// How the share (`canon`, with `chain`: itself and its ancestors, nearest first)
/// conflicts with `p`, if it does.
fn relation_to(
    p: &Protected,
    chain: &[(&Path, Option<Id>)],
    own: Option<Id>,
    canon: &Path,
    allowed: &[Id],
) -> Option<Relation> {
    // Is it, or inside it? By identity first (bind mounts), then by path.
    let hit = chain.iter().position(|(a, id)| (p.id.is_some() && *id == p.id) || *a == p.path);
    if let Some(k) = hit {
        if k == 0 {
            return Some(Relation::Is);
        }
        let carved_out = chain[..k].iter().any(|(_, id)| id.is_some_and(|id| allowed.contains(&id)));
        return (!(p.inside_ok || carved_out)).then_some(Relation::Inside);
    }
    (own.is_some_and(|id| p.ancestors.contains(&id)) || p.path.starts_with(canon)).then_some(Relation::Contains)
}

/// `path` with symlinks resolved in its longest existing prefix, the rest appended
/// as written (a protected folder that does not exist yet is still protected).
fn resolve_as_far_as_exists(path: &Path) -> Option<PathBuf> {
    let path = std::path::absolute(path).ok()?;
    let mut rest = Vec::new();
    let mut cur = path.as_path();
    loop {
        if let Ok(c) = std::fs::canonicalize(cur) {
            let mut out = c;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return Some(out);
        }
        let (Some(name), Some(parent)) = (cur.file_name(), cur.parent()) else { return Some(path.clone()) };
        rest.push(name.to_os_string());
        cur = parent;
    }
}

#[cfg(test)]
mod tests;
