//! Booting a `vmlinux` through its PVH entry (the Xen/x86 PVH boot ABI,
//! which Linux implements for any hypervisor with `CONFIG_PVH`): the ELF
//! loaded at its physical addresses, an `hvm_start_info` with the command
//! line, the memory map and the initrd as module 0, and entry in 32-bit
//! protected mode with paging off at the address of the
//! `XEN_ELFNOTE_PHYS32_ENTRY` note, EBX = the start info.

use std::io::Cursor;

use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info, XEN_HVM_START_MAGIC_VALUE,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{ByteValued, GuestAddress};

use super::boot_info::{check_kernel_fits, load_initrd, write_cmdline, InitrdPlacement, LinuxBootError};
use crate::arch::x86_64::layout::{CMDLINE_ADDR, PAYLOAD_ADDR, PVH_INFO_ADDR, ZERO_PAGE_ADDR};
use crate::arch::x86_64::memory_map::{low_ram_end, memory_map, MemoryRange};
use crate::arch::x86_64::regs::BootEntry;
use crate::memory::GuestMemory;

/// The module list (one entry: the initrd) follows the start info.
pub const PVH_MODLIST_ADDR: u64 = PVH_INFO_ADDR + 0x40;
/// The memory map follows the module list.
pub const PVH_MEMMAP_ADDR: u64 = PVH_INFO_ADDR + 0x80;
/// Longest command line, without its NUL: x86 Linux's COMMAND_LINE_SIZE - 1
/// (PVH has no header to ask the kernel).
pub const PVH_CMDLINE_MAX: usize = 2047;
/// `hvm_start_info` version 1 carries the memory map.
const START_INFO_VERSION: u32 = 1;

const _: () = {
    assert!(PVH_INFO_ADDR + std::mem::size_of::<hvm_start_info>() as u64 <= PVH_MODLIST_ADDR);
    assert!(PVH_MODLIST_ADDR + std::mem::size_of::<hvm_modlist_entry>() as u64 <= PVH_MEMMAP_ADDR);
    // Room for 16 memory-map entries before the zero page.
    assert!(PVH_MEMMAP_ADDR + 16 * std::mem::size_of::<hvm_memmap_table_entry>() as u64 <= ZERO_PAGE_ADDR);
};

/// Loads `vmlinux`, `initrd` and `cmdline` into `memory`; returns how to
/// enter the kernel.
pub fn load_pvh(
    memory: &GuestMemory,
    vmlinux: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
) -> Result<BootEntry, LinuxBootError> {
    let loaded = Elf::load(memory.backend(), None, &mut Cursor::new(vmlinux), Some(GuestAddress(PAYLOAD_ADDR)))
        .map_err(|e| LinuxBootError::Elf(Box::new(e)))?;
    let PvhBootCapability::PvhEntryPresent(entry) = loaded.pvh_boot_cap else {
        return Err(LinuxBootError::NoPvhEntry);
    };
    let ram_end = low_ram_end(memory.size());
    check_kernel_fits(loaded.kernel_end, ram_end)?;

    write_cmdline(memory, cmdline, PVH_CMDLINE_MAX)?;
    let initrd = load_initrd(memory, initrd, loaded.kernel_end, ram_end)?;
    write_start_info(memory, initrd, &memory_map(memory.size()))?;
    // The note holds a 32-bit address, so the entry is below 4 GiB.
    Ok(BootEntry::Protected32 { eip: entry.0 as u32, ebx: PVH_INFO_ADDR as u32 })
}

/// Writes the start info, the module list and the memory map.
fn write_start_info(
    memory: &GuestMemory,
    initrd: Option<InitrdPlacement>,
    map: &[MemoryRange],
) -> Result<(), LinuxBootError> {
    let write = |addr, bytes: &[u8]| memory.write(addr, bytes).map_err(LinuxBootError::Memory);
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: START_INFO_VERSION,
        cmdline_paddr: CMDLINE_ADDR,
        memmap_paddr: PVH_MEMMAP_ADDR,
        memmap_entries: map.len() as u32,
        ..Default::default()
    };
    if let Some(initrd) = initrd {
        info.nr_modules = 1;
        info.modlist_paddr = PVH_MODLIST_ADDR;
        let module = hvm_modlist_entry { paddr: initrd.addr, size: initrd.size, ..Default::default() };
        write(PVH_MODLIST_ADDR, module.as_slice())?;
    }
    for (i, range) in map.iter().enumerate() {
        let entry = hvm_memmap_table_entry { addr: range.addr, size: range.size, type_: range.kind, reserved: 0 };
        write(PVH_MEMMAP_ADDR + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64, entry.as_slice())?;
    }
    write(PVH_INFO_ADDR, info.as_slice())
}

#[cfg(test)]
mod tests;
