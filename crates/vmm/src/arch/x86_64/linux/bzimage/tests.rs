//! The zero page read back at the offsets Documentation/arch/x86/zero-page.rst
//! gives, independently of the struct that wrote it.

use super::*;
use crate::arch::x86_64::linux::testing::{cached_kernel, FakeBzImage};
use crate::arch::x86_64::memory_map::{E820_RAM, E820_RESERVED};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn zero_page_of(mem: &GuestMemory) -> Vec<u8> {
    let mut zp = vec![0u8; 4096];
    mem.read(ZERO_PAGE_ADDR, &mut zp).unwrap();
    zp
}

/// `(addr, size, type)` for each e820 entry (count at 0x1e8, table at 0x2d0).
fn e820(zp: &[u8]) -> Vec<(u64, u64, u32)> {
    (0..usize::from(zp[0x1e8]))
        .map(|i| 0x2d0 + 20 * i)
        .map(|at| (u64_at(zp, at), u64_at(zp, at + 8), u32_at(zp, at + 16)))
        .collect()
}

fn cmdline_at(mem: &GuestMemory, addr: u64) -> String {
    let mut buf = vec![0u8; 4096];
    mem.read(addr, &mut buf).unwrap();
    let end = buf.iter().position(|&b| b == 0).expect("NUL-terminated");
    String::from_utf8(buf[..end].to_vec()).unwrap()
}

/// A fake kernel: 0x400 bytes with a marker at +0x200.
fn fake_kernel() -> Vec<u8> {
    let mut k = vec![0xccu8; 0x400];
    k[0x200..0x204].copy_from_slice(b"ENTR");
    k
}

/// Loads a fake bzImage whose `initrd_addr_max` is `initrd_max`.
fn boot_fake(mem_mib: u32, initrd: Option<&[u8]>, initrd_max: u32) -> (GuestMemory, BootEntry, Vec<u8>) {
    let mem = GuestMemory::new(mem_mib).unwrap();
    let image = FakeBzImage { initrd_addr_max: initrd_max, ..FakeBzImage::default() }.build(&fake_kernel());
    let entry = load_bzimage(&mem, &image, initrd, "console=ttyS0 panic=-1").unwrap();
    let zp = zero_page_of(&mem);
    (mem, entry, zp)
}

#[test]
fn zero_page_for_256_mib() {
    let initrd = vec![0x5au8; 10_000];
    let (mem, entry, zp) = boot_fake(256, Some(&initrd), 0x7fff_ffff);
    assert_eq!(entry, BootEntry::LongMode { rip: 0x20_0200, rsi: 0x7000 }, "pref_address + 0x200");
    let mut marker = [0u8; 4];
    mem.read(0x20_0200, &mut marker).unwrap();
    assert_eq!(&marker, b"ENTR", "the protected-mode kernel sits at pref_address");

    assert_eq!(u16_at(&zp, 0x1fe), 0xaa55);
    assert_eq!(u32_at(&zp, 0x202), 0x5372_6448, "HdrS copied from the image");
    assert_eq!(u16_at(&zp, 0x206), 0x020f);
    assert_eq!(zp[0x210], 0xff, "type_of_loader");
    assert_eq!(zp[0x211] & 1, 1, "LOADED_HIGH kept");
    assert_eq!(u16_at(&zp, 0x1fa), 0xffff, "vid_mode normal");
    assert_eq!(u32_at(&zp, 0x214), 0x20_0000, "code32_start = where we loaded it");
    assert_eq!(u32_at(&zp, 0x228), CMDLINE_ADDR as u32);
    assert_eq!(cmdline_at(&mem, CMDLINE_ADDR), "console=ttyS0 panic=-1");
    assert_eq!(u32_at(&zp, 0x218), (256 * MIB - 12 * 1024) as u32, "ramdisk_image: top of RAM, page-aligned");
    assert_eq!(u32_at(&zp, 0x21c), 10_000, "ramdisk_size");
    assert_eq!((u32_at(&zp, 0xc0), u32_at(&zp, 0xc4), u32_at(&zp, 0xc8)), (0, 0, 0), "no ext_* high halves");
    let mut back = vec![0u8; 10_000];
    mem.read(u64::from(u32_at(&zp, 0x218)), &mut back).unwrap();
    assert_eq!(back, initrd);
    assert_eq!(e820(&zp), vec![(0, 0x9_fc00, E820_RAM), (0x9_fc00, 0x400, E820_RESERVED), (MIB, 255 * MIB, E820_RAM)]);
}

#[test]
fn zero_page_for_3_gib_stops_at_the_mmio_hole() {
    let (_mem, _, zp) = boot_fake(3 * 1024, Some(b"initrd"), 0x7fff_ffff);
    assert_eq!(e820(&zp).last(), Some(&(MIB, 3 * GIB - MIB, E820_RAM)));
    assert_eq!(u32_at(&zp, 0x218), (2 * GIB - 4096) as u32, "initrd below initrd_addr_max, like the real kernel's");
    let (_mem, _, zp) = boot_fake(3 * 1024, Some(b"initrd"), 0xffff_ffff);
    assert_eq!(u32_at(&zp, 0x218), (3 * GIB - 4096) as u32, "a kernel allowing 4 GiB: the hole is the limit");
}

#[test]
fn zero_page_for_5_gib_has_ram_above_4_gib_and_the_initrd_below() {
    let (_mem, _, zp) = boot_fake(5 * 1024, Some(b"initrd"), 0xffff_ffff);
    assert_eq!(
        e820(&zp),
        vec![
            (0, 0x9_fc00, E820_RAM),
            (0x9_fc00, 0x400, E820_RESERVED),
            (MIB, 3 * GIB - MIB, E820_RAM),
            (4 * GIB, 2 * GIB, E820_RAM),
        ]
    );
    for (addr, size, _) in e820(&zp) {
        assert!(addr + size <= 0xc000_0000 || addr >= 0x1_0000_0000, "nothing in the MMIO hole");
    }
    assert_eq!(u32_at(&zp, 0x218), (3 * GIB - 4096) as u32, "the initrd stays below 4 GiB");
}

#[test]
fn initrd_addr_max_is_honoured() {
    let mem = GuestMemory::new(1024).unwrap();
    let image = FakeBzImage { initrd_addr_max: 0x0fff_ffff, ..FakeBzImage::default() }.build(&fake_kernel());
    load_bzimage(&mem, &image, Some(&[1; 5000]), "").unwrap();
    assert_eq!(u32_at(&zero_page_of(&mem), 0x218), 0x1000_0000 - 0x2000);
}

#[test]
fn the_kernels_cmdline_size_bounds_the_command_line() {
    let mem = GuestMemory::new(64).unwrap();
    let image = FakeBzImage { cmdline_size: 16, ..FakeBzImage::default() }.build(&fake_kernel());
    load_bzimage(&mem, &image, None, "0123456789abcdef").unwrap();
    let err = load_bzimage(&mem, &image, None, "0123456789abcdefg").unwrap_err();
    assert!(matches!(err, LinuxBootError::CmdlineTooLong { len: 17, max: 16 }), "{err:?}");
}

#[test]
fn an_initrd_too_big_for_memory_is_an_error() {
    let mem = GuestMemory::new(8).unwrap();
    let image = FakeBzImage::default().build(&fake_kernel());
    // The kernel owns 2 MiB + init_size (1 MiB) = 3 MiB; 5 MiB remain.
    load_bzimage(&mem, &image, Some(&vec![0; 5 << 20]), "").unwrap();
    let err = load_bzimage(&mem, &image, Some(&vec![0; (5 << 20) + 1]), "").unwrap_err();
    assert!(matches!(err, LinuxBootError::InitrdTooBig { floor: 0x30_0000, ceiling: 0x80_0000, .. }), "{err:?}");
}

#[test]
fn a_kernel_too_big_for_memory_is_an_error() {
    let mem = GuestMemory::new(2).unwrap();
    let image = FakeBzImage::default().build(&fake_kernel());
    let err = load_bzimage(&mem, &image, None, "").unwrap_err();
    assert!(matches!(err, LinuxBootError::KernelTooBig { end: 0x30_0000, ram_end: 0x20_0000 }), "{err:?}");
}

#[test]
fn the_real_bzimage_loads_with_its_own_header_in_the_zero_page() {
    let Some(path) = cached_kernel("bzImage") else { return };
    let image = std::fs::read(path).unwrap();
    let mem = GuestMemory::new(256).unwrap();
    let initrd = vec![0x42u8; 3 * MIB as usize];
    let entry = load_bzimage(&mem, &image, Some(&initrd), "console=ttyS0").unwrap();
    assert_eq!(entry, BootEntry::LongMode { rip: 0x100_0200, rsi: ZERO_PAGE_ADDR });

    let header = SetupHeader::parse(&image).unwrap();
    let kernel = &image[header.setup_len()..];
    let mut loaded = vec![0u8; kernel.len()];
    mem.read(0x100_0000, &mut loaded).unwrap();
    assert!(loaded == kernel, "the protected-mode kernel is at CONFIG_PHYSICAL_START");

    let zp = zero_page_of(&mem);
    assert_eq!(zp[HEADER_START..0x210], image[HEADER_START..0x210], "setup header copied up to type_of_loader");
    assert_eq!(zp[0x210], 0xff);
    assert_eq!(u32_at(&zp, 0x238), 2047, "cmdline_size kept");
    let ramdisk = u64::from(u32_at(&zp, 0x218));
    assert_eq!(ramdisk, 256 * MIB - 3 * MIB);
    assert!(ramdisk >= 0x100_0000 + u64::from(header.init_size), "clear of the decompression buffer");
    assert_eq!(cmdline_at(&mem, u64::from(u32_at(&zp, 0x228))), "console=ttyS0");
    assert_eq!(e820(&zp).len(), 3);
}

#[test]
fn the_real_bzimage_does_not_fit_in_16_mib() {
    let Some(path) = cached_kernel("bzImage") else { return };
    let image = std::fs::read(path).unwrap();
    let mem = GuestMemory::new(16).unwrap();
    let err = load_bzimage(&mem, &image, None, "").unwrap_err();
    assert!(matches!(err, LinuxBootError::KernelTooBig { ram_end: 0x100_0000, .. }), "{err:?}");
}
