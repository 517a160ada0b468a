//! A raw disk image file: positioned reads and writes, flush, discard and
//! write-zeroes. No format, no cache of our own: the host page cache is it,
//! and FLUSH is `fdatasync`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Bytes in a virtio-blk sector, whatever the image's block size.
pub const SECTOR: u64 = 512;
/// Length of the device ID GET_ID returns.
pub const ID_BYTES: usize = 20;

/// The image could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("could not open disk image {0}")]
    Open(PathBuf, #[source] io::Error),
    #[error("disk image {0} is in use by another VM (it is locked)")]
    Locked(PathBuf, #[source] io::Error),
}

/// An open raw image.
#[derive(Debug)]
pub struct DiskImage {
    file: File,
    read_only: bool,
    sectors: u64,
    id: [u8; ID_BYTES],
}

impl DiskImage {
    /// Opens `path`, read-only or read-write. The image is locked (shared
    /// for read-only, exclusive for read-write) for as long as it is open,
    /// so two VMs never write one image. Its capacity is its length in whole
    /// sectors; a partial last sector is not visible to the guest.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, DiskError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|e| DiskError::Open(path.to_owned(), e))?;
        lock(&file, read_only).map_err(|e| DiskError::Locked(path.to_owned(), e))?;
        let meta = file.metadata().map_err(|e| DiskError::Open(path.to_owned(), e))?;
        Ok(Self { file, read_only, sectors: meta.len() / SECTOR, id: device_id(meta.dev(), meta.ino()) })
    }

    /// Capacity in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Whether the guest may only read.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The device ID (NUL-padded ASCII).
    pub fn id(&self) -> &[u8; ID_BYTES] {
        &self.id
    }

    /// Whether `count` sectors from `sector` lie inside the disk.
    pub fn contains(&self, sector: u64, count: u64) -> bool {
        sector.checked_add(count).is_some_and(|end| end <= self.sectors)
    }

    /// Reads `buf.len()` bytes at byte `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// Writes `buf` at byte `offset`.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    /// Makes completed writes durable.
    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Drops the data in `len` bytes at `offset` (they read as zeros after).
    /// A file system that can't punch holes makes this a no-op, which the
    /// spec allows for discard.
    pub fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        match self.fallocate(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, offset, len) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
            other => other,
        }
    }

    /// Zeroes `len` bytes at `offset`, deallocating them if `unmap`. Falls
    /// back to writing zeros from `scratch` when the file system can't.
    pub fn write_zeroes(&self, offset: u64, len: u64, unmap: bool, scratch: &mut [u8]) -> io::Result<()> {
        let mode = if unmap { libc::FALLOC_FL_PUNCH_HOLE } else { libc::FALLOC_FL_ZERO_RANGE };
        match self.fallocate(mode | libc::FALLOC_FL_KEEP_SIZE, offset, len) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
            other => return other,
        }
        scratch.fill(0);
        let mut done = 0;
        while done < len {
            let n = (len - done).min(scratch.len() as u64) as usize;
            self.write_at(&scratch[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            // Nothing to do; fallocate itself refuses a zero length.
            return Ok(());
        }
        let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        // SAFETY: fallocate only reads its integer arguments and acts on the
        // fd, which `self.file` keeps open for the duration of the call.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, offset, len) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

fn lock(file: &File, shared: bool) -> io::Result<()> {
    let op = if shared { libc::LOCK_SH } else { libc::LOCK_EX };
    // SAFETY: flock only acts on the fd, which `file` keeps open; the lock
    // is released when the file (every dup of it) is closed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A stable ID for the image file: "moat" and its device and inode numbers.
fn device_id(dev: u64, ino: u64) -> [u8; ID_BYTES] {
    let text = format!("moat{dev:x}-{ino:x}");
    let mut id = [0u8; ID_BYTES];
    let n = text.len().min(ID_BYTES);
    id[..n].copy_from_slice(&text.as_bytes()[..n]);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(bytes: usize) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(bytes as u64).unwrap();
        f
    }

    #[test]
    fn capacity_is_whole_sectors_and_ranges_are_checked() {
        let f = image(4 * 512 + 100);
        let disk = DiskImage::open(f.path(), true).unwrap();
        assert_eq!(disk.sectors(), 4);
        assert!(disk.contains(0, 4));
        assert!(disk.contains(4, 0));
        assert!(!disk.contains(3, 2));
        assert!(!disk.contains(u64::MAX, 2), "overflow is out of range");
        assert!(disk.id().starts_with(b"moat"));
    }

    #[test]
    fn a_read_write_image_is_locked_against_a_second_writer() {
        let f = image(512);
        let _first = DiskImage::open(f.path(), false).unwrap();
        assert!(matches!(DiskImage::open(f.path(), false), Err(DiskError::Locked(..))));
        assert!(matches!(DiskImage::open(f.path(), true), Err(DiskError::Locked(..))));
    }

    #[test]
    fn write_zeroes_and_discard_clear_data() {
        let f = image(8 * 512);
        let disk = DiskImage::open(f.path(), false).unwrap();
        disk.write_at(&[0xab; 4096], 0).unwrap();
        let mut scratch = vec![0xffu8; 1024];
        disk.write_zeroes(512, 1024, false, &mut scratch).unwrap();
        disk.discard(2048, 512).unwrap();
        let mut back = [0u8; 4096];
        disk.read_at(&mut back, 0).unwrap();
        assert!(back[..512].iter().all(|&b| b == 0xab));
        assert!(back[512..1536].iter().all(|&b| b == 0));
        assert!(back[1536..2048].iter().all(|&b| b == 0xab));
        assert!(back[2048..2560].iter().all(|&b| b == 0), "discarded (tmpfs/ext4 punch holes)");
        assert_eq!(f.as_file().metadata().unwrap().len(), 8 * 512, "size kept");
        // Zero sectors is a request that succeeds doing nothing (found by fuzzing).
        disk.discard(512, 0).unwrap();
        disk.write_zeroes(0, 0, true, &mut scratch).unwrap();
        disk.read_at(&mut back, 0).unwrap();
        assert!(back[..512].iter().all(|&b| b == 0xab));
    }
}
