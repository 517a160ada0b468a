//! The guest's memory map as firmware would report it (e820 for the Linux
//! zero page, the same ranges for the PVH memory map).
//!
//! RAM is what [`ram_ranges`] backs, minus the last KiB of base memory (the
//! MP table, reported reserved) and the legacy hole from 640 KiB to 1 MiB
//! (not reported). The MMIO hole below 4 GiB holds no RAM and is not
//! reported either, so Linux treats the virtio windows as device memory.

use super::layout::{ram_ranges, BASE_RAM_END, MPTABLE_ADDR, PAYLOAD_ADDR};

/// e820 / PVH type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 / PVH type of reserved memory.
pub const E820_RESERVED: u32 = 2;

/// One range of the memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRange {
    pub addr: u64,
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

impl MemoryRange {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.addr + self.size
    }
}

/// The memory map of a guest with `ram_bytes` of RAM, in address order.
pub fn memory_map(ram_bytes: u64) -> Vec<MemoryRange> {
    let range = |addr: u64, end: u64, kind| MemoryRange { addr, size: end - addr, kind };
    let mut map = Vec::new();
    for (start, len) in ram_ranges(ram_bytes) {
        let end = start + len;
        if start != 0 {
            map.push(range(start, end, E820_RAM));
            continue;
        }
        map.push(range(0, end.min(MPTABLE_ADDR), E820_RAM));
        if end > MPTABLE_ADDR {
            map.push(range(MPTABLE_ADDR, BASE_RAM_END, E820_RESERVED));
        }
        if end > PAYLOAD_ADDR {
            map.push(range(PAYLOAD_ADDR, end, E820_RAM));
        }
    }
    map
}

/// One past the last byte of the RAM below the MMIO hole: where anything
/// that must stay under 4 GiB (initrd, kernel) has to end.
pub fn low_ram_end(ram_bytes: u64) -> u64 {
    ram_ranges(ram_bytes)[0].1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{MMIO_GAP_END, MMIO_GAP_START};

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn ram(addr: u64, end: u64) -> MemoryRange {
        MemoryRange { addr, size: end - addr, kind: E820_RAM }
    }

    const MP: MemoryRange = MemoryRange { addr: 0x9_fc00, size: 0x400, kind: E820_RESERVED };

    #[test]
    fn small_guest_has_base_and_extended_ram() {
        assert_eq!(memory_map(256 * MIB), vec![ram(0, 0x9_fc00), MP, ram(MIB, 256 * MIB)]);
        assert_eq!(low_ram_end(256 * MIB), 256 * MIB);
    }

    #[test]
    fn three_gib_ends_exactly_at_the_mmio_hole() {
        assert_eq!(memory_map(3 * GIB), vec![ram(0, 0x9_fc00), MP, ram(MIB, 3 * GIB)]);
        assert_eq!(low_ram_end(3 * GIB), MMIO_GAP_START);
    }

    #[test]
    fn a_bigger_guest_continues_above_4_gib() {
        let map = memory_map(5 * GIB);
        assert_eq!(map, vec![ram(0, 0x9_fc00), MP, ram(MIB, 3 * GIB), ram(4 * GIB, 6 * GIB)]);
        assert_eq!(low_ram_end(5 * GIB), MMIO_GAP_START);
        let total: u64 = map.iter().filter(|r| r.kind == E820_RAM).map(|r| r.size).sum();
        assert_eq!(total, 5 * GIB - (MIB - 0x9_fc00), "all RAM but the legacy hole is reported");
    }

    #[test]
    fn no_range_touches_the_mmio_hole_and_ranges_are_ordered() {
        for ram_bytes in [2 * MIB, 256 * MIB, 3 * GIB, 3 * GIB + 4096, 5 * GIB, 64 * GIB] {
            let map = memory_map(ram_bytes);
            for r in &map {
                assert!(r.end() <= MMIO_GAP_START || r.addr >= MMIO_GAP_END, "{ram_bytes:#x}: {r:?}");
                assert!(r.size > 0, "{ram_bytes:#x}: {r:?}");
            }
            for pair in map.windows(2) {
                assert!(pair[0].end() <= pair[1].addr, "{ram_bytes:#x}: {pair:?}");
            }
        }
    }
}
