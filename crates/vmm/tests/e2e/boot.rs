//! Booting guests through real KVM and checking what they did.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use moat_vmm::{build_microvm, BusDevice, GuestRequest, Payload, RunOutcome, VmConfig};

use crate::util::{build_guest, e2e_available};

fn config() -> VmConfig {
    VmConfig { mem_mib: 16, timeout: Duration::from_secs(30), ..VmConfig::default() }
}

#[test]
fn hello_prints_and_exits_zero() {
    if !e2e_available("hello_prints_and_exits_zero", true) {
        return;
    }
    let elf = build_guest("hello");
    let mut vm = build_microvm(&config(), Payload::Elf(&elf)).unwrap();
    let report = vm.run().unwrap();
    let out = vm.take_serial_output();
    eprintln!("hello: {:?} in {:?}", report.outcome, report.elapsed);
    assert_eq!(String::from_utf8_lossy(&out), "hello from guest\n");
    assert_eq!(report.outcome, RunOutcome::Exited(0));
    assert_eq!(report.serial.dropped, 0);
    assert_eq!(report.unmapped.reads + report.unmapped.writes, 0);
}

#[test]
fn endless_output_is_bounded_and_timed_out() {
    if !e2e_available("endless_output_is_bounded_and_timed_out", true) {
        return;
    }
    let elf = build_guest("spam");
    let cfg = VmConfig { serial_limit: 64, timeout: Duration::from_secs(2), ..config() };
    let mut vm = build_microvm(&cfg, Payload::Elf(&elf)).unwrap();
    let report = vm.run().unwrap();
    let out = vm.take_serial_output();
    eprintln!("spam: {report:?}");
    assert_eq!(report.outcome, RunOutcome::TimedOut);
    assert_eq!(out.len(), 64, "buffer stops at its bound");
    assert!(out.starts_with(b"spam spam "));
    assert!(report.serial.dropped > 0, "{report:?}");
    assert_eq!(report.serial.written, 64 + report.serial.dropped);
    assert!(report.elapsed < Duration::from_secs(4), "{:?}", report.elapsed);
}

/// The MMIO contract `tests/guests/mmio.c` expects.
struct TestDevice {
    stored: u32,
}

impl BusDevice for TestDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value: u32 = match offset {
            0 => !self.stored,
            8 => 0x5441_4f4d,
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<GuestRequest> {
        if offset == 0 && data.len() == 4 {
            self.stored = u32::from_le_bytes(data.try_into().unwrap());
        }
        None
    }
}

#[test]
fn mmio_guest_reaches_an_attached_device() {
    if !e2e_available("mmio_guest_reaches_an_attached_device", true) {
        return;
    }
    let elf = build_guest("mmio");
    let mut vm = build_microvm(&config(), Payload::Elf(&elf)).unwrap();
    let device = Arc::new(Mutex::new(TestDevice { stored: 0 }));
    vm.attach_mmio(0xd000_0000, 0x1000, device.clone()).unwrap();
    let report = vm.run().unwrap();
    let out = vm.take_serial_output();
    eprintln!("mmio: {:?} in {:?}", report.outcome, report.elapsed);
    assert_eq!(String::from_utf8_lossy(&out), "mmio: ok\n");
    assert_eq!(report.outcome, RunOutcome::Exited(0));
    assert_eq!(device.lock().unwrap().stored, 0x1234_5678);
    assert_eq!(report.unmapped.reads, 1, "the read of the hole");
}

fn run_flat(code: &[u8], timeout: Duration) -> moat_vmm::RunReport {
    let cfg = VmConfig { timeout, ..config() };
    let mut vm = build_microvm(&cfg, Payload::Flat(code)).unwrap();
    vm.run().unwrap()
}

#[test]
fn unmapped_port_reads_all_ones_and_writes_are_counted() {
    if !e2e_available("unmapped_port_reads_all_ones", false) {
        return;
    }
    let code = [
        0x66, 0xba, 0x34, 0x12, // mov dx, 0x1234
        0xec, //                   in al, dx
        0xee, //                   out dx, al
        0xe6, 0xf4, //             out 0xf4, al   (exit with the byte read)
        0xf4, //                   hlt
    ];
    let report = run_flat(&code, Duration::from_secs(10));
    assert_eq!(report.outcome, RunOutcome::Exited(0xff));
    assert_eq!((report.unmapped.reads, report.unmapped.writes), (1, 1));
}

/// With the in-kernel irqchip, HLT is handled inside KVM: the vCPU sleeps
/// until an interrupt that (IF=0) never comes. The watchdog's kick ends it.
#[test]
fn hlt_with_interrupts_off_sleeps_until_the_deadline() {
    if !e2e_available("hlt_with_interrupts_off", false) {
        return;
    }
    let report = run_flat(&[0xf4], Duration::from_millis(300));
    assert_eq!(report.outcome, RunOutcome::TimedOut);
}

/// `ud2` with an empty IDT: #UD → #GP → #DF → triple fault.
#[test]
fn triple_fault_is_a_shutdown() {
    if !e2e_available("triple_fault_is_a_shutdown", false) {
        return;
    }
    let report = run_flat(&[0x0f, 0x0b], Duration::from_secs(10));
    assert_eq!(report.outcome, RunOutcome::Shutdown);
}

#[test]
fn i8042_reset_ends_the_run() {
    if !e2e_available("i8042_reset_ends_the_run", false) {
        return;
    }
    // mov al, 0xfe; out 0x64, al; hlt
    let report = run_flat(&[0xb0, 0xfe, 0xe6, 0x64, 0xf4], Duration::from_secs(10));
    assert_eq!(report.outcome, RunOutcome::Reset);
}

#[test]
fn a_guest_that_never_exits_is_kicked_at_the_deadline() {
    if !e2e_available("a_guest_that_never_exits", false) {
        return;
    }
    // jmp $  — spins without a single VM exit.
    let report = run_flat(&[0xeb, 0xfe], Duration::from_millis(500));
    assert_eq!(report.outcome, RunOutcome::TimedOut);
    assert!(report.elapsed < Duration::from_secs(3), "{:?}", report.elapsed);
}

#[test]
fn the_serial_port_interrupt_reaches_the_guest_through_the_irqchip() {
    if !e2e_available("the_serial_port_interrupt_reaches_the_guest_through_the_irqchip", true) {
        return;
    }
    let elf = build_guest("serial_irq");
    let mut vm = build_microvm(&config(), Payload::Elf(&elf)).unwrap();
    let report = vm.run().unwrap();
    let out = String::from_utf8_lossy(&vm.take_serial_output()).into_owned();
    assert_eq!(
        out, "serial irq\nok quiet while IER is 0\nok THR empty raised IRQ 4\nok IIR names THR empty\n",
        "{report:?}"
    );
    assert_eq!(report.outcome, RunOutcome::Exited(0));
}

#[test]
fn a_4_gib_guest_costs_only_the_memory_it_touches() {
    if !e2e_available("a_4_gib_guest_costs_only_the_memory_it_touches", true) {
        return;
    }
    let elf = build_guest("hello");
    let config = VmConfig { mem_mib: 4096, ..config() };
    let mut vm = build_microvm(&config, Payload::Elf(&elf)).unwrap();
    let report = vm.run().unwrap();
    assert_eq!(report.outcome, RunOutcome::Exited(0));
    assert_eq!(vm.memory().size(), 4096 << 20);
    // Pages backing the memfd: only what the loader, the boot tables and
    // the guest wrote (tens of KiB, a few MiB at most), not 4 GiB.
    let fd = std::os::fd::AsRawFd::as_raw_fd(&vm.memory().memfd());
    // SAFETY: `stat` is a plain struct fstat fills; `fd` is open for the call.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::fstat(fd, &mut stat) }, 0);
    let allocated = stat.st_blocks as u64 * 512;
    eprintln!("4 GiB guest: {allocated} bytes of guest RAM allocated after the run");
    assert!(allocated < 8 << 20, "{allocated} bytes allocated");
}
