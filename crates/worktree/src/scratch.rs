//! The guest-written clone read as data, never used as a repository.
//!
//! A checkpoint's workspace is a git repository the guest writes freely:
//! its config can name programs (`remote.*.uploadpack` for a lazy fetch from
//! a promisor, `include.path` to more of the same), its `objects/info/alternates`
//! can point at another host repository or at a FIFO, `.git` can become a
//! `gitdir:` file or a symlink, `commondir` can redirect refs and config, and
//! all of it can change between two calls. So host-side git never opens it as
//! a repository. [`import`] copies what Moat needs into a **scratch** bare
//! repository Moat owns (next to the checkpoint's record, outside anything
//! shared with the guest), with a config and an `alternates` file Moat writes:
//!
//! - refs: `HEAD`, `refs/heads/*` and `refs/remotes/*`, read by Moat from the
//!   loose files and `packed-refs` (bounded, validated names and ids);
//! - objects: the clone's own loose objects and `pack-*.pack`/`.idx` files
//!   (regular files only, names validated, size-bounded); `objects/info/` is
//!   skipped entirely, so the guest's alternates are never followed;
//! - every file is opened relative to a directory opened without following
//!   symlinks (`O_NOFOLLOW`, `O_NONBLOCK`: a FIFO never blocks), and `.git`
//!   must be a real directory.
//!
//! A ref whose commit did not come across (it lives only behind the guest's
//! alternates, or was deleted) is reported missing rather than followed.
//! [`WorkTree`] adds the workspace's files as a work tree (plain data) with
//! Moat's own copy of the index, for `status` and uncommitted diffs.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::git::{Git, UntrustedError};

/// Bytes of objects copied in one import, at most.
const MAX_COPY: u64 = 16 << 30;
/// Files looked at in one import or one scan of a work tree, at most.
const MAX_ENTRIES: usize = 5_000_000;
/// A loose ref or `HEAD`.
const MAX_REF_FILE: u64 = 4096;
const MAX_PACKED_REFS: u64 = 64 << 20;
const MAX_INDEX: u64 = 1 << 30;
/// Folder depth below `refs/`.
const MAX_REF_DEPTH: usize = 32;

/// What the workspace's `HEAD` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Head {
    /// A commit the scratch repository has.
    Commit(String),
    /// No commit yet (or no `HEAD` Moat can read).
    Unborn,
    /// A commit that did not come across.
    Missing(String),
}

/// A scratch repository filled from one guest-written clone.
#[derive(Debug)]
pub(crate) struct Imported {
    pub dir: PathBuf,
    pub git: Git,
    /// Branch and remote-tracking refs whose commits came across.
    pub refs: BTreeMap<String, String>,
    /// Refs whose commits did not: `(name, id)`.
    pub missing: Vec<(String, String)>,
    pub head: Head,
}

impl Imported {
    /// The id of `name`, or an error naming what is missing.
    pub(crate) fn commit_of(&self, name: &str) -> Result<Option<&str>, UntrustedError> {
        if let Some(id) = self.refs.get(name) {
            return Ok(Some(id));
        }
        match self.missing.iter().find(|(n, _)| n == name) {
            Some((n, id)) => Err(UntrustedError::MissingObjects { what: n.clone(), id: id.clone() }),
            None => Ok(None),
        }
    }

    /// The `HEAD` commit, `None` before the first commit; an error if its
    /// objects did not come across.
    pub(crate) fn head_commit(&self) -> Result<Option<&str>, UntrustedError> {
        match &self.head {
            Head::Commit(id) => Ok(Some(id)),
            Head::Unborn => Ok(None),
            Head::Missing(id) => Err(UntrustedError::MissingObjects { what: "HEAD".into(), id: id.clone() }),
        }
    }
}

/// Copies the refs and objects of the clone at `work_tree` into the scratch
/// repository `scratch` (created if needed), which borrows `borrowed` (a
/// trusted object store: the host's) through an `alternates` file Moat writes.
pub(crate) fn import(work_tree: &Path, scratch: &Path, borrowed: Option<&Path>) -> Result<Imported, UntrustedError> {
    let git_dir = work_tree.join(".git");
    let src = match Dir::open(&git_dir) {
        Ok(dir) => dir,
        Err(_) => return Err(UntrustedError::NotADirectory { git_dir }),
    };
    prepare(scratch, borrowed).map_err(|source| UntrustedError::Scratch { path: scratch.into(), source })?;
    copy_objects(&src, &git_dir, scratch)?;
    let found = read_refs(&src, &git_dir)?;
    let head = read_head(&src, &git_dir)?;

    let git = Git::scratch(scratch);
    let mut ids: Vec<&str> = found.values().map(String::as_str).collect();
    if let HeadFile::Detached(id) = &head {
        ids.push(id);
    }
    let present = commits_present(&git, &ids)?;
    let (mut refs, mut missing) = (BTreeMap::new(), Vec::new());
    for (name, id) in found {
        if present.contains(&id) {
            refs.insert(name, id);
        } else {
            missing.push((name, id));
        }
    }
    write_packed_refs(scratch, &refs).map_err(|source| UntrustedError::Scratch { path: scratch.into(), source })?;
    let head = match head {
        HeadFile::Symbolic(name) => match (refs.get(&name), missing.iter().find(|(n, _)| *n == name)) {
            (Some(id), _) => Head::Commit(id.clone()),
            (None, Some((_, id))) => Head::Missing(id.clone()),
            (None, None) => Head::Unborn,
        },
        HeadFile::Detached(id) if present.contains(&id) => Head::Commit(id),
        HeadFile::Detached(id) => Head::Missing(id),
        HeadFile::Unreadable => Head::Unborn,
    };
    // The scratch HEAD is the workspace's, detached (`status` compares with it).
    let head_file = match &head {
        Head::Commit(id) => format!("{id}\n"),
        Head::Unborn | Head::Missing(_) => "ref: refs/moat/unborn\n".to_string(),
    };
    replace(&scratch.join("HEAD"), head_file.as_bytes())
        .map_err(|source| UntrustedError::Scratch { path: scratch.into(), source })?;
    Ok(Imported { dir: scratch.to_path_buf(), git, refs, missing, head })
}

/// The workspace's files as the work tree of an imported scratch repository,
/// with a Moat-owned copy of the clone's index (deleted on drop).
#[derive(Debug)]
pub(crate) struct WorkTree {
    pub git: Git,
    index: PathBuf,
}

impl WorkTree {
    /// Refuses a work tree holding a FIFO or device (git would block opening
    /// it); copies the index, or builds one from `HEAD` if the clone has none.
    pub(crate) fn open(imported: &Imported, work_tree: &Path) -> Result<WorkTree, UntrustedError> {
        refuse_special_files(work_tree)?;
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let index = imported.dir.join(format!("moat-index-{}-{n}", std::process::id()));
        let _ = std::fs::remove_file(&index);
        let view = WorkTree { git: Git::scratch_work_tree(&imported.dir, work_tree, &index), index };
        let git_dir = work_tree.join(".git");
        let src = Dir::open(&git_dir).map_err(|_| UntrustedError::NotADirectory { git_dir: git_dir.clone() })?;
        let unreadable = |source| UntrustedError::Unreadable { path: git_dir.join("index"), source };
        match src.file("index") {
            Ok(Some(mut file)) => {
                let limit = MAX_INDEX;
                copy_bounded(&mut file, &view.index, limit)
                    .map_err(unreadable)?
                    .then_some(())
                    .ok_or(UntrustedError::TooLarge { path: git_dir.join("index"), limit })?;
            }
            Ok(None) => {
                if let Some(head) = imported.head_commit()? {
                    view.git.run(["read-tree", head])?;
                }
            }
            Err(e) => return Err(unreadable(e)),
        }
        Ok(view)
    }
}

impl Drop for WorkTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.index);
    }
}

/// Fails on the first FIFO or device node under `dir` (symlinks not followed;
/// the top repository's object store, which git never reads as a work tree
/// and Moat copies with `O_NONBLOCK`, is skipped).
fn refuse_special_files(top: &Path) -> Result<(), UntrustedError> {
    let mut stack = vec![top.to_path_buf()];
    let mut seen = 0usize;
    let skip = top.join(".git").join("objects");
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                return Err(UntrustedError::TooLarge { path: top.into(), limit: MAX_ENTRIES as u64 });
            }
            let Ok(kind) = entry.file_type() else { continue };
            let path = entry.path();
            if kind.is_fifo() || kind.is_block_device() || kind.is_char_device() {
                return Err(UntrustedError::SpecialFile { path });
            }
            if kind.is_dir() && path != skip {
                stack.push(path);
            }
        }
    }
    Ok(())
}

/// Makes `scratch` a bare repository with Moat's config and alternates.
fn prepare(scratch: &Path, borrowed: Option<&Path>) -> io::Result<()> {
    for sub in ["objects/pack", "objects/info", "refs/heads", "refs/tags"] {
        std::fs::create_dir_all(scratch.join(sub))?;
    }
    if !scratch.join("HEAD").exists() {
        std::fs::write(scratch.join("HEAD"), "ref: refs/moat/unborn\n")?;
    }
    let config = "# Written by Moat; rewritten on every import.\n\
                  [core]\n\trepositoryformatversion = 0\n\tbare = true\n\tlogAllRefUpdates = false\n\
                  [uploadpack]\n\tallowAnySHA1InWant = true\n";
    replace(&scratch.join("config"), config.as_bytes())?;
    let alternates = scratch.join("objects/info/alternates");
    match borrowed {
        Some(path) => {
            let mut line = path.as_os_str().as_bytes().to_vec();
            line.push(b'\n');
            replace(&alternates, &line)
        }
        None => match std::fs::remove_file(&alternates) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

/// Copies the clone's loose objects and packs that the scratch repository
/// does not have yet (object files are named by their content).
fn copy_objects(src: &Dir, git_dir: &Path, scratch: &Path) -> Result<(), UntrustedError> {
    let unreadable = |path: PathBuf| move |source| UntrustedError::Unreadable { path, source };
    let objects_path = git_dir.join("objects");
    let Some(objects) = src.sub("objects").map_err(unreadable(objects_path.clone()))? else { return Ok(()) };
    let mut budget = Budget { bytes: MAX_COPY, entries: MAX_ENTRIES, path: objects_path.clone() };
    let dst = scratch.join("objects");
    let scratch_err = |source| UntrustedError::Scratch { path: scratch.into(), source };
    for name in objects.entries().map_err(unreadable(objects_path.clone()))? {
        budget.entry()?;
        let Some(name) = name.to_str() else { continue };
        if name.len() == 2 && is_hex(name) {
            let Some(fan) = objects.sub(name).map_err(unreadable(objects_path.join(name)))? else { continue };
            for file in fan.entries().map_err(unreadable(objects_path.join(name)))? {
                budget.entry()?;
                let Some(file) = file.to_str().filter(|f| f.len() == 38 && is_hex(f)) else { continue };
                let target = dst.join(name).join(file);
                if target.exists() {
                    continue;
                }
                std::fs::create_dir_all(dst.join(name)).map_err(scratch_err)?;
                copy_one(&fan, file, &target, &objects_path.join(name).join(file), &mut budget)?;
            }
        }
    }
    let pack_path = objects_path.join("pack");
    let Some(pack) = objects.sub("pack").map_err(unreadable(pack_path.clone()))? else { return Ok(()) };
    let mut names: Vec<String> = Vec::new();
    for name in pack.entries().map_err(unreadable(pack_path.clone()))? {
        budget.entry()?;
        let Some(name) = name.to_str() else { continue };
        let valid = |ext: &str| {
            name.strip_prefix("pack-").and_then(|r| r.strip_suffix(ext)).is_some_and(|h| h.len() == 40 && is_hex(h))
        };
        if valid(".pack") || valid(".idx") {
            names.push(name.to_string());
        }
    }
    // Each pack before its index: git ignores a pack without one.
    names.sort_by_key(|n| (n.ends_with(".idx"), n.clone()));
    for name in names {
        let target = dst.join("pack").join(&name);
        if !target.exists() {
            copy_one(&pack, &name, &target, &pack_path.join(&name), &mut budget)?;
        }
    }
    Ok(())
}

struct Budget {
    bytes: u64,
    entries: usize,
    path: PathBuf,
}

impl Budget {
    fn entry(&mut self) -> Result<(), UntrustedError> {
        self.entries = self
            .entries
            .checked_sub(1)
            .ok_or(UntrustedError::TooLarge { path: self.path.clone(), limit: MAX_ENTRIES as u64 })?;
        Ok(())
    }
}

/// Copies the regular file `name` of `dir` to `target` (through a temporary
/// name), within the budget. Anything else under a valid name is skipped.
fn copy_one(dir: &Dir, name: &str, target: &Path, shown: &Path, budget: &mut Budget) -> Result<(), UntrustedError> {
    let Some(mut file) = dir.file(name).ok().flatten() else { return Ok(()) };
    let tmp = target.with_file_name(format!(".moat-tmp-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let scratch_err = |source| UntrustedError::Scratch { path: tmp.clone(), source };
    let before = budget.bytes;
    let mut out = OpenOptions::new().write(true).create_new(true).mode(0o444).open(&tmp).map_err(scratch_err)?;
    let copied = io::copy(&mut (&mut file).take(before + 1), &mut out)
        .map_err(|source| UntrustedError::Unreadable { path: shown.into(), source })?;
    drop(out);
    if copied > before {
        let _ = std::fs::remove_file(&tmp);
        return Err(UntrustedError::TooLarge { path: shown.into(), limit: MAX_COPY });
    }
    budget.bytes -= copied;
    std::fs::rename(&tmp, target).map_err(|source| UntrustedError::Scratch { path: target.into(), source })
}

/// `refs/heads/*` and `refs/remotes/*`: loose files win over `packed-refs`.
fn read_refs(src: &Dir, git_dir: &Path) -> Result<BTreeMap<String, String>, UntrustedError> {
    let mut refs = BTreeMap::new();
    let packed = read_small(src, "packed-refs", &git_dir.join("packed-refs"), MAX_PACKED_REFS)?;
    for line in packed.as_deref().unwrap_or_default().split(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else { continue };
        let Some((id, name)) = line.split_once(' ') else { continue };
        if is_id(id) && wanted_ref(name) {
            refs.insert(name.to_string(), id.to_string());
        }
    }
    let unreadable = |path: PathBuf| move |source| UntrustedError::Unreadable { path, source };
    let Some(refs_dir) = src.sub("refs").map_err(unreadable(git_dir.join("refs")))? else { return Ok(refs) };
    let mut budget = Budget { bytes: 0, entries: MAX_ENTRIES, path: git_dir.join("refs") };
    for top in ["heads", "remotes"] {
        let Some(dir) = refs_dir.sub(top).map_err(unreadable(git_dir.join("refs").join(top)))? else { continue };
        let mut stack = vec![(dir, format!("refs/{top}"), 0usize)];
        while let Some((dir, prefix, depth)) = stack.pop() {
            let shown = git_dir.join(&prefix);
            for name in dir.entries().map_err(unreadable(shown.clone()))? {
                budget.entry()?;
                let Some(name) = name.to_str() else { continue };
                let full = format!("{prefix}/{name}");
                if !wanted_ref(&full) {
                    continue;
                }
                if let Some(sub) = dir.sub(name).ok().flatten() {
                    if depth < MAX_REF_DEPTH {
                        stack.push((sub, full, depth + 1));
                    }
                    continue;
                }
                let Some(text) = read_small(&dir, name, &shown.join(name), MAX_REF_FILE).ok().flatten() else {
                    continue;
                };
                let text = String::from_utf8_lossy(&text);
                let id = text.trim_end_matches('\n');
                if is_id(id) {
                    refs.insert(full, id.to_string());
                }
            }
        }
    }
    Ok(refs)
}

enum HeadFile {
    Symbolic(String),
    Detached(String),
    Unreadable,
}

fn read_head(src: &Dir, git_dir: &Path) -> Result<HeadFile, UntrustedError> {
    let Some(text) = read_small(src, "HEAD", &git_dir.join("HEAD"), MAX_REF_FILE).ok().flatten() else {
        return Ok(HeadFile::Unreadable);
    };
    let text = String::from_utf8_lossy(&text);
    let text = text.trim_end_matches('\n');
    Ok(match text.strip_prefix("ref: ") {
        Some(name) if wanted_ref(name) => HeadFile::Symbolic(name.to_string()),
        Some(_) => HeadFile::Unreadable,
        None if is_id(text) => HeadFile::Detached(text.to_string()),
        None => HeadFile::Unreadable,
    })
}

/// Which of `ids` are commits the scratch repository has.
fn commits_present(git: &Git, ids: &[&str]) -> Result<std::collections::HashSet<String>, UntrustedError> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let input: String = ids.iter().map(|id| format!("{id}\n")).collect();
    let out = git.run_bytes(["cat-file", "--batch-check=%(objectname) %(objecttype)"], input.as_bytes())?;
    Ok(String::from_utf8_lossy(&out).lines().filter_map(|l| l.strip_suffix(" commit")).map(String::from).collect())
}

fn write_packed_refs(scratch: &Path, refs: &BTreeMap<String, String>) -> io::Result<()> {
    let text: String = refs.iter().map(|(name, id)| format!("{id} {name}\n")).collect();
    replace(&scratch.join("packed-refs"), text.as_bytes())
}

/// Writes `path` through a temporary file and a rename.
fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("moat-tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut out = OpenOptions::new().write(true).create_new(true).mode(0o644).open(&tmp)?;
    out.write_all(bytes)?;
    drop(out);
    std::fs::rename(&tmp, path)
}

/// The regular file `name` of `dir`, at most `limit` bytes; `None` if absent.
fn read_small(dir: &Dir, name: &str, shown: &Path, limit: u64) -> Result<Option<Vec<u8>>, UntrustedError> {
    let unreadable = |source| UntrustedError::Unreadable { path: shown.into(), source };
    let Some(file) = dir.file(name).map_err(unreadable)? else { return Ok(None) };
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(unreadable)?;
    if bytes.len() as u64 > limit {
        return Err(UntrustedError::TooLarge { path: shown.into(), limit });
    }
    Ok(Some(bytes))
}

/// Streams at most `limit` bytes into a new file `dst`; `false` if there were more.
/// The copy's modification time is the epoch: git then treats every entry's
/// stat data as racy and compares content (the guest's stat data, and the
/// copy's own time, would otherwise let a same-size edit pass as unchanged).
fn copy_bounded(src: &mut File, dst: &Path, limit: u64) -> io::Result<bool> {
    let mut out = OpenOptions::new().write(true).create_new(true).mode(0o600).open(dst)?;
    let n = io::copy(&mut src.take(limit + 1), &mut out)?;
    if n > limit {
        drop(out);
        let _ = std::fs::remove_file(dst);
        return Ok(false);
    }
    out.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1))?;
    Ok(true)
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_id(s: &str) -> bool {
    s.len() == 40 && is_hex(s)
}

/// A branch or remote-tracking ref name git itself would accept (the
/// `check-ref-format` rules that matter here).
fn wanted_ref(name: &str) -> bool {
    if !(name.starts_with("refs/heads/") || name.starts_with("refs/remotes/")) || name.len() > 1024 {
        return false;
    }
    name.split('/').all(|part| {
        !part.is_empty()
            && !part.starts_with('.')
            && !part.ends_with(".lock")
            && !part.contains("..")
            && !part.contains("@{")
            && !part.chars().any(|c| c.is_control() || " ~^:?*[\\".contains(c))
    })
}

/// A directory opened without following a symlink; everything below it is
/// opened relative to it, so a guest swapping a folder for a symlink meanwhile
/// is not followed.
struct Dir(File);

impl Dir {
    /// `path` itself must be a real directory (its last component is not followed).
    fn open(path: &Path) -> io::Result<Dir> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)?;
        Ok(Dir(file))
    }

    /// This directory's own path through `/proc`: names joined to it resolve in
    /// the directory that was opened, whatever happened to its path since.
    fn here(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.0.as_raw_fd()))
    }

    /// The sub-directory `name`; `None` if absent or not a real directory.
    fn sub(&self, name: &str) -> io::Result<Option<Dir>> {
        match Dir::open(&self.here().join(name)) {
            Ok(dir) => Ok(Some(dir)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The regular file `name`, opened without blocking; `None` if absent or
    /// anything else (symlink, FIFO, device, folder).
    fn file(&self, name: &str) -> io::Result<Option<File>> {
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(self.here().join(name));
        let file = match opened {
            Ok(file) => file,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ELOOP | libc::ENXIO)) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(file.metadata()?.is_file().then_some(file))
    }

    fn entries(&self) -> io::Result<Vec<OsString>> {
        std::fs::read_dir(self.here())?.map(|e| e.map(|e| e.file_name())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_names_are_checked() {
        assert!(wanted_ref("refs/heads/feature/naïve-ü"));
        assert!(wanted_ref("refs/remotes/origin/main"));
        for bad in ["refs/tags/v1", "refs/heads/../x", "refs/heads/a b", "refs/heads/.x", "refs/heads/x.lock", "HEAD"] {
            assert!(!wanted_ref(bad), "{bad}");
        }
    }

    #[test]
    fn files_behind_symlinks_and_fifos_are_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plain"), "x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("plain"), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("dirlink")).unwrap();
        let fifo = std::ffi::CString::new(dir.path().join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: `fifo` is a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let d = Dir::open(dir.path()).unwrap();
        assert!(d.file("plain").unwrap().is_some());
        assert!(d.file("link").unwrap().is_none());
        assert!(d.file("fifo").unwrap().is_none());
        assert!(d.sub("dirlink").unwrap().is_none());
        assert!(Dir::open(&dir.path().join("dirlink")).is_err());
        assert!(matches!(refuse_special_files(dir.path()), Err(UntrustedError::SpecialFile { .. })));
    }
}
