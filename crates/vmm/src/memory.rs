//! Guest RAM: one memfd, mapped shared, faulted in lazily.
//!
//! The memfd is what vhost-user back-ends map to share guest memory (each
//! region is sent with its offset in it); nothing is pre-faulted, so a 4 GiB
//! guest that touches 10 MiB costs the host about 10 MiB.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch;

const MIB: u64 = 1 << 20;

/// Guest RAM could not be set up or accessed.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("could not create the memfd backing guest RAM")]
    Memfd(#[source] io::Error),
    #[error("could not size the memfd backing guest RAM to {0} MiB")]
    Resize(u32, #[source] io::Error),
    #[error("could not map guest RAM")]
    Map(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("guest range {addr:#x}+{len:#x} is not RAM")]
    OutOfRange { addr: u64, len: usize },
}

/// One guest-physical RAM region as seen by KVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamRegion {
    /// Guest-physical start.
    pub guest_addr: u64,
    /// Length in bytes.
    pub len: u64,
    /// Host virtual address of the mapping.
    pub host_addr: u64,
}

/// Guest RAM backed by a single memfd.
#[derive(Debug)]
pub struct GuestMemory {
    mmap: GuestMemoryMmap,
    memfd: File,
    mem_mib: u32,
}

impl GuestMemory {
    /// Creates `mem_mib` MiB of guest RAM laid out by [`arch::ram_ranges`].
    pub fn new(mem_mib: u32) -> Result<Self, MemoryError> {
        let size = u64::from(mem_mib) * MIB;
        Self::map(&arch::ram_ranges(size), mem_mib)
    }

    /// Guest RAM as the given `(guest address, length)` regions rather than
    /// the architecture's layout: for tests and fuzzing, where chains must be
    /// able to cross from one region into the next, or into a hole. The
    /// regions must be in address order and must not overlap.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn with_ranges(ranges: &[(u64, u64)]) -> Result<Self, MemoryError> {
        let total: u64 = ranges.iter().map(|&(_, len)| len).sum();
        Self::map(ranges, u32::try_from(total.div_ceil(MIB)).unwrap_or(u32::MAX))
    }

    /// Backs `ranges` with one memfd of `mem_mib` MiB, region after region.
    fn map(ranges: &[(u64, u64)], mem_mib: u32) -> Result<Self, MemoryError> {
        let size: u64 = ranges.iter().map(|&(_, len)| len).sum();
        let memfd = create_memfd(c"moat-guest-ram").map_err(MemoryError::Memfd)?;
        // ftruncate only sets the size: pages are allocated on first touch.
        memfd.set_len(size).map_err(|e| MemoryError::Resize(mem_mib, e))?;

        let mut mapped = Vec::new();
        let mut file_offset = 0;
        for &(start, len) in ranges {
            let file = memfd.try_clone().map_err(MemoryError::Memfd)?;
            let len_usize = usize::try_from(len).map_err(|e| MemoryError::Map(Box::new(e)))?;
            mapped.push((GuestAddress(start), len_usize, Some(FileOffset::new(file, file_offset))));
            file_offset += len;
        }
        let mmap = GuestMemoryMmap::from_ranges_with_files(&mapped).map_err(|e| MemoryError::Map(Box::new(e)))?;
        Ok(Self { mmap, memfd, mem_mib })
    }

    /// Guest RAM size in MiB.
    pub fn mem_mib(&self) -> u32 {
        self.mem_mib
    }

    /// Guest RAM size in bytes.
    pub fn size(&self) -> u64 {
        self.mmap.iter().map(|r| r.len()).sum()
    }

    /// The memfd holding guest RAM, to share with out-of-process back-ends.
    pub fn memfd(&self) -> BorrowedFd<'_> {
        self.memfd.as_fd()
    }

    /// The RAM regions, in guest-physical order.
    pub fn regions(&self) -> Vec<RamRegion> {
        self.mmap
            .iter()
            .map(|r| RamRegion { guest_addr: r.start_addr().0, len: r.len(), host_addr: r.as_ptr() as u64 })
            .collect()
    }

    /// Copies `data` into guest RAM at `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.mmap.write_slice(data, GuestAddress(addr)).map_err(|_| MemoryError::OutOfRange { addr, len: data.len() })
    }

    /// Copies guest RAM at `addr` into `buf`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.mmap.read_slice(buf, GuestAddress(addr)).map_err(|_| MemoryError::OutOfRange { addr, len: buf.len() })
    }

    /// Writes a little-endian u64 at `addr`.
    pub fn write_u64(&self, addr: u64, value: u64) -> Result<(), MemoryError> {
        self.write(addr, &value.to_le_bytes())
    }

    pub(crate) fn backend(&self) -> &GuestMemoryMmap {
        &self.mmap
    }
}

fn create_memfd(name: &CStr) -> io::Result<File> {
    // SAFETY: `name` is a NUL-terminated string that outlives the call (the
    // CStr type guarantees both); memfd_create reads nothing else from us.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by memfd_create, is open, and nothing
    // else owns it: ownership moves into the OwnedFd here.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(File::from(owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn allocated_bytes(mem: &GuestMemory) -> u64 {
        // SAFETY: an all-zero `stat` is a valid value of the plain-data struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: the fd is open for the duration (borrowed from `mem`) and
        // `st` is a valid, writable `stat` the kernel fills in.
        let rc = unsafe { libc::fstat(mem.memfd().as_raw_fd(), &mut st) };
        assert_eq!(rc, 0);
        st.st_blocks as u64 * 512
    }

    #[test]
    fn memory_is_sized_and_lazily_backed() {
        let mem = GuestMemory::new(256).unwrap();
        let total: u64 = mem.regions().iter().map(|r| r.len).sum();
        assert_eq!(total, 256 * MIB);
        assert_eq!(allocated_bytes(&mem), 0, "nothing may be pre-faulted");

        mem.write(0x10_0000, b"moat").unwrap();
        let mut buf = [0u8; 4];
        mem.read(0x10_0000, &mut buf).unwrap();
        assert_eq!(&buf, b"moat");
        assert!(allocated_bytes(&mem) <= 2 * MIB, "one touch, one page-ish");
    }

    #[test]
    fn access_past_the_end_is_an_error() {
        let mem = GuestMemory::new(2).unwrap();
        assert!(matches!(mem.write(2 * MIB - 2, b"abcd"), Err(MemoryError::OutOfRange { .. })));
    }

    #[test]
    fn explicit_ranges_are_separate_regions_with_a_hole_between() {
        let mem = GuestMemory::with_ranges(&[(0, 0x1_0000), (0x1_0000, 0x1_0000), (0x4_0000, 0x1_0000)]).unwrap();
        assert_eq!(mem.regions().len(), 3);
        assert_eq!(mem.size(), 0x3_0000);
        mem.write(0x1_0000 - 2, b"span").unwrap();
        let mut buf = [0u8; 4];
        mem.read(0x1_0000 - 2, &mut buf).unwrap();
        assert_eq!(&buf, b"span", "adjacent regions read as one range");
        assert!(mem.write(0x2_0000 - 2, b"hole").is_err(), "nothing is mapped at 0x2_0000");
    }
}
