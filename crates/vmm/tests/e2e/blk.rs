//! virtio-blk through the real monitor and /dev/kvm: `tests/guests/blk.c`
//! drives the device with its own polling driver.

use std::time::Duration;

use moat_vmm::{build_microvm, BlockStats, DiskConfig, Payload, RunOutcome, VmConfig};

use crate::util::{build_guest, e2e_available};

const SECTORS: usize = 8;

fn sector0_byte(i: usize) -> u8 {
    (i * 13 + 7) as u8
}

fn sector1_byte(i: usize) -> u8 {
    255u8.wrapping_sub((i * 3) as u8)
}

/// An image whose sector 0 holds the pattern the guest checks; the rest is zeros.
fn image() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut bytes = vec![0u8; SECTORS * 512];
    for (i, b) in bytes[..512].iter_mut().enumerate() {
        *b = sector0_byte(i);
    }
    std::fs::write(file.path(), &bytes).unwrap();
    file
}

/// Boots `blk.c` with one disk; returns the serial output, the outcome and
/// the disk's request counts.
fn boot(image: &tempfile::NamedTempFile, read_only: bool) -> (String, RunOutcome, BlockStats) {
    let elf = build_guest("blk");
    let config = VmConfig {
        mem_mib: 16,
        timeout: Duration::from_secs(60),
        disks: vec![DiskConfig { path: image.path().to_owned(), read_only }],
        ..VmConfig::default()
    };
    let mut vm = build_microvm(&config, Payload::Elf(&elf)).unwrap();
    assert_eq!(vm.virtio_cmdline(), "virtio_mmio.device=4K@0xd0000000:5");
    let report = vm.run().unwrap();
    let out = String::from_utf8_lossy(&vm.take_serial_output()).into_owned();
    eprintln!("blk (read_only={read_only}): {:?} in {:?}\n{out}", report.outcome, report.elapsed);
    assert_eq!(report.unmapped.reads + report.unmapped.writes, 0, "{report:?}");
    (out, report.outcome, vm.block_stats()[0])
}

const COMMON: &str = "blk: features ok\n\
                      blk: queue size ok\n\
                      blk: device live ok\n";

#[test]
fn a_guest_reads_writes_and_flushes_a_disk_through_virtio_blk() {
    if !e2e_available("a_guest_reads_writes_and_flushes_a_disk_through_virtio_blk", true) {
        return;
    }
    let image = image();
    let (out, outcome, stats) = boot(&image, false);
    let want = format!(
        "{COMMON}blk: capacity 8 sectors, read-write\n\
         blk: read sector 0 ok\n\
         blk: interrupt status ok\n\
         blk: interrupt ack ok\n\
         blk: irq delivered ok\n\
         blk: write sector 1 ok\n\
         blk: flush ok\n\
         blk: done\n"
    );
    assert_eq!(out, want);
    assert_eq!(outcome, RunOutcome::Exited(0));
    assert_eq!(stats, BlockStats { ok: 3, ..BlockStats::default() });

    let bytes = std::fs::read(image.path()).unwrap();
    assert_eq!(bytes.len(), SECTORS * 512);
    assert!(bytes[..512].iter().enumerate().all(|(i, &b)| b == sector0_byte(i)), "sector 0 untouched");
    assert!(bytes[512..1024].iter().enumerate().all(|(i, &b)| b == sector1_byte(i)), "sector 1 written by the guest");
    assert!(bytes[1024..].iter().all(|&b| b == 0));
}

#[test]
fn a_read_only_disk_answers_a_guest_write_with_ioerr() {
    if !e2e_available("a_read_only_disk_answers_a_guest_write_with_ioerr", true) {
        return;
    }
    let image = image();
    let before = std::fs::read(image.path()).unwrap();
    let (out, outcome, stats) = boot(&image, true);
    assert!(out.starts_with(&format!("{COMMON}blk: capacity 8 sectors, read-only\n")), "{out}");
    assert!(out.contains("blk: read sector 0 ok\n"), "{out}");
    assert!(out.contains("blk: write refused ok\n"), "{out}");
    assert!(out.ends_with("blk: flush ok\nblk: done\n"), "{out}");
    assert_eq!(outcome, RunOutcome::Exited(0));
    assert_eq!(stats, BlockStats { ok: 2, ioerr: 1, ..BlockStats::default() });
    assert_eq!(std::fs::read(image.path()).unwrap(), before, "the image is unchanged");
}
