//! What both Linux boot protocols hand the kernel besides itself: the
//! command line and the initrd, placed in guest RAM with their bounds
//! checked first.

use super::setup_header::HeaderError;
use crate::arch::x86_64::layout::{CMDLINE_ADDR, CMDLINE_MAX_BYTES};
use crate::memory::{GuestMemory, MemoryError};

const PAGE: u64 = 0x1000;

/// A Linux kernel could not be set up to boot.
#[derive(Debug, thiserror::Error)]
pub enum LinuxBootError {
    #[error("the bzImage's setup header is not usable")]
    Header(#[from] HeaderError),
    #[error("the vmlinux ELF is invalid or does not fit in guest RAM")]
    Elf(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the vmlinux has no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY note); build it with CONFIG_PVH=y")]
    NoPvhEntry,
    #[error(
        "the kernel needs guest RAM up to {end:#x} but RAM below 4 GiB ends at {ram_end:#x}; give the VM more memory"
    )]
    KernelTooBig { end: u64, ram_end: u64 },
    #[error("the kernel command line is {len} bytes; this kernel takes at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("the kernel command line contains a NUL byte")]
    CmdlineNul,
    #[error(
        "the initrd ({size} bytes) does not fit between the kernel's end ({floor:#x}) and {ceiling:#x}; \
         give the VM more memory or use a smaller initrd"
    )]
    InitrdTooBig { size: u64, floor: u64, ceiling: u64 },
    #[error("could not write the kernel or its boot information into guest RAM")]
    Memory(#[source] MemoryError),
}

/// Where the initrd landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitrdPlacement {
    pub addr: u64,
    pub size: u64,
}

/// Writes `cmdline` NUL-terminated at [`CMDLINE_ADDR`] if it is at most
/// `max` bytes (the kernel's limit, without the NUL) and fits our slot.
pub fn write_cmdline(memory: &GuestMemory, cmdline: &str, max: usize) -> Result<(), LinuxBootError> {
    let max = max.min(CMDLINE_MAX_BYTES as usize - 1);
    if cmdline.len() > max {
        return Err(LinuxBootError::CmdlineTooLong { len: cmdline.len(), max });
    }
    if cmdline.contains('\0') {
        return Err(LinuxBootError::CmdlineNul);
    }
    let mut bytes = Vec::with_capacity(cmdline.len() + 1);
    bytes.extend_from_slice(cmdline.as_bytes());
    bytes.push(0);
    memory.write(CMDLINE_ADDR, &bytes).map_err(LinuxBootError::Memory)
}

/// The highest page-aligned address at or above `floor` where `size` bytes
/// end at or below `ceiling`.
pub fn initrd_address(size: u64, floor: u64, ceiling: u64) -> Result<u64, LinuxBootError> {
    let too_big = || LinuxBootError::InitrdTooBig { size, floor, ceiling };
    let addr = ceiling.checked_sub(size).ok_or_else(too_big)? & !(PAGE - 1);
    if floor.checked_next_multiple_of(PAGE).is_none_or(|floor| addr < floor) {
        return Err(too_big());
    }
    Ok(addr)
}

/// Copies `initrd` (if any, and not empty) as high as it fits in
/// `[floor, ceiling)`.
pub fn load_initrd(
    memory: &GuestMemory,
    initrd: Option<&[u8]>,
    floor: u64,
    ceiling: u64,
) -> Result<Option<InitrdPlacement>, LinuxBootError> {
    let Some(initrd) = initrd.filter(|i| !i.is_empty()) else { return Ok(None) };
    let size = initrd.len() as u64;
    let addr = initrd_address(size, floor, ceiling)?;
    memory.write(addr, initrd).map_err(LinuxBootError::Memory)?;
    Ok(Some(InitrdPlacement { addr, size }))
}

/// Fails unless `[.., end)` lies in the RAM below 4 GiB, which ends at `ram_end`.
pub fn check_kernel_fits(end: u64, ram_end: u64) -> Result<(), LinuxBootError> {
    if end > ram_end {
        return Err(LinuxBootError::KernelTooBig { end, ram_end });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn cmdline_is_bounded_and_terminated() {
        let mem = GuestMemory::new(2).unwrap();
        write_cmdline(&mem, "console=ttyS0", 2047).unwrap();
        let mut buf = [0xaau8; 14];
        mem.read(CMDLINE_ADDR, &mut buf).unwrap();
        assert_eq!(&buf, b"console=ttyS0\0");

        let long = "x".repeat(2048);
        let err = write_cmdline(&mem, &long, 2047).unwrap_err();
        assert!(matches!(err, LinuxBootError::CmdlineTooLong { len: 2048, max: 2047 }), "{err:?}");
        assert_eq!(err.to_string(), "the kernel command line is 2048 bytes; this kernel takes at most 2047");
        write_cmdline(&mem, &long[..2047], 2047).unwrap();
        let huge = "y".repeat(CMDLINE_MAX_BYTES as usize);
        assert!(matches!(
            write_cmdline(&mem, &huge, usize::MAX),
            Err(LinuxBootError::CmdlineTooLong { max, .. }) if max == CMDLINE_MAX_BYTES as usize - 1
        ));
        assert!(matches!(write_cmdline(&mem, "a\0b", 2047), Err(LinuxBootError::CmdlineNul)));
    }

    #[test]
    fn initrd_goes_as_high_as_it_fits_page_aligned() {
        assert_eq!(initrd_address(4096, 32 * MIB, 64 * MIB).unwrap(), 64 * MIB - 4096);
        assert_eq!(initrd_address(5000, 32 * MIB, 64 * MIB).unwrap(), 64 * MIB - 8192);
        assert_eq!(initrd_address(32 * MIB, 32 * MIB, 64 * MIB).unwrap(), 32 * MIB, "exactly fits");
        assert_eq!(initrd_address(10, 0x1234, 0x3000).unwrap(), 0x2000);
    }

    #[test]
    fn initrd_too_big_for_memory_is_an_error() {
        for (size, floor, ceiling) in
            [(32 * MIB + 1, 32 * MIB, 64 * MIB), (u64::MAX, 0, 64 * MIB), (10, 0x2001, 0x3000)]
        {
            let err = initrd_address(size, floor, ceiling).unwrap_err();
            assert!(matches!(err, LinuxBootError::InitrdTooBig { .. }), "{err:?}");
        }
        let mem = GuestMemory::new(4).unwrap();
        let big = vec![7u8; 3 * MIB as usize];
        let err = load_initrd(&mem, Some(&big), 2 * MIB, 4 * MIB).unwrap_err();
        assert!(err.to_string().starts_with("the initrd (3145728 bytes) does not fit"), "{err}");
        assert_eq!(load_initrd(&mem, Some(&[]), 2 * MIB, 4 * MIB).unwrap(), None, "empty means none");
        let placed = load_initrd(&mem, Some(&[1, 2, 3]), 2 * MIB, 4 * MIB).unwrap().unwrap();
        assert_eq!(placed, InitrdPlacement { addr: 4 * MIB - 4096, size: 3 });
    }
}
