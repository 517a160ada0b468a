//! The boot GDT and the KVM segment registers derived from it.
//!
//! One table serves both ways in: the Linux 64-bit boot protocol wants
//! `__BOOT_CS` = 0x10 and `__BOOT_DS` = 0x18, and the PVH entry a flat
//! 32-bit code segment, so slot 1 holds that one.

use kvm_bindings::kvm_segment;

/// Index of the flat 32-bit code descriptor (PVH entry).
pub const CODE32_INDEX: u8 = 1;
/// Index of the 64-bit code descriptor (Linux's `__BOOT_CS`, 0x10).
pub const CODE_INDEX: u8 = 2;
/// Index of the flat data descriptor (Linux's `__BOOT_DS`, 0x18).
pub const DATA_INDEX: u8 = 3;
/// Index of the TSS descriptor.
pub const TSS_INDEX: u8 = 4;

/// Packs a segment descriptor. `flags` holds the access byte in bits 0..8 and
/// the G/DB/L/AVL nibble in bits 12..16, as in the Intel SDM's layout.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = base as u64;
    let limit = limit as u64;
    let flags = flags as u64;
    ((base & 0xff00_0000) << (56 - 24))
        | ((flags & 0x0000_f0ff) << 40)
        | ((limit & 0x000f_0000) << (48 - 16))
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// Null, 32-bit code, 64-bit code (L=1), flat data, and a TSS descriptor.
pub const fn boot_gdt() -> [u64; 5] {
    [
        0,
        gdt_entry(0xc09b, 0, 0xfffff), // G, DB, P, DPL0, code exec/read accessed
        gdt_entry(0xa09b, 0, 0xfffff), // G, L, P, DPL0, code exec/read accessed
        gdt_entry(0xc093, 0, 0xfffff), // G, DB, P, DPL0, data read/write accessed
        gdt_entry(0x008b, 0, 0x67),    // P, busy TSS, base 0, limit 0x67 (as PVH asks)
    ]
}

/// The `kvm_segment` a CPU would hold after loading descriptor `entry` from
/// GDT slot `index`.
pub fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    let raw_limit = ((entry & 0x000f_0000_0000_0000) >> 32) as u32 | (entry & 0xffff) as u32;
    let granular = bit(55) == 1;
    kvm_segment {
        base: ((entry & 0xff00_0000_0000_0000) >> 32) | ((entry & 0x0000_00ff_ffff_0000) >> 16),
        limit: if granular { (raw_limit << 12) | 0xfff } else { raw_limit },
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: bit(47),
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g: bit(55),
        avl: bit(52),
        unusable: u8::from(bit(47) == 0),
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_gdt_matches_the_classic_values() {
        let gdt = boot_gdt();
        assert_eq!(gdt[0], 0);
        assert_eq!(gdt[CODE32_INDEX as usize], 0x00cf_9b00_0000_ffff);
        assert_eq!(gdt[CODE_INDEX as usize], 0x00af_9b00_0000_ffff);
        assert_eq!(gdt[DATA_INDEX as usize], 0x00cf_9300_0000_ffff);
        assert_eq!(gdt[TSS_INDEX as usize], 0x0000_8b00_0000_0067);
    }

    #[test]
    fn code_segment_is_64_bit_ring_0() {
        let cs = segment_from_gdt(boot_gdt()[CODE_INDEX as usize], CODE_INDEX);
        assert_eq!(cs.selector, 0x10, "Linux's __BOOT_CS");
        assert_eq!((cs.l, cs.db, cs.present, cs.dpl, cs.s), (1, 0, 1, 0, 1));
        assert_eq!(cs.type_, 0xb);
        assert_eq!(cs.limit, 0xffff_ffff);
        assert_eq!(cs.unusable, 0);
    }

    #[test]
    fn pvh_segments_are_flat_32_bit() {
        let cs = segment_from_gdt(boot_gdt()[CODE32_INDEX as usize], CODE32_INDEX);
        assert_eq!((cs.selector, cs.l, cs.db, cs.base, cs.limit), (0x8, 0, 1, 0, 0xffff_ffff));
        let ds = segment_from_gdt(boot_gdt()[DATA_INDEX as usize], DATA_INDEX);
        assert_eq!((ds.selector, ds.db, ds.base, ds.limit, ds.type_), (0x18, 1, 0, 0xffff_ffff, 3));
        let tr = segment_from_gdt(boot_gdt()[TSS_INDEX as usize], TSS_INDEX);
        assert_eq!((tr.selector, tr.base, tr.limit, tr.type_), (0x20, 0, 0x67, 0xb));
    }

    #[test]
    fn base_and_limit_round_trip() {
        let e = gdt_entry(0x0093, 0x1234_5678, 0xabcde);
        let s = segment_from_gdt(e, 2);
        assert_eq!(s.base, 0x1234_5678);
        assert_eq!(s.limit, 0xabcde, "byte-granular limit is not scaled");
        assert_eq!(s.g, 0);
    }
}
