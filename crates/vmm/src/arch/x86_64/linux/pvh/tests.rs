//! The start info read back at the offsets of Xen's `start_info.h`, and
//! the PVH note found in hand-made ELFs and in the real `vmlinux`.

use super::*;
use crate::arch::x86_64::linux::testing::cached_kernel;
use crate::arch::x86_64::memory_map::{E820_RAM, E820_RESERVED};

const MIB: u64 = 1 << 20;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// A minimal ELF64: one PT_LOAD of `code` at 1 MiB and, if `pvh_entry`,
/// a PT_NOTE with a Xen PHYS32_ENTRY note (preceded by an unrelated note).
fn tiny_elf(code: &[u8], pvh_entry: Option<u32>) -> Vec<u8> {
    let mut notes = Vec::new();
    let mut note = |name: &[u8], kind: u32, desc: &[u8]| {
        notes.extend_from_slice(&(name.len() as u32).to_le_bytes());
        notes.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        notes.extend_from_slice(&kind.to_le_bytes());
        notes.extend_from_slice(name);
        notes.resize(notes.len().next_multiple_of(4), 0);
        notes.extend_from_slice(desc);
        notes.resize(notes.len().next_multiple_of(4), 0);
    };
    let phnum: u16 = if pvh_entry.is_some() { 2 } else { 1 };
    if let Some(entry) = pvh_entry {
        note(b"GNU\0", 3, &[1, 2, 3, 4, 5]);
        note(b"Xen\0", 18, &u64::from(entry).to_le_bytes());
    }
    let notes_off = 64 + 56 * u64::from(phnum);
    let code_off = notes_off + notes.len() as u64;

    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&0x10_0000u64.to_le_bytes()); // e_entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes());
    elf.extend_from_slice(&[64, 0, 56, 0]); // e_ehsize, e_phentsize
    elf.extend_from_slice(&phnum.to_le_bytes());
    elf.extend_from_slice(&[0; 6]); // no sections
    let mut phdr = |kind: u32, off: u64, addr: u64, len: u64| {
        elf.extend_from_slice(&kind.to_le_bytes());
        elf.extend_from_slice(&7u32.to_le_bytes());
        for v in [off, addr, addr, len, len, 4] {
            elf.extend_from_slice(&v.to_le_bytes());
        }
    };
    phdr(1, code_off, 0x10_0000, code.len() as u64);
    if pvh_entry.is_some() {
        phdr(4, notes_off, 0, notes.len() as u64);
    }
    elf.extend_from_slice(&notes);
    elf.extend_from_slice(code);
    elf
}

/// The PHYS32_ENTRY address, found by walking the ELF's PT_NOTE segments
/// without linux-loader.
fn pvh_note(elf: &[u8]) -> Option<u32> {
    let phoff = u64_at(elf, 0x20) as usize;
    let phnum = usize::from(u16::from_le_bytes([elf[0x38], elf[0x39]]));
    for ph in (0..phnum).map(|i| &elf[phoff + 56 * i..]) {
        if u32_at(ph, 0) != 4 {
            continue;
        }
        let (mut at, end) = (u64_at(ph, 8) as usize, (u64_at(ph, 8) + u64_at(ph, 32)) as usize);
        while at + 12 <= end {
            let (namesz, descsz, kind) = (u32_at(elf, at) as usize, u32_at(elf, at + 4) as usize, u32_at(elf, at + 8));
            let name = &elf[at + 12..at + 12 + namesz];
            let desc = at + 12 + namesz.next_multiple_of(4);
            if name == b"Xen\0" && kind == 18 {
                return Some(u32_at(elf, desc));
            }
            at = desc + descsz.next_multiple_of(4);
        }
    }
    None
}

struct StartInfo {
    magic: u32,
    version: u32,
    nr_modules: u32,
    modules: Vec<(u64, u64)>,
    cmdline: String,
    memmap: Vec<(u64, u64, u32)>,
}

/// Reads the start info the way the guest does, from the address in EBX.
fn read_start_info(mem: &GuestMemory, addr: u64) -> StartInfo {
    let mut si = [0u8; 56];
    mem.read(addr, &mut si).unwrap();
    let mut cmdline = vec![0u8; 4096];
    mem.read(u64_at(&si, 0x18), &mut cmdline).unwrap();
    let end = cmdline.iter().position(|&b| b == 0).unwrap();
    let nr_modules = u32_at(&si, 12);
    let modules = (0..u64::from(nr_modules))
        .map(|i| {
            let mut m = [0u8; 32];
            mem.read(u64_at(&si, 0x10) + 32 * i, &mut m).unwrap();
            (u64_at(&m, 0), u64_at(&m, 8))
        })
        .collect();
    let memmap = (0..u64::from(u32_at(&si, 0x30)))
        .map(|i| {
            let mut e = [0u8; 24];
            mem.read(u64_at(&si, 0x28) + 24 * i, &mut e).unwrap();
            (u64_at(&e, 0), u64_at(&e, 8), u32_at(&e, 16))
        })
        .collect();
    StartInfo {
        magic: u32_at(&si, 0),
        version: u32_at(&si, 4),
        nr_modules,
        modules,
        cmdline: String::from_utf8(cmdline[..end].to_vec()).unwrap(),
        memmap,
    }
}

#[test]
fn start_info_carries_cmdline_memory_map_and_initrd() {
    let mem = GuestMemory::new(64).unwrap();
    let elf = tiny_elf(&[0xf4; 16], Some(0x10_0004));
    assert_eq!(pvh_note(&elf), Some(0x10_0004), "the test's own note reader agrees");
    let entry = load_pvh(&mem, &elf, Some(&[9u8; 5000]), "console=ttyS0 root=/dev/vda").unwrap();
    assert_eq!(entry, BootEntry::Protected32 { eip: 0x10_0004, ebx: 0x6000 });

    let si = read_start_info(&mem, 0x6000);
    assert_eq!(si.magic, 0x336e_c578);
    assert_eq!(si.version, 1);
    assert_eq!(si.cmdline, "console=ttyS0 root=/dev/vda");
    assert_eq!(si.memmap, vec![(0, 0x9_fc00, E820_RAM), (0x9_fc00, 0x400, E820_RESERVED), (MIB, 63 * MIB, E820_RAM)]);
    assert_eq!(si.nr_modules, 1);
    assert_eq!(si.modules, vec![(64 * MIB - 8192, 5000)]);
    let mut initrd = vec![0u8; 5000];
    mem.read(64 * MIB - 8192, &mut initrd).unwrap();
    assert!(initrd.iter().all(|&b| b == 9));
}

#[test]
fn without_an_initrd_there_are_no_modules() {
    let mem = GuestMemory::new(8).unwrap();
    load_pvh(&mem, &tiny_elf(&[0xf4], Some(0x10_0000)), None, "").unwrap();
    let si = read_start_info(&mem, 0x6000);
    assert_eq!((si.nr_modules, si.modules.len(), si.cmdline.as_str()), (0, 0, ""));
}

#[test]
fn an_elf_without_the_note_is_refused() {
    let mem = GuestMemory::new(8).unwrap();
    let err = load_pvh(&mem, &tiny_elf(&[0xf4], None), None, "").unwrap_err();
    assert!(matches!(err, LinuxBootError::NoPvhEntry), "{err:?}");
    assert!(matches!(load_pvh(&mem, b"garbage", None, ""), Err(LinuxBootError::Elf(_))));
}

#[test]
fn pvh_errors_for_cmdline_and_initrd() {
    let mem = GuestMemory::new(8).unwrap();
    let elf = tiny_elf(&[0xf4], Some(0x10_0000));
    let err = load_pvh(&mem, &elf, None, &"x".repeat(2048)).unwrap_err();
    assert!(matches!(err, LinuxBootError::CmdlineTooLong { len: 2048, max: 2047 }), "{err:?}");
    let err = load_pvh(&mem, &elf, Some(&vec![0; 8 << 20]), "").unwrap_err();
    assert!(matches!(err, LinuxBootError::InitrdTooBig { ceiling: 0x80_0000, .. }), "{err:?}");
}

#[test]
fn the_real_vmlinux_has_a_pvh_entry_and_loads() {
    let Some(path) = cached_kernel("vmlinux") else { return };
    let vmlinux = std::fs::read(&path).unwrap();
    let note = pvh_note(&vmlinux).expect("the real vmlinux has a PHYS32_ENTRY note");
    let mem = GuestMemory::new(128).unwrap();
    let entry = load_pvh(&mem, &vmlinux, Some(b"initrd"), "console=ttyS0").unwrap();
    eprintln!("{}: PVH entry {note:#x}", path.display());
    assert_eq!(entry, BootEntry::Protected32 { eip: note, ebx: PVH_INFO_ADDR as u32 });
    assert!((0x100_0000..0x200_0000).contains(&note), "in the kernel's text at CONFIG_PHYSICAL_START: {note:#x}");
    let si = read_start_info(&mem, PVH_INFO_ADDR);
    assert_eq!((si.magic, si.cmdline.as_str(), si.modules.len()), (0x336e_c578, "console=ttyS0", 1));
    assert_eq!(si.modules[0], (128 * MIB - 4096, 6));

    let err = load_pvh(&GuestMemory::new(16).unwrap(), &vmlinux, None, "").unwrap_err();
    assert!(matches!(err, LinuxBootError::Elf(_) | LinuxBootError::KernelTooBig { .. }), "{err:?}");
}
