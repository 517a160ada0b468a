//! Identity page tables for the boot vCPU: the low 4 GiB in 2 MiB pages, so
//! RAM and the MMIO hole below 4 GiB are both reachable.

use crate::memory::{GuestMemory, MemoryError};

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const HUGE: u64 = 1 << 7;
const PAGE: u64 = 0x1000;
const ENTRIES: usize = 512;
const TWO_MIB: u64 = 2 << 20;
/// Gigabytes mapped: one page directory each.
const MAPPED_GIB: usize = 4;

/// Bytes the tables take in guest memory, starting at the PML4.
pub const PAGE_TABLE_BYTES: u64 = (2 + MAPPED_GIB as u64) * PAGE;

/// PML4 → one PDPT → four page directories of 2 MiB pages, laid out in
/// consecutive pages starting at `base`.
#[derive(Debug)]
pub struct IdentityPageTables {
    base: u64,
    pml4: Vec<u64>,
    pdpt: Vec<u64>,
    directories: Vec<Vec<u64>>,
}

impl IdentityPageTables {
    /// Builds the tables to be placed at page-aligned `base`.
    pub fn new(base: u64) -> Self {
        debug_assert_eq!(base % PAGE, 0);
        let pdpt_addr = base + PAGE;
        let mut pml4 = vec![0; ENTRIES];
        pml4[0] = pdpt_addr | PRESENT | WRITABLE;

        let mut pdpt = vec![0; ENTRIES];
        let mut directories = Vec::with_capacity(MAPPED_GIB);
        for (gib, pdpte) in pdpt.iter_mut().take(MAPPED_GIB).enumerate() {
            let pd_addr = base + (2 + gib as u64) * PAGE;
            *pdpte = pd_addr | PRESENT | WRITABLE;
            let pd = (0..ENTRIES as u64)
                .map(|i| ((gib as u64 * ENTRIES as u64 + i) * TWO_MIB) | PRESENT | WRITABLE | HUGE)
                .collect();
            directories.push(pd);
        }
        Self { base, pml4, pdpt, directories }
    }

    /// The value to load into CR3.
    pub fn cr3(&self) -> u64 {
        self.base
    }

    /// Writes every table into guest memory.
    pub fn write_to(&self, mem: &GuestMemory) -> Result<(), MemoryError> {
        let tables = [&self.pml4, &self.pdpt].into_iter().chain(self.directories.iter());
        for (page, table) in tables.enumerate() {
            let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_le_bytes()).collect();
            mem.write(self.base + page as u64 * PAGE, &bytes)?;
        }
        Ok(())
    }

    /// Translates a virtual address the way the MMU would (test aid).
    #[cfg(test)]
    fn translate(&self, va: u64) -> Option<u64> {
        let pml4e = self.pml4[((va >> 39) & 0x1ff) as usize];
        if pml4e & PRESENT == 0 {
            return None;
        }
        assert_eq!(pml4e & !0xfff, self.base + PAGE);
        let pdpte = self.pdpt[((va >> 30) & 0x1ff) as usize];
        if pdpte & PRESENT == 0 {
            return None;
        }
        let pd_index = ((pdpte & !0xfff) - self.base) / PAGE - 2;
        let pde = self.directories[pd_index as usize][((va >> 21) & 0x1ff) as usize];
        assert_ne!(pde & HUGE, 0);
        Some((pde & !(TWO_MIB - 1) & !(1 << 63)) | (va & (TWO_MIB - 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_have_the_right_bits() {
        let t = IdentityPageTables::new(0x9000);
        assert_eq!(t.cr3(), 0x9000);
        assert_eq!(t.pml4[0], 0xa000 | 0b11);
        assert!(t.pml4[1..].iter().all(|&e| e == 0));
        assert_eq!(t.pdpt[0], 0xb000 | 0b11);
        assert_eq!(t.pdpt[3], 0xe000 | 0b11);
        assert_eq!(t.pdpt[4], 0);
        assert_eq!(t.directories[0][0], 0x83);
        assert_eq!(t.directories[0][1], 0x20_0000 | 0x83);
        assert_eq!(t.directories[3][511], 0xffe0_0000 | 0x83);
    }

    #[test]
    fn maps_the_low_4_gib_identically() {
        let t = IdentityPageTables::new(0x9000);
        for va in [0, 0x10_0000, 0x1234_5678, 0xc000_0000, 0xd000_0010, 0xffff_ffff] {
            assert_eq!(t.translate(va), Some(va), "{va:#x}");
        }
        assert_eq!(t.translate(0x1_0000_0000), None);
    }

    #[test]
    fn written_tables_land_in_guest_memory() {
        let mem = GuestMemory::new(2).unwrap();
        IdentityPageTables::new(0x9000).write_to(&mem).unwrap();
        let mut buf = [0u8; 8];
        mem.read(0xb008, &mut buf).unwrap();
        assert_eq!(u64::from_le_bytes(buf), 0x20_0083);
    }
}
