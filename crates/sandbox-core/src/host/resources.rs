//! What one sandbox may take of the host: its state disk, its memory, free space.
//!
//! The state disk is a sparse file of a size chosen at create (`--disk`, default
//! [`DEFAULT_DISK_GIB`] GiB): the guest can fill it, and no more. Before a disk is
//! made and before every start, the filesystem holding it must have room for
//! the disk to grow to its full size plus [`SPARE_BYTES`]; otherwise the
//! operation is refused, so a guest filling its disk cannot fill the host
//! filesystem holding `$MOAT_HOME` unnoticed. Each sandbox is checked alone:
//! several sandboxes together can still promise more than there is. The
//! workspace is the host's own filesystem and is not bounded here.

use std::path::{Path, PathBuf};

/// The state disk's size when none is given, in GiB.
pub const DEFAULT_DISK_GIB: u64 = 16;
/// The smallest state disk, in GiB.
pub const MIN_DISK_GIB: u64 = 1;
/// The largest state disk, in GiB.
pub const MAX_DISK_GIB: u64 = 1024;
/// Free space left over on the host once a state disk could be full.
pub const SPARE_BYTES: u64 = 1 << 30;

const GIB: u64 = 1 << 30;

/// Why a disk size or the room for it was refused.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// Not a size, or out of range.
    #[error(
        "invalid disk size {0:?}: use a number with a unit, e.g. 20g or 1t ({MIN_DISK_GIB} GiB to {MAX_DISK_GIB} GiB)"
    )]
    BadSize(String),
    /// The filesystem holding the disk has too little free space.
    #[error(
        "not enough free space for a {size} state disk: the filesystem holding {dir} has {free} free and the disk \
         may still grow by {growth} (Moat keeps {spare} spare); free some space or choose a smaller --disk",
        size = gib(*.size), free = gib(*.free), growth = gib(*.growth), spare = gib(SPARE_BYTES)
    )]
    NoSpace { dir: PathBuf, size: u64, growth: u64, free: u64 },
    /// The free space could not be read.
    #[error("cannot read the free space of {0}")]
    Statvfs(PathBuf, #[source] std::io::Error),
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / GIB as f64)
}

/// Parses `20g`, `20GiB`, `1t`, `4096m` into bytes, within
/// [`MIN_DISK_GIB`]..=[`MAX_DISK_GIB`] GiB. A unit is required.
pub fn parse_disk_size(s: &str) -> Result<u64, DiskError> {
    let bad = || DiskError::BadSize(s.to_string());
    let t = s.trim().to_ascii_lowercase();
    let digits = t.bytes().take_while(|b| b.is_ascii_digit()).count();
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let shift = match unit.trim() {
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    let bytes = n.checked_mul(1 << shift).ok_or_else(bad)?;
    if !(MIN_DISK_GIB * GIB..=MAX_DISK_GIB * GIB).contains(&bytes) {
        return Err(bad());
    }
    Ok(bytes)
}

/// The guest memory when none is given: a quarter of the host's, at least 1 GiB
/// and at most 8 GiB — but never more than half the host's (at least 256 MiB).
pub fn default_memory_mib(host_mib: u64) -> u64 {
    (host_mib / 4).clamp(1024, 8 * 1024).min(host_mib / 2).max(256)
}

/// Refuses when the filesystem holding `disk` (a state disk of `size` bytes, which
/// may not exist yet) lacks room for it to grow to its full size plus [`SPARE_BYTES`].
pub fn check_disk_space(disk: &Path, size: u64) -> Result<(), DiskError> {
    use std::os::unix::fs::MetadataExt;
    let dir = disk.parent().unwrap_or(Path::new("/"));
    // The disk's folder may not be made yet: its filesystem is its nearest existing ancestor's.
    let dir = dir.ancestors().find(|a| a.exists()).unwrap_or(Path::new("/"));
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| DiskError::Statvfs(dir.to_path_buf(), e.into()))?;
    let free = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
    let used = std::fs::metadata(disk).map(|m| m.blocks() * 512).unwrap_or(0);
    let growth = size.saturating_sub(used);
    if growth.saturating_add(SPARE_BYTES) > free {
        return Err(DiskError::NoSpace { dir: dir.to_path_buf(), size, growth, free });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_sizes_need_a_unit_and_a_sane_range() {
        assert_eq!(parse_disk_size("20g").unwrap(), 20 * GIB);
        assert_eq!(parse_disk_size("20GiB").unwrap(), 20 * GIB);
        assert_eq!(parse_disk_size("1t").unwrap(), 1024 * GIB);
        assert_eq!(parse_disk_size("4096m").unwrap(), 4 * GIB);
        for bad in ["", "20", "g", "512m", "2t", "0g", "1.5g", "99999999999999999999t", "20x"] {
            let err = parse_disk_size(bad).unwrap_err().to_string();
            assert!(err.contains("e.g. 20g") && err.contains("1 GiB to 1024 GiB"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn default_memory_is_a_quarter_of_the_host_within_bounds() {
        assert_eq!(default_memory_mib(24 * 1024), 6 * 1024);
        assert_eq!(default_memory_mib(128 * 1024), 8 * 1024, "capped at 8 GiB");
        assert_eq!(default_memory_mib(3 * 1024), 1024, "at least 1 GiB");
        assert_eq!(default_memory_mib(1024), 512, "never more than half a small host");
        assert_eq!(default_memory_mib(100), 256);
    }

    #[test]
    fn a_disk_larger_than_the_free_space_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("state.ext4");
        let st = nix::sys::statvfs::statvfs(dir.path()).unwrap();
        let free = st.blocks_available() as u64 * st.fragment_size() as u64;
        assert!(check_disk_space(&disk, GIB.min(free.saturating_sub(2 * SPARE_BYTES))).is_ok() || free < 3 * GIB);
        let err = check_disk_space(&disk, free).unwrap_err().to_string();
        assert!(err.contains("not enough free space") && err.contains("smaller --disk"), "{err}");
        // What the disk already holds needs no more room: a sparse file counts only its blocks.
        std::fs::File::create(&disk).unwrap().set_len(free).unwrap();
        assert!(check_disk_space(&disk, free).is_err(), "an empty sparse file may still grow by its whole size");
    }
}
