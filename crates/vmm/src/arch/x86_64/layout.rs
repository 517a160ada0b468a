//! Where things live in guest-physical memory (x86_64).
//!
//! Low memory, as a Linux guest sees it:
//!
//! ```text
//! 0x0500  boot GDT (5 descriptors), then an empty IDT
//! 0x6000  PVH hvm_start_info, its module list and memory map
//! 0x7000  Linux zero page (boot_params)
//! 0x8ff0  boot stack (grows down)
//! 0x9000  identity page tables (6 pages)
//! 0x20000 kernel command line (at most CMDLINE_MAX_BYTES)
//! 0x9fc00 MP table (floating pointer + configuration table), reserved in e820
//! 0x100000 payloads and kernels; RAM up to the MMIO hole at 3 GiB, then above 4 GiB
//! ```

/// The boot GDT (see `gdt::boot_gdt`).
pub const BOOT_GDT_ADDR: u64 = 0x500;
/// An empty IDT: the boot guest runs with interrupts off.
pub const BOOT_IDT_ADDR: u64 = 0x540;
/// The PVH `hvm_start_info`; the module list and memory map follow it.
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// The Linux zero page (`struct boot_params`, one page).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer; the stack grows down towards the zero page.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Level-4 page table; the PDPT and page directories follow it.
pub const PML4_ADDR: u64 = 0x9000;
/// The kernel command line, NUL-terminated.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Bytes reserved for the command line, terminator included.
pub const CMDLINE_MAX_BYTES: u64 = 0x1_0000;
/// The MP floating pointer and configuration table (the last KiB of base
/// memory, one of the places Linux scans).
pub const MPTABLE_ADDR: u64 = 0x9_fc00;
/// End of base memory (640 KiB): the legacy VGA/BIOS hole follows.
pub const BASE_RAM_END: u64 = 0xa_0000;
/// Where payloads are loaded and entered; RAM resumes here after the legacy hole.
pub const PAYLOAD_ADDR: u64 = 0x10_0000;
/// Start of the MMIO hole below 4 GiB (RAM skips it).
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End (exclusive) of the MMIO hole below 4 GiB.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// The in-kernel IOAPIC's registers.
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
/// The local APIC's registers.
pub const LAPIC_ADDR: u64 = 0xfee0_0000;
/// Three pages KVM needs for the TSS on Intel hosts, in the MMIO hole.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;

/// COM1, the 8250 serial console.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1's interrupt line (ISA IRQ 4, the same GSI on the IOAPIC).
pub const COM1_IRQ: u32 = 4;
/// A write of one byte `v` here ends the run with exit code `v`.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
/// The power button: reads 1 once the VMM asks the guest to shut down.
pub const POWER_BUTTON_PORT: u16 = 0xf5;
/// First i8042 port; command/status is at +4 (0x64).
pub const I8042_PORT: u16 = 0x60;

/// First virtio-mmio window; devices follow one window apart.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Bytes of one virtio-mmio window (registers + config space).
pub const VIRTIO_MMIO_WINDOW: u64 = 0x1000;
/// IRQ lines (GSIs) handed to virtio devices: above the legacy ISA lines
/// in use (timer, keyboard, cascade, COM2/COM1), up to the IOAPIC's last pin.
pub const VIRTIO_IRQS: std::ops::RangeInclusive<u32> = 5..=23;
/// Pins of the in-kernel IOAPIC.
pub const IOAPIC_PINS: u8 = 24;

// The boot structures must not overlap each other or the payload.
const _: () = {
    assert!(BOOT_GDT_ADDR + 5 * 8 <= BOOT_IDT_ADDR);
    assert!(BOOT_IDT_ADDR + 8 <= PVH_INFO_ADDR);
    assert!(PVH_INFO_ADDR + 0x1000 <= ZERO_PAGE_ADDR);
    assert!(ZERO_PAGE_ADDR + 0x1000 < BOOT_STACK_POINTER);
    assert!(BOOT_STACK_POINTER < PML4_ADDR);
    assert!(PML4_ADDR + super::paging::PAGE_TABLE_BYTES <= CMDLINE_ADDR);
    assert!(CMDLINE_ADDR + CMDLINE_MAX_BYTES <= MPTABLE_ADDR);
    assert!(MPTABLE_ADDR + 0x400 == BASE_RAM_END);
    assert!(BASE_RAM_END < PAYLOAD_ADDR);
    assert!(PAYLOAD_ADDR < MMIO_GAP_START);
    // Every virtio-mmio window sits in the hole, clear of the TSS pages.
    assert!(VIRTIO_MMIO_BASE >= MMIO_GAP_START);
    assert!(VIRTIO_MMIO_BASE + 32 * VIRTIO_MMIO_WINDOW <= IOAPIC_ADDR);
    assert!(*VIRTIO_IRQS.end() < IOAPIC_PINS as u32);
};

/// Guest-physical RAM ranges `(start, len)` for `size` bytes of RAM, skipping
/// the MMIO gap below 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(u64, u64)> {
    let low = size.min(MMIO_GAP_START);
    let mut ranges = vec![(0, low)];
    if size > low {
        ranges.push((MMIO_GAP_END, size - low));
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_skips_the_mmio_gap() {
        const GIB: u64 = 1 << 30;
        assert_eq!(ram_ranges(16 << 20), vec![(0, 16 << 20)]);
        assert_eq!(ram_ranges(3 * GIB), vec![(0, 3 * GIB)]);
        assert_eq!(ram_ranges(5 * GIB), vec![(0, 3 * GIB), (4 * GIB, 2 * GIB)]);
    }
}
