//! Packing a directory tree into an ext4 image with `mkfs.ext4 -d`: no loop
//! mounts, ownership and modes copied from the tree, sized to the content.

use super::command::{self, ToolError};
use super::hash::RecipeDigest;
use super::io::PathIoError;
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

const BLOCK: u64 = 4096;
/// Bytes per inode in ext4's inode table.
const INODE_BYTES: u64 = 256;

/// Packing the tree failed.
#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    /// `mkfs.ext4` is missing or failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// Walking the tree failed.
    #[error(transparent)]
    Io(#[from] PathIoError),
}

/// What went into an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSize {
    /// Bytes of file data, rounded up to blocks.
    pub content_bytes: u64,
    /// Inodes used by the tree.
    pub used_inodes: u64,
    /// Inodes the image was made with.
    pub inodes: u64,
    /// The image file's size.
    pub image_bytes: u64,
}

/// Packs `tree` into a new ext4 image at `image`: every timestamp set to
/// `epoch`, UUID and directory hash seed derived from `digest`, no journal
/// and no reserved blocks (the guest mounts it read-only). Then checks it
/// with `e2fsck -fn`.
pub fn make_image(
    tree: &Path,
    image: &Path,
    digest: &RecipeDigest,
    epoch: i64,
    log: &Path,
) -> Result<ImageSize, Ext4Error> {
    let mkfs = command::find_tool("mkfs.ext4", "`apt-get install e2fsprogs`")?;
    let usage = walk(tree, &mut |path, _| set_time(path, epoch))?;
    let size = size_for(usage);
    command::run_logged(
        Command::new(mkfs)
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-O", "^has_journal"])
            .args(["-L", "moat-rootfs", "-U", &digest.uuid(0)])
            .arg("-E")
            .arg(format!("hash_seed={},root_owner=0:0", digest.uuid(1)))
            .arg("-N")
            .arg(size.inodes.to_string())
            .arg("-d")
            .arg(tree)
            .arg(image)
            .arg(format!("{}k", size.image_bytes / 1024)),
        "mkfs.ext4",
        log,
        None,
    )?;
    set_ctimes(image, epoch)?;
    let fsck = command::find_tool("e2fsck", "`apt-get install e2fsprogs`")?;
    command::run_logged(Command::new(fsck).arg("-fn").arg(image), "e2fsck", log, None)?;
    Ok(size)
}

/// `mkfs.ext4 -d` copies each file's ctime, which no tool can set on the
/// source tree; rewrite it in the image with `debugfs` so equal trees give
/// equal images.
fn set_ctimes(image: &Path, epoch: i64) -> Result<(), Ext4Error> {
    edit_every_inode(image, epoch, |ino| format!("sif <{ino}> ctime @{epoch}\n"))
}

/// Makes every file of an image made by [`make_image`] belong to root, as a
/// tree packed by someone other than root would not.
pub(crate) fn set_root_owner(image: &Path, epoch: i64) -> Result<(), Ext4Error> {
    edit_every_inode(image, epoch, |ino| format!("sif <{ino}> uid 0\nsif <{ino}> gid 0\n"))
}

/// Runs `debugfs` commands on every inode of an image [`make_image`] made:
/// a fresh `-d` image allocates inodes densely, so they are the root (2),
/// lost+found (11), then 12 up to the highest used one.
fn edit_every_inode(image: &Path, epoch: i64, commands: impl Fn(u64) -> String) -> Result<(), Ext4Error> {
    let dumpe2fs = command::find_tool("dumpe2fs", "`apt-get install e2fsprogs`")?;
    let debugfs = command::find_tool("debugfs", "`apt-get install e2fsprogs`")?;
    let header = command::output(Command::new(dumpe2fs).arg("-h").arg(image), "dumpe2fs")?;
    let field = |name: &str| -> u64 {
        header.lines().find_map(|line| line.strip_prefix(name)?.trim().parse().ok()).unwrap_or(0)
    };
    let used = field("Inode count:").saturating_sub(field("Free inodes:"));
    let script: String = [2].into_iter().chain(11..=used).map(commands).collect();
    let script_path = image.with_extension("debugfs");
    let io_err = |action| {
        let path = script_path.clone();
        move |source| Ext4Error::Io(PathIoError { action, path, source })
    };
    fs::write(&script_path, script).map_err(io_err("write"))?;
    // Its stdout echoes every command; keep it out of the log.
    // debugfs stamps the superblock's last-write time; keep it at `epoch`.
    command::output(
        Command::new(debugfs)
            .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
            .arg("-w")
            .arg("-f")
            .arg(&script_path)
            .arg(image),
        "debugfs",
    )?;
    fs::remove_file(&script_path).map_err(io_err("remove"))?;
    Ok(())
}

/// Blocks and inodes a tree occupies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Usage {
    bytes: u64,
    inodes: u64,
}

/// Content plus 10% and 64 MiB of headroom (metadata, inode tables, a little
/// slack), inodes plus 10% and 1024, rounded to MiB.
fn size_for(usage: Usage) -> ImageSize {
    let inodes = usage.inodes + usage.inodes / 10 + 1024;
    let raw = usage.bytes + usage.bytes / 10 + (64 << 20) + inodes * INODE_BYTES;
    let image_bytes = raw.div_ceil(1 << 20) << 20;
    ImageSize { content_bytes: usage.bytes, used_inodes: usage.inodes, inodes, image_bytes }
}

/// Walks `tree` without following symlinks, calling `visit` on every entry,
/// and sums blocks per distinct inode.
fn walk(tree: &Path, visit: &mut dyn FnMut(&Path, &fs::Metadata) -> io::Result<()>) -> Result<Usage, Ext4Error> {
    let mut usage = Usage::default();
    let mut seen = HashSet::new();
    let mut stack = vec![tree.to_path_buf()];
    while let Some(path) = stack.pop() {
        let io_err = |action| {
            let path = path.clone();
            move |source| Ext4Error::Io(PathIoError { action, path, source })
        };
        let meta = fs::symlink_metadata(&path).map_err(io_err("stat"))?;
        if meta.is_dir() {
            for entry in fs::read_dir(&path).map_err(io_err("read directory"))? {
                stack.push(entry.map_err(io_err("read directory"))?.path());
            }
        }
        if seen.insert((meta.dev(), meta.ino())) {
            usage.inodes += 1;
            // Small symlinks live inside the inode; everything else takes blocks.
            let inline = meta.file_type().is_symlink() && meta.len() < 60;
            if !inline {
                usage.bytes += meta.len().div_ceil(BLOCK) * BLOCK;
            }
        }
        visit(&path, &meta).map_err(io_err("set the timestamp of"))?;
    }
    Ok(usage)
}

fn set_time(path: &Path, epoch: i64) -> io::Result<()> {
    let time = TimeSpec::new(epoch, 0);
    utimensat(None, path, &time, &time, UtimensatFlags::NoFollowSymlink).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn walk_counts_and_sizes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/f"), vec![0u8; 5000]).unwrap();
        fs::hard_link(root.join("d/f"), root.join("hard")).unwrap();
        symlink("d/f", root.join("link")).unwrap();
        let usage = walk(root, &mut |p, _| set_time(p, 1000)).unwrap();
        // root, d, f (counted once despite the hard link), link
        assert_eq!(usage.inodes, 4);
        assert!(usage.bytes >= 2 * BLOCK, "{usage:?}");
        assert_eq!(fs::symlink_metadata(root.join("link")).unwrap().mtime(), 1000);
        assert_eq!(fs::metadata(root.join("d/f")).unwrap().mtime(), 1000);
    }

    #[test]
    fn every_file_of_an_image_can_be_given_to_root() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        fs::create_dir_all(tree.join("usr/bin")).unwrap();
        fs::write(tree.join("usr/bin/tool"), "x").unwrap();
        // A tree of someone else than root (as root: hand it to uid 1000).
        if nix::unistd::geteuid().is_root() {
            for p in [&tree, &tree.join("usr"), &tree.join("usr/bin"), &tree.join("usr/bin/tool")] {
                std::os::unix::fs::chown(p, Some(1000), Some(1000)).unwrap();
            }
        }
        let image = tmp.path().join("x.ext4");
        let digest = crate::hash::RecipeHash::new("test").finish();
        make_image(&tree, &image, &digest, 1000, &tmp.path().join("log")).unwrap();
        let owner = |path: &str| {
            let debugfs = command::find_tool("debugfs", "e2fsprogs").unwrap();
            let out = Command::new(debugfs).args(["-R", &format!("stat {path}")]).arg(&image).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let field =
                |name: &str| text.split(name).nth(1).and_then(|r| r.split_whitespace().next()).map(String::from);
            (field("User:"), field("Group:"))
        };
        assert_ne!(owner("/usr/bin/tool"), (Some("0".into()), Some("0".into())));
        set_root_owner(&image, 1000).unwrap();
        for path in ["/", "/usr", "/usr/bin", "/usr/bin/tool"] {
            assert_eq!(owner(path), (Some("0".into()), Some("0".into())), "{path}");
        }
    }

    #[test]
    fn size_has_headroom() {
        let size = size_for(Usage { bytes: 300 << 20, inodes: 20_000 });
        assert!(size.image_bytes >= (300 << 20) * 11 / 10 + (64 << 20));
        assert_eq!(size.image_bytes % (1 << 20), 0);
        assert_eq!(size.inodes, 23_024);
    }
}
