//! Git LFS without running Git LFS.
//!
//! Moat's git calls never run a filter — not even `git-lfs` — so a file LFS
//! tracks is checked out, fetched and applied as its *pointer* (three lines
//! naming a SHA-256 and a size). This module moves the content behind those
//! pointers itself, checking every byte against the pointer's hash:
//!
//! - the host's LFS object store is shared read-only with the guest
//!   ([`host_objects`]); Git LFS looks for objects next to every
//!   `objects/info/alternates` entry, so `git lfs checkout`/`pull` inside the
//!   guest finds them offline and copies them into the workspace's own store;
//! - [`import`] copies content the agent created from the workspace's
//!   `.git/lfs/objects` into the host's store, verified;
//! - [`materialize`] replaces a pointer file that `apply` wrote in the user's
//!   tree with its content, as the user's own LFS checkout would have;
//! - [`content_matches`] lets Moat's "is the tree clean" check recognise such a
//!   file (git without the clean filter cannot).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::git::{Git, GitError};

/// Pointer files are smaller than this (Git LFS specification).
const POINTER_MAX: u64 = 1024;

/// A parsed LFS pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pointer {
    /// Lower-case hex SHA-256 of the content.
    pub oid: String,
    pub size: u64,
    /// The pointer names LFS extensions (content is their output): never materialised.
    pub extended: bool,
}

/// Parses a pointer file strictly: `version`, optional `ext-*`, `oid sha256:…`,
/// `size …`, each line ending in `\n`, nothing else.
pub(crate) fn parse(bytes: &[u8]) -> Option<Pointer> {
    if bytes.len() as u64 >= POINTER_MAX || !bytes.ends_with(b"\n") {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text[..text.len() - 1].split('\n');
    if lines.next()? != "version https://git-lfs.github.com/spec/v1" {
        return None;
    }
    let mut extended = false;
    let mut line = lines.next()?;
    while line.starts_with("ext-") {
        extended = true;
        line = lines.next()?;
    }
    let oid = line.strip_prefix("oid sha256:")?;
    if oid.len() != 64 || !oid.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let size = lines.next()?.strip_prefix("size ")?;
    if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) || lines.next().is_some() {
        return None;
    }
    Some(Pointer { oid: oid.to_string(), size: size.parse().ok()?, extended })
}

/// The pointers among `blobs` (object ids), with their exact bytes: one
/// `cat-file --batch-check` and one `--batch` for the small ones.
pub(crate) fn pointers(git: &Git, blobs: &[String]) -> Result<Vec<(String, Pointer, Vec<u8>)>, GitError> {
    if blobs.is_empty() {
        return Ok(Vec::new());
    }
    let input: String = blobs.iter().map(|b| format!("{b}\n")).collect();
    let check = git.run_bytes(["cat-file", "--batch-check"], input.as_bytes())?;
    let small: Vec<&str> = std::str::from_utf8(&check)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let (sha, kind, size) = (f.next()?, f.next()?, f.next()?.parse::<u64>().ok()?);
            (kind == "blob" && size < POINTER_MAX).then_some(sha)
        })
        .collect();
    if small.is_empty() {
        return Ok(Vec::new());
    }
    let input: String = small.iter().map(|b| format!("{b}\n")).collect();
    let batch = git.run_bytes(["cat-file", "--batch"], input.as_bytes())?;
    let mut out = Vec::new();
    let mut rest = &batch[..];
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let header = String::from_utf8_lossy(&rest[..nl]).into_owned();
        let mut f = header.split(' ');
        let (Some(sha), Some(_), Some(Ok(size))) = (f.next(), f.next(), f.next().map(str::parse::<usize>)) else {
            break;
        };
        let body = &rest[nl + 1..];
        if body.len() < size + 1 {
            break;
        }
        if let Some(p) = parse(&body[..size]) {
            out.push((sha.to_string(), p, body[..size].to_vec()));
        }
        rest = &body[size + 1..];
    }
    Ok(out)
}

/// The host repository's LFS folder: `lfs.storage` if the user set it (relative
/// to the git directory), else `<git dir>/lfs`.
pub(crate) fn host_store(git: &Git) -> Result<PathBuf, GitError> {
    let common = git.common_dir()?;
    let storage = git.run(["config", "--get", "lfs.storage"]).unwrap_or_default();
    let storage = storage.trim_end_matches('\n');
    Ok(if storage.is_empty() { common.join("lfs") } else { common.join(storage) })
}

/// The host's LFS object folder, if it exists: one more read-only path for the guest.
pub(crate) fn host_objects(git: &Git) -> Result<Option<PathBuf>, GitError> {
    let objects = host_store(git)?.join("objects");
    Ok(objects.is_dir().then_some(objects))
}

fn object_path(store: &Path, oid: &str) -> PathBuf {
    store.join("objects").join(&oid[0..2]).join(&oid[2..4]).join(oid)
}

/// Whether the host's store has `p`'s content (a regular file of its size;
/// the store is the user's and trusted).
pub(crate) fn host_has(store: &Path, p: &Pointer) -> bool {
    std::fs::symlink_metadata(object_path(store, &p.oid)).is_ok_and(|m| m.is_file() && m.len() == p.size)
}

/// Whether the workspace's `.git/lfs/objects` has `p`'s content, verified.
pub(crate) fn workspace_verified(ws: &Path, p: &Pointer) -> bool {
    content_matches(ws, &workspace_object(&p.oid), p)
}

/// Where Git LFS keeps `oid` in the workspace, relative to it.
pub(crate) fn workspace_object(oid: &str) -> String {
    format!(".git/lfs/objects/{}/{}/{oid}", &oid[0..2], &oid[2..4])
}

/// Copies `p`'s content from the file `root/rel` (e.g. the workspace's store,
/// [`workspace_object`]) into the host's store, accepting it only if its size
/// and SHA-256 match. `Ok(false)`: not there, or not it.
pub(crate) fn import(store: &Path, root: &Path, p: &Pointer, rel: &str) -> io::Result<bool> {
    let Ok(mut src) = open_under(root, rel) else { return Ok(false) };
    let dst = object_path(store, &p.oid);
    let tmp_dir = store.join("tmp");
    std::fs::create_dir_all(&tmp_dir)?;
    std::fs::create_dir_all(dst.parent().expect("object paths have parents"))?;
    let tmp = tmp_dir.join(format!("moat-{}-{}", std::process::id(), p.oid));
    let _ = std::fs::remove_file(&tmp); // left by an interrupted run
    if !copy_verified(&mut src, p, &tmp)? {
        return Ok(false);
    }
    std::fs::rename(&tmp, &dst)?;
    Ok(true)
}

/// Replaces the pointer file at `top/rel` with `p`'s content from the host's
/// store, keeping its permissions — only if the file is a regular file (no
/// symlink on the way) holding exactly `pointer`, and the content verifies.
pub(crate) fn materialize(top: &Path, store: &Path, rel: &str, p: &Pointer, pointer: &[u8]) -> io::Result<bool> {
    if p.extended {
        return Ok(false);
    }
    let Ok(mut current) = open_under(top, rel) else { return Ok(false) };
    let meta = current.metadata()?;
    let mut text = Vec::new();
    (&mut current).take(POINTER_MAX).read_to_end(&mut text)?;
    if text != pointer {
        return Ok(false);
    }
    let Ok(mut src) = open_under(store, &format!("objects/{}/{}/{}", &p.oid[0..2], &p.oid[2..4], p.oid)) else {
        return Ok(false);
    };
    let path = top.join(rel);
    let name = path.file_name().expect("a file").to_string_lossy().into_owned();
    let tmp = path.with_file_name(format!(".{name}.moat-lfs-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    if !copy_verified(&mut src, p, &tmp)? {
        return Ok(false);
    }
    std::fs::set_permissions(&tmp, meta.permissions())?;
    std::fs::rename(&tmp, &path)?;
    Ok(true)
}

/// Whether the file at `top/rel` is `p`'s content (size and SHA-256).
pub(crate) fn content_matches(top: &Path, rel: &str, p: &Pointer) -> bool {
    let Ok(file) = open_under(top, rel) else { return false };
    if !file.metadata().is_ok_and(|m| m.len() == p.size) {
        return false;
    }
    hash(file, p.size).is_ok_and(|(n, oid)| n == p.size && oid == p.oid)
}

/// An index entry whose blob is an LFS pointer.
#[derive(Debug, Clone)]
pub(crate) struct Staged {
    pub path: String,
    pub mode: String,
    pub sha: String,
    pub pointer: Pointer,
    pub bytes: Vec<u8>,
}

/// The index entries among `paths` that record LFS pointers.
pub(crate) fn index_pointers(git: &Git, paths: &[String]) -> Result<Vec<Staged>, GitError> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let index = git.run(["ls-files", "--stage", "-z"])?;
    let wanted: std::collections::HashSet<&str> = paths.iter().map(String::as_str).collect();
    let mut staged = Vec::new();
    for entry in crate::git::nul_fields(&index) {
        let Some((meta, path)) = entry.split_once('\t') else { continue };
        let mut f = meta.split(' ');
        let (Some(mode), Some(sha), Some("0")) = (f.next(), f.next(), f.next()) else { continue };
        if mode.starts_with("100") && wanted.contains(path) {
            staged.push((path.to_string(), mode.to_string(), sha.to_string()));
        }
    }
    let shas: Vec<String> = staged.iter().map(|s| s.2.clone()).collect();
    let pointers = pointers(git, &shas)?;
    Ok(staged
        .into_iter()
        .filter_map(|(path, mode, sha)| {
            let (_, pointer, bytes) = pointers.iter().find(|(s, _, _)| *s == sha)?;
            Some(Staged { path, mode, sha, pointer: pointer.clone(), bytes: bytes.clone() })
        })
        .collect())
}

/// The `paths` (reported modified by a status that could not run the clean
/// filter) whose file is exactly the content of the LFS pointer in the index:
/// unchanged for the user's git, whose clean filter turns them back into it.
pub(crate) fn unchanged(git: &Git, top: &Path, paths: &[String]) -> Result<Vec<Staged>, GitError> {
    Ok(index_pointers(git, paths)?.into_iter().filter(|s| content_matches(top, &s.path, &s.pointer)).collect())
}

/// Re-reads the files `paths` into the index as they are (no filter): for
/// pointer files, the same blob with fresh stat data.
pub(crate) fn restat(git: &Git, paths: &[String]) -> Result<(), GitError> {
    if paths.is_empty() {
        return Ok(());
    }
    let input: Vec<u8> = paths.iter().flat_map(|p| p.bytes().chain([0])).collect();
    git.run_bytes(["update-index", "-z", "--stdin"], &input).map(drop)
}

/// Forgets the index's stat data for `entries` (same mode and blob), so every
/// git compares their content instead: the user's through LFS's clean filter
/// (and then records fresh stat data), Moat's through [`unchanged`].
pub(crate) fn unstat(git: &Git, entries: &[Staged]) -> Result<(), GitError> {
    if entries.is_empty() {
        return Ok(());
    }
    let input: Vec<u8> =
        entries.iter().flat_map(|s| format!("{} {}\t{}\0", s.mode, s.sha, s.path).into_bytes()).collect();
    git.run_bytes(["update-index", "-z", "--index-info"], &input).map(drop)
}

/// Puts the pointer text `bytes` back in place of the regular file `top/rel`
/// (keeping its permissions), so that git without the clean filter sees it
/// unchanged; [`materialize`] undoes it. Only for files [`unchanged`] vouched for.
pub(crate) fn write_pointer(top: &Path, rel: &str, bytes: &[u8]) -> io::Result<()> {
    let meta = open_under(top, rel)?.metadata()?;
    let path = top.join(rel);
    let name = path.file_name().expect("a file").to_string_lossy().into_owned();
    let tmp = path.with_file_name(format!(".{name}.moat-lfs-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut out = OpenOptions::new().write(true).create_new(true).mode(0o644).open(&tmp)?;
    out.write_all(bytes)?;
    out.sync_all()?;
    std::fs::set_permissions(&tmp, meta.permissions())?;
    std::fs::rename(&tmp, &path)
}

/// Whether git LFS's smudge filter is configured for the user (any scope but
/// Moat's own command-line overrides): the user's checkouts hold content.
pub(crate) fn smudges(git: &Git) -> bool {
    let out = git.run(["config", "--show-scope", "--get-regexp", r"^filter\.lfs\.(smudge|process)$"]);
    out.unwrap_or_default().lines().any(|l| {
        let mut f = l.splitn(2, '\t');
        let (scope, rest) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
        scope != "command" && rest.split_once(' ').is_some_and(|(_, v)| !v.trim().is_empty())
    })
}

/// Which of `paths` have the attribute `filter=lfs`, read from the attributes
/// files of the work tree, or of the commit `source` (nothing runs).
pub(crate) fn lfs_paths(git: &Git, paths: &[String], source: Option<&str>) -> Result<Vec<String>, GitError> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let input: Vec<u8> = paths.iter().flat_map(|p| p.bytes().chain([0])).collect();
    let source = source.map(|s| format!("--source={s}"));
    let mut args = vec!["check-attr", "-z", "--stdin"];
    args.extend(source.as_deref());
    args.push("filter");
    let out = match git.run_bytes(&args, &input) {
        Ok(out) => out,
        // git 2.39 has no `--source`: the work tree's attributes are the next best.
        Err(_) if source.is_some() => git.run_bytes(["check-attr", "-z", "--stdin", "filter"], &input)?,
        Err(e) => return Err(e),
    };
    let out = String::from_utf8_lossy(&out);
    let fields: Vec<&str> = out.split('\0').collect();
    Ok(fields.chunks(3).filter(|c| c.len() == 3 && c[2] == "lfs").map(|c| c[0].to_string()).collect())
}

/// Streams at most `p.size + 1` bytes from `src` into a new file `dst`; keeps it
/// only if exactly `p.size` bytes hashing to `p.oid` arrived.
fn copy_verified(src: &mut File, p: &Pointer, dst: &Path) -> io::Result<bool> {
    let mut out = OpenOptions::new().write(true).create_new(true).mode(0o644).open(dst)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    let mut limited = src.take(p.size + 1);
    let result = (|| {
        loop {
            let n = limited.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            total += n as u64;
        }
        out.sync_all()
    })();
    let ok = result.is_ok() && total == p.size && hex(&hasher.finalize()) == p.oid;
    if !ok {
        let _ = std::fs::remove_file(dst);
    }
    result.map(|()| ok)
}

fn hash(file: File, size: u64) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let n = io::copy(&mut file.take(size + 1), &mut hasher)?;
    Ok((n, hex(&hasher.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens the regular file `root/rel` for reading without following a symlink
/// anywhere below `root`, and without blocking on a FIFO.
fn open_under(root: &Path, rel: &str) -> io::Result<File> {
    let refuse = || io::Error::new(io::ErrorKind::InvalidInput, "not a plain file below the folder");
    let rel = Path::new(rel);
    let mut path = root.to_path_buf();
    let parts: Vec<Component> = rel.components().collect();
    for (i, part) in parts.iter().enumerate() {
        let Component::Normal(name) = part else { return Err(refuse()) };
        path.push(name);
        let meta = std::fs::symlink_metadata(&path)?;
        let last = i + 1 == parts.len();
        if (last && !meta.is_file()) || (!last && !meta.is_dir()) {
            return Err(refuse());
        }
    }
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(&path)?;
    if !file.metadata()?.is_file() {
        return Err(refuse());
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OID: &str = "a6669e01b0c9bdbf3394d7805199f071baf96f62da55b9916efb5e6f208a6900";

    #[test]
    fn pointers_parse_strictly() {
        let good = format!("version https://git-lfs.github.com/spec/v1\noid sha256:{OID}\nsize 100000\n");
        assert_eq!(parse(good.as_bytes()), Some(Pointer { oid: OID.into(), size: 100000, extended: false }));
        let ext =
            format!("version https://git-lfs.github.com/spec/v1\next-0-foo sha256:{OID}\noid sha256:{OID}\nsize 1\n");
        assert!(parse(ext.as_bytes()).unwrap().extended);
        for bad in [
            good.trim_end().to_string(),
            good.replace("sha256:a6", "sha256:A6"),
            good.replace("size 100000", "size -1"),
            good.replace(OID, &OID[1..]),
            format!("{good}extra 1\n"),
            good.replace("size ", "size  "),
            good.replace("v1", "v2"),
        ] {
            assert_ne!(parse(bad.as_bytes()).map(|p| p.size), Some(100000), "{bad:?}");
        }
    }

    #[test]
    fn content_is_checked_against_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let content = b"hello lfs\n";
        let oid = hex(&Sha256::digest(content));
        std::fs::write(dir.path().join("f"), content).unwrap();
        let p = Pointer { oid: oid.clone(), size: content.len() as u64, extended: false };
        assert!(content_matches(dir.path(), "f", &p));
        std::fs::write(dir.path().join("f"), b"hello LFS\n").unwrap();
        assert!(!content_matches(dir.path(), "f", &p));
        std::os::unix::fs::symlink(dir.path().join("f"), dir.path().join("link")).unwrap();
        assert!(open_under(dir.path(), "link").is_err());
        assert!(open_under(dir.path(), "../f").is_err());
    }
}
