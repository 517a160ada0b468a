//! The Linux boot protocols through real KVM, without Linux: freestanding
//! guests entered exactly as Linux would be report what they were handed.
//!
//! - `tests/guests/pvh.c`: an ELF with a PVH note, entered at the note's
//!   address in 32-bit protected mode with EBX = `hvm_start_info`.
//! - `tests/guests/bzimage.c` behind a synthetic setup header: entered at
//!   `startup_64` in long mode with RSI = the zero page.

use std::time::Duration;

use moat_vmm::arch::FakeBzImage;
use moat_vmm::{build_microvm, DiskConfig, MicroVm, Payload, RunOutcome, VmConfig};

use crate::util::{build_flat_guest, build_guest, e2e_available};

/// 64 MiB of RAM: the memory map's last range is 1 MiB..64 MiB.
const MEM_MIB: u32 = 64;

/// An initrd whose byte sum the guests print.
fn initrd() -> (Vec<u8>, u64) {
    let bytes: Vec<u8> = (0..6000u32).map(|i| (i * 7 + 3) as u8).collect();
    let sum = bytes.iter().map(|&b| u64::from(b)).sum();
    (bytes, sum)
}

fn run(mut vm: MicroVm, name: &str) -> (String, RunOutcome) {
    let report = vm.run().unwrap();
    let out = String::from_utf8_lossy(&vm.take_serial_output()).into_owned();
    eprintln!("{name}: {:?} in {:?}\n{out}", report.outcome, report.elapsed);
    assert_eq!(report.unmapped.reads + report.unmapped.writes, 0, "{report:?}");
    (out, report.outcome)
}

#[test]
fn a_pvh_guest_is_entered_in_protected_mode_and_reads_its_start_info() {
    if !e2e_available("a_pvh_guest_is_entered_in_protected_mode_and_reads_its_start_info", true) {
        return;
    }
    let elf = build_guest("pvh");
    let (initrd, sum) = initrd();
    let config = VmConfig { mem_mib: MEM_MIB, timeout: Duration::from_secs(60), ..VmConfig::default() };
    let payload = Payload::LinuxPvh { vmlinux: &elf, initrd: Some(&initrd), cmdline: "console=ttyS0 moat.test=pvh" };
    let (out, outcome) = run(build_microvm(&config, payload).unwrap(), "pvh");
    // The initrd (6000 bytes) sits page-aligned at the top of RAM.
    let want = format!(
        "pvh: protected mode, paging off, cs 0x8, start_info 0x6000\n\
         pvh: magic 0x336ec578 version 0x1\n\
         pvh: cmdline \"console=ttyS0 moat.test=pvh\"\n\
         pvh: mem 0x0 0x9fc00 0x1\n\
         pvh: mem 0x9fc00 0x400 0x2\n\
         pvh: mem 0x100000 0x3f00000 0x1\n\
         pvh: module 0x3ffe000 0x1770 sum {sum:#x}\n\
         pvh: done\n"
    );
    assert_eq!(out, want);
    assert_eq!(outcome, RunOutcome::Exited(0));
}

#[test]
fn a_fake_bzimage_is_entered_at_startup_64_and_reads_its_zero_page() {
    if !e2e_available("a_fake_bzimage_is_entered_at_startup_64_and_reads_its_zero_page", true) {
        return;
    }
    let kernel = build_flat_guest("bzimage");
    // Loaded at pref_address (2 MiB, where bzimage.ld links it), not at
    // code32_start (1 MiB): a VMM that picked the wrong one would jump into
    // zeros.
    let header = FakeBzImage::default();
    assert_eq!((header.pref_address, header.code32_start), (0x20_0000, 0x10_0000));
    let bzimage = header.build(&kernel);
    let (initrd, sum) = initrd();
    let disk = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(disk.path(), vec![0u8; 4096]).unwrap();
    let config = VmConfig {
        mem_mib: MEM_MIB,
        timeout: Duration::from_secs(60),
        disks: vec![DiskConfig { path: disk.path().to_owned(), read_only: true }],
        ..VmConfig::default()
    };
    let payload =
        Payload::LinuxBzImage { bzimage: &bzimage, initrd: Some(&initrd), cmdline: "console=ttyS0 moat.test=bz" };
    let (out, outcome) = run(build_microvm(&config, payload).unwrap(), "bzimage");
    let want = format!(
        "bz: startup_64 with rsi 0x7000, cs 0x10 ds 0x18 ss 0x18\n\
         bz: protocol 0x20f loader 0xff loadflags 0x1 vid_mode 0xffff\n\
         bz: cmdline \"console=ttyS0 moat.test=bz virtio_mmio.device=4K@0xd0000000:5\"\n\
         bz: e820 0x0 0x9fc00 0x1\n\
         bz: e820 0x9fc00 0x400 0x2\n\
         bz: e820 0x100000 0x3f00000 0x1\n\
         bz: ramdisk 0x3ffe000 0x1770 sum {sum:#x}\n\
         bz: mptable cpus 0x1 ioapic 0xfec00000 irqs 0x17\n\
         bz: done\n"
    );
    assert_eq!(out, want);
    assert_eq!(outcome, RunOutcome::Exited(0));
}
