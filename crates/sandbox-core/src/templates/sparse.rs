//! Copying disk images as bytes, holes kept: a state disk is a sparse file
//! of up to 1 TiB of which the guest wrote a little. Data regions come from
//! `SEEK_DATA`/`SEEK_HOLE`; within them, blocks of zeros become holes too.
//! Nothing here knows what the bytes mean.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::unistd::{lseek, Whence};

/// Granularity of zero detection (the file systems' block).
const BLOCK: usize = 4096;

/// The regions of `file` that hold data, as (offset, length), in order.
pub(crate) fn data_regions(file: &File) -> io::Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let size = file.metadata()?.len();
    let fd = file.as_raw_fd();
    let mut regions = Vec::new();
    let mut at = 0u64;
    while at < size {
        let start = match lseek(fd, at as i64, Whence::SeekData) {
            Ok(s) => s as u64,
            // No data after `at`.
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = (lseek(fd, start as i64, Whence::SeekHole)? as u64).min(size);
        if end > start {
            regions.push((start, end - start));
        }
        at = end;
    }
    Ok(regions)
}

/// Writes data into a sparse file at given offsets, leaving all-zero blocks
/// as holes. The file is sized (and synced) by [`SparseWriter::finish`].
pub(crate) struct SparseWriter<'a> {
    file: &'a File,
    written: u64,
}

impl<'a> SparseWriter<'a> {
    pub fn new(file: &'a File) -> Self {
        SparseWriter { file, written: 0 }
    }

    /// Writes `data` at `offset`, skipping the blocks of zeros in it.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut i = 0;
        while i < data.len() {
            // The block boundary in the file, so holes line up with its blocks.
            let to_boundary = BLOCK - ((offset as usize + i) % BLOCK);
            let end = (i + to_boundary).min(data.len());
            let chunk = &data[i..end];
            if chunk.iter().any(|&b| b != 0) {
                self.file.write_all_at(chunk, offset + i as u64)?;
                self.written += chunk.len() as u64;
            }
            i = end;
        }
        Ok(())
    }

    /// Sizes the file to `size` and syncs it; returns the bytes of data written.
    pub fn finish(self, size: u64) -> io::Result<u64> {
        self.file.set_len(size)?;
        self.file.sync_all()?;
        Ok(self.written)
    }
}

/// What a copy took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Copied {
    /// The file's size.
    pub size: u64,
    /// Bytes of data written (the rest are holes).
    pub data: u64,
}

/// Copies `src` into a new file `dst` (mode 0444), holes kept and blocks of
/// zeros made holes.
pub(crate) fn copy_sparse(src: &Path, dst: &Path) -> io::Result<Copied> {
    use std::os::unix::fs::OpenOptionsExt;
    let from = File::open(src)?;
    let size = from.metadata()?.len();
    let to = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o444).open(dst)?;
    let mut writer = SparseWriter::new(&to);
    let mut buf = vec![0u8; 1 << 20];
    for (offset, len) in data_regions(&from)? {
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            from.read_exact_at(&mut buf[..n], offset + done)?;
            writer.write_at(offset + done, &buf[..n])?;
            done += n as u64;
        }
    }
    let data = writer.finish(size)?;
    Ok(Copied { size, data })
}

/// Bytes a file takes on disk.
pub(crate) fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map(|m| m.blocks() * 512).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_keeps_the_holes_and_makes_zero_blocks_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("disk");
        let f = File::create(&src).unwrap();
        f.set_len(8 << 30).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(&[0u8; 1 << 20], 1 << 30).unwrap(); // written, but zeros
        f.write_all_at(b"middle", (3 << 30) + 5).unwrap();
        f.write_all_at(b"tail", (8 << 30) - 4).unwrap();
        drop(f);
        let dst = dir.path().join("copy");
        let copied = copy_sparse(&src, &dst).unwrap();
        assert_eq!(copied, Copied { size: 8 << 30, data: 3 * BLOCK as u64 });
        let read = |at: u64, n: usize| {
            let mut b = vec![0u8; n];
            File::open(&dst).unwrap().read_exact_at(&mut b, at).unwrap();
            b
        };
        assert_eq!(read(0, 4), b"head");
        assert_eq!(read((3 << 30) + 5, 6), b"middle");
        assert_eq!(read((8 << 30) - 4, 4), b"tail");
        assert_eq!(read(1 << 30, 16), [0u8; 16]);
        assert!(allocated(&dst) <= 64 * 1024, "{} bytes allocated", allocated(&dst));
        let regions = data_regions(&File::open(&dst).unwrap()).unwrap();
        assert_eq!(regions.len(), 3, "{regions:?}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&dst).unwrap().permissions().mode() & 0o777, 0o444);
        assert!(copy_sparse(&src, &dst).is_err(), "never over an existing file");
    }
}
