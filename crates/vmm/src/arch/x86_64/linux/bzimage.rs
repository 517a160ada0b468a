//! Booting a bzImage through the Linux 64-bit boot protocol: the
//! protected-mode kernel at its preferred address, a zero page
//! (`boot_params`) built from the image's own setup header, and entry in
//! long mode at `startup_64` (load address + 0x200) with RSI = zero page.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use vm_memory::ByteValued;

use super::boot_info::{check_kernel_fits, load_initrd, write_cmdline, InitrdPlacement, LinuxBootError};
use super::setup_header::{SetupHeader, HEADER_START};
use crate::arch::x86_64::layout::{CMDLINE_ADDR, ZERO_PAGE_ADDR};
use crate::arch::x86_64::memory_map::{low_ram_end, memory_map, MemoryRange};
use crate::arch::x86_64::regs::BootEntry;
use crate::memory::GuestMemory;

/// Offset of the 64-bit entry point in the protected-mode kernel.
pub const STARTUP_64_OFFSET: u64 = 0x200;
/// `type_of_loader` for a boot loader without an assigned ID.
const LOADER_UNDEFINED: u8 = 0xff;
/// `vid_mode` "normal" (80x25 text; nothing to switch).
const VID_MODE_NORMAL: u16 = 0xffff;

/// Loads `image` (a whole bzImage), `initrd` and `cmdline` into `memory`;
/// returns how to enter the kernel.
pub fn load_bzimage(
    memory: &GuestMemory,
    image: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
) -> Result<BootEntry, LinuxBootError> {
    let header = SetupHeader::parse(image)?;
    let kernel = &image[header.setup_len()..];
    let load = header.load_address();
    let ram_end = low_ram_end(memory.size());
    let kernel_end = load + header.footprint(kernel.len());
    check_kernel_fits(kernel_end, ram_end)?;
    memory.write(load, kernel).map_err(LinuxBootError::Memory)?;

    write_cmdline(memory, cmdline, header.cmdline_size as usize)?;
    let ceiling = ram_end.min(u64::from(header.initrd_addr_max) + 1);
    let initrd = load_initrd(memory, initrd, kernel_end, ceiling)?;

    let params = zero_page(image, &header, initrd, &memory_map(memory.size()));
    memory.write(ZERO_PAGE_ADDR, params.as_slice()).map_err(LinuxBootError::Memory)?;
    Ok(BootEntry::LongMode { rip: load + STARTUP_64_OFFSET, rsi: ZERO_PAGE_ADDR })
}

/// The zero page: the image's setup header as the kernel wrote it, with
/// the fields a boot loader owns filled in, and the e820 map.
fn zero_page(image: &[u8], header: &SetupHeader, initrd: Option<InitrdPlacement>, map: &[MemoryRange]) -> boot_params {
    let mut params = boot_params::default();
    params.as_mut_slice()[HEADER_START..header.end].copy_from_slice(&image[HEADER_START..header.end]);
    params.hdr.type_of_loader = LOADER_UNDEFINED;
    params.hdr.vid_mode = VID_MODE_NORMAL;
    params.hdr.code32_start = header.load_address() as u32;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    if let Some(initrd) = initrd {
        // Both below 4 GiB: the ext_ramdisk_* high halves stay 0.
        params.hdr.ramdisk_image = initrd.addr as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }
    let mut entries = 0u8;
    for (slot, range) in params.e820_table.iter_mut().zip(map) {
        *slot = boot_e820_entry { addr: range.addr, size: range.size, r#type: range.kind };
        entries += 1;
    }
    params.e820_entries = entries;
    params
}

#[cfg(test)]
mod tests;
