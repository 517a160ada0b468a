//! Where virtio-mmio devices go: one MMIO window and one IRQ line each, and
//! the kernel command-line entry that tells Linux about them.

use std::fmt;
use std::ops::RangeInclusive;

/// The MMIO window and IRQ line of one virtio-mmio device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioSlot {
    pub base: u64,
    pub len: u64,
    pub irq: u32,
}

impl MmioSlot {
    /// The `virtio_mmio.device=<size>@<base>:<irq>` parameter announcing
    /// this device to a Linux guest (drivers/virtio/virtio_mmio.c).
    pub fn kernel_param(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for MmioSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Linux parses the size with memparse(), so K/M suffixes are fine.
        let size = match self.len {
            len if len % (1 << 20) == 0 => format!("{}M", len >> 20),
            len if len % (1 << 10) == 0 => format!("{}K", len >> 10),
            len => len.to_string(),
        };
        write!(f, "virtio_mmio.device={size}@{:#x}:{}", self.base, self.irq)
    }
}

/// No room for another virtio device.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("no IRQ line left for another virtio device ({0} in use)")]
pub struct SlotsExhausted(pub usize);

/// Hands out consecutive MMIO windows from a base and IRQs from a range.
#[derive(Debug, Clone)]
pub struct MmioSlots {
    base: u64,
    window: u64,
    irqs: RangeInclusive<u32>,
    given: Vec<MmioSlot>,
}

impl MmioSlots {
    /// Windows of `window` bytes from `base`, IRQs from `irqs`.
    pub fn new(base: u64, window: u64, irqs: RangeInclusive<u32>) -> Self {
        Self { base, window, irqs, given: Vec::new() }
    }

    /// The next free window and IRQ.
    pub fn allocate(&mut self) -> Result<MmioSlot, SlotsExhausted> {
        let n = self.given.len();
        let exhausted = SlotsExhausted(n);
        let irq = self.irqs.clone().nth(n).ok_or(exhausted.clone())?;
        let base = (n as u64).checked_mul(self.window).and_then(|o| o.checked_add(self.base)).ok_or(exhausted)?;
        let slot = MmioSlot { base, len: self.window, irq };
        self.given.push(slot);
        Ok(slot)
    }

    /// Every slot handed out, in order.
    pub fn allocated(&self) -> &[MmioSlot] {
        &self.given
    }

    /// The kernel command-line fragment for every device, space-separated.
    pub fn kernel_cmdline(&self) -> String {
        self.given.iter().map(MmioSlot::kernel_param).collect::<Vec<_>>().join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_consecutive_windows_with_their_own_irq() {
        let mut slots = MmioSlots::new(0xd000_0000, 0x1000, 5..=23);
        let a = slots.allocate().unwrap();
        let b = slots.allocate().unwrap();
        assert_eq!(a, MmioSlot { base: 0xd000_0000, len: 0x1000, irq: 5 });
        assert_eq!(b, MmioSlot { base: 0xd000_1000, len: 0x1000, irq: 6 });
        assert_eq!(slots.allocated(), &[a, b]);
    }

    #[test]
    fn the_kernel_parameter_is_what_linux_parses() {
        let mut slots = MmioSlots::new(0xd000_0000, 0x1000, 5..=23);
        assert_eq!(slots.kernel_cmdline(), "");
        slots.allocate().unwrap();
        assert_eq!(slots.kernel_cmdline(), "virtio_mmio.device=4K@0xd0000000:5");
        slots.allocate().unwrap();
        assert_eq!(slots.kernel_cmdline(), "virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6");
        let odd = MmioSlot { base: 0x1_0000_0000, len: 0x200, irq: 9 };
        assert_eq!(odd.kernel_param(), "virtio_mmio.device=512@0x100000000:9");
        let big = MmioSlot { base: 0xe000_0000, len: 2 << 20, irq: 10 };
        assert_eq!(big.kernel_param(), "virtio_mmio.device=2M@0xe0000000:10");
    }

    #[test]
    fn running_out_of_irqs_is_an_error() {
        let mut slots = MmioSlots::new(0xd000_0000, 0x1000, 5..=6);
        slots.allocate().unwrap();
        slots.allocate().unwrap();
        assert_eq!(slots.allocate(), Err(SlotsExhausted(2)));
        let mut wrapping = MmioSlots::new(u64::MAX - 0xfff, 0x1000, 5..=23);
        wrapping.allocate().unwrap();
        assert_eq!(wrapping.allocate(), Err(SlotsExhausted(1)), "windows can't wrap");
    }
}
