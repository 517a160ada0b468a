//! Where things live in guest-physical memory (x86_64).

/// The boot GDT (null, code, data, TSS descriptors).
pub const BOOT_GDT_ADDR: u64 = 0x500;
/// An empty IDT: the boot guest runs with interrupts off.
pub const BOOT_IDT_ADDR: u64 = 0x520;
/// Initial stack pointer; the stack grows down towards the IDT.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Level-4 page table; the PDPT and page directories follow it.
pub const PML4_ADDR: u64 = 0x9000;
/// Where payloads are loaded and entered.
pub const PAYLOAD_ADDR: u64 = 0x10_0000;
/// Start of the MMIO hole below 4 GiB (RAM skips it).
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End (exclusive) of the MMIO hole below 4 GiB.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// Three pages KVM needs for the TSS on Intel hosts, in the MMIO hole.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;

/// COM1, the 8250 serial console.
pub const COM1_PORT: u16 = 0x3f8;
/// A write of one byte `v` here ends the run with exit code `v`.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
/// First i8042 port; command/status is at +4 (0x64).
pub const I8042_PORT: u16 = 0x60;

/// First virtio-mmio window; devices follow one window apart.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Bytes of one virtio-mmio window (registers + config space).
pub const VIRTIO_MMIO_WINDOW: u64 = 0x1000;
/// IRQ lines (GSIs) handed to virtio devices: above the legacy ISA lines
/// in use (timer, keyboard, cascade, COM2/COM1), up to the IOAPIC's last pin.
pub const VIRTIO_IRQS: std::ops::RangeInclusive<u32> = 5..=23;
