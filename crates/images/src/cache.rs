//! The on-disk artifact cache: `<root>/<kind>/<name>-<hash16>/`.
//!
//! An artifact is built in `<root>/<kind>/.<name>-<hash16>.partial/` under an
//! exclusive `flock` on `<name>-<hash16>.lock`, then renamed into place, so a
//! reader never sees half an artifact and two builders never race. A crash
//! leaves only a `.partial` directory, which the next builder removes.

use super::hash::RecipeDigest;
use super::io::PathIoError;
use super::progress::Progress;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// Whether an artifact came from the cache or was just built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Found in the cache; nothing was built.
    Hit,
    /// Built by this call.
    Built,
}

/// Errors of the cache itself (not of the builds it runs).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// None of `$MOAT_CACHE_DIR`, `$XDG_CACHE_HOME`, `$HOME` is set.
    #[error("no cache directory: set MOAT_CACHE_DIR (or HOME)")]
    NoCacheDir,
    /// A directory, lock file or rename failed.
    #[error(transparent)]
    Io(#[from] PathIoError),
}

impl CacheError {
    pub(crate) fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Self + 'a {
        move |source| CacheError::Io(PathIoError { action, path: path.to_path_buf(), source })
    }
}

/// A cache directory of guest images.
#[derive(Debug, Clone)]
pub struct ImageCache {
    root: PathBuf,
}

impl ImageCache {
    /// Opens the default cache: `$MOAT_CACHE_DIR`, else `$XDG_CACHE_HOME/moat`,
    /// else `~/.cache/moat`.
    pub fn open_default() -> Result<Self, CacheError> {
        Self::open(Self::default_root()?)
    }

    /// Where [`open_default`](Self::open_default) opens, without creating it.
    pub fn default_root() -> Result<PathBuf, CacheError> {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        var("MOAT_CACHE_DIR")
            .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("moat")))
            .or_else(|| var("HOME").map(|d| d.join(".cache/moat")))
            .map(|root| std::path::absolute(&root).unwrap_or(root))
            .ok_or(CacheError::NoCacheDir)
    }

    /// Opens (and creates) a cache rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, CacheError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(CacheError::io("create cache directory", &root))?;
        Ok(Self { root })
    }

    /// The cache's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the artifact `kind/name` with this recipe digest lives (whether
    /// or not it exists yet).
    pub fn artifact_dir(&self, kind: &str, name: &str, digest: &RecipeDigest) -> PathBuf {
        self.root.join(kind).join(format!("{name}-{}", digest.short()))
    }

    /// Returns the artifact's directory, running `build` on a fresh
    /// `.partial` directory first if it is missing. On failure the partial
    /// directory stays (its logs explain the failure) until the next attempt.
    pub(crate) fn get_or_build<E: From<CacheError>>(
        &self,
        (kind, name): (&str, &str),
        digest: &RecipeDigest,
        progress: &dyn Progress,
        build: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<(PathBuf, CacheOutcome), E> {
        let done = self.artifact_dir(kind, name, digest);
        if done.is_dir() {
            return Ok((done, CacheOutcome::Hit));
        }
        let kind_dir = self.root.join(kind);
        fs::create_dir_all(&kind_dir).map_err(CacheError::io("create", &kind_dir))?;
        let stem = format!("{name}-{}", digest.short());
        let _lock = lock(&kind_dir.join(format!("{stem}.lock")), kind, progress)?;
        if done.is_dir() {
            // Another builder finished while we waited for the lock.
            return Ok((done, CacheOutcome::Hit));
        }
        let partial = kind_dir.join(format!(".{stem}.partial"));
        remove_tree(&partial)?;
        fs::create_dir(&partial).map_err(CacheError::io("create", &partial))?;
        build(&partial)?;
        fs::rename(&partial, &done).map_err(CacheError::io("publish", &done))?;
        Ok((done, CacheOutcome::Built))
    }
}

fn lock(path: &Path, kind: &str, progress: &dyn Progress) -> Result<Flock<File>, CacheError> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(CacheError::io("open lock file", path))?;
    let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => return Ok(locked),
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => file,
        Err((_, errno)) => return Err(CacheError::io("lock", path)(errno.into())),
    };
    progress.stage(kind, &format!("waiting for another build ({})", path.display()));
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| CacheError::io("lock", path)(e.into()))
}

/// Removes a build tree, first detaching anything a crashed build left
/// mounted inside it (debootstrap mounts `/proc` and `/sys` in its target),
/// so the removal can never reach into a host file system.
pub(crate) fn remove_tree(path: &Path) -> Result<(), CacheError> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    unmount_under(path)?;
    fs::remove_dir_all(path).map_err(CacheError::io("remove", path))
}

fn unmount_under(path: &Path) -> Result<(), CacheError> {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return Ok(());
    };
    let mut inside: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(1))
        .map(|field| PathBuf::from(field.replace("\\040", " ")))
        .filter(|mount| mount.starts_with(path))
        .collect();
    inside.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for mount in inside {
        nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| CacheError::io("unmount", &mount)(e.into()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::hash::RecipeHash;
    use super::super::progress::Silent;
    use super::*;

    #[test]
    fn builds_once_then_hits() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ImageCache::open(tmp.path()).unwrap();
        let digest = RecipeHash::new("test").finish();
        let mut builds = 0;
        for expected in [CacheOutcome::Built, CacheOutcome::Hit] {
            let (dir, outcome) = cache
                .get_or_build::<CacheError>(("t", "thing"), &digest, &Silent, |d| {
                    builds += 1;
                    fs::write(d.join("out"), "x").unwrap();
                    Ok(())
                })
                .unwrap();
            assert_eq!(outcome, expected);
            assert_eq!(fs::read_to_string(dir.join("out")).unwrap(), "x");
        }
        assert_eq!(builds, 1);
    }

    #[test]
    fn failed_build_leaves_no_artifact() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ImageCache::open(tmp.path()).unwrap();
        let digest = RecipeHash::new("test").finish();
        let err = cache.get_or_build(("t", "thing"), &digest, &Silent, |_| Err(CacheError::NoCacheDir));
        assert!(err.is_err());
        assert!(!cache.artifact_dir("t", "thing", &digest).exists());
        // The next attempt starts from a clean partial directory.
        let (dir, _) = cache
            .get_or_build::<CacheError>(("t", "thing"), &digest, &Silent, |d| {
                assert_eq!(fs::read_dir(d).unwrap().count(), 0);
                Ok(())
            })
            .unwrap();
        assert!(dir.is_dir());
    }
}
