//! Memory figures for `stats`, read without opening files once the VMM
//! thread is confined: `/proc/self/statm` is opened up front and re-read
//! with `pread`, guest RAM is measured with `fstat` on its memfd.

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;

use crate::memory::GuestMemory;

/// Reads the process's and guest RAM's resident memory.
#[derive(Debug)]
pub(crate) struct MemoryProbe<'a> {
    statm: Option<File>,
    page_size: u64,
    memfd: BorrowedFd<'a>,
}

/// Opens `/proc/self/statm` for [`MemoryProbe`], while `/proc` can still be
/// reached: at build time, before a jail takes the file system away.
pub(crate) fn open_statm() -> Option<File> {
    File::open("/proc/self/statm").ok()
}

impl<'a> MemoryProbe<'a> {
    pub(crate) fn new(memory: &'a GuestMemory, statm: Option<File>) -> Self {
        // SAFETY: sysconf only reads its argument; _SC_PAGESIZE is valid.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Self { statm, page_size: u64::try_from(page_size).unwrap_or(4096), memfd: memory.memfd() }
    }

    /// Resident memory of the whole process (0 if unreadable).
    pub(crate) fn process_rss(&self) -> u64 {
        let Some(statm) = &self.statm else { return 0 };
        let mut buf = [0u8; 128];
        // procfs regenerates the file for every read at offset 0.
        let Ok(n) = statm.read_at(&mut buf, 0) else { return 0 };
        parse_statm_resident(&buf[..n]).map_or(0, |pages| pages * self.page_size)
    }

    /// Guest RAM the guest has touched: the pages allocated to its memfd.
    pub(crate) fn guest_ram(&self) -> u64 {
        // SAFETY: an all-zero `stat` is a valid value of the plain-data struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: the memfd is open for the duration (borrowed from guest
        // memory) and `st` is a valid, writable `stat` the kernel fills in.
        if unsafe { libc::fstat(self.memfd.as_raw_fd(), &mut st) } != 0 {
            return 0;
        }
        u64::try_from(st.st_blocks).unwrap_or(0) * 512
    }
}

/// The second field of `/proc/<pid>/statm`: resident pages.
fn parse_statm_resident(statm: &[u8]) -> Option<u64> {
    std::str::from_utf8(statm).ok()?.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm_resident_is_the_second_field() {
        assert_eq!(parse_statm_resident(b"2345 678 90 1 0 55 0\n"), Some(678));
        assert_eq!(parse_statm_resident(b"2345"), None);
        assert_eq!(parse_statm_resident(b"\xff 12"), None);
    }

    #[test]
    fn guest_ram_counts_touched_pages_and_rss_includes_them() {
        let memory = GuestMemory::new(64).unwrap();
        let probe = MemoryProbe::new(&memory, open_statm());
        assert_eq!(probe.guest_ram(), 0);
        let before = probe.process_rss();
        assert!(before > 0);
        memory.write(0x10_0000, &[1u8; 4 << 20]).unwrap();
        assert_eq!(probe.guest_ram(), 4 << 20);
        assert!(probe.process_rss() >= before + (3 << 20), "touched guest pages are resident");
    }
}
