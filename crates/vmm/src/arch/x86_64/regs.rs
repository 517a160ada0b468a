//! Register state for the boot vCPU: 64-bit long mode (our payloads and the
//! Linux 64-bit boot protocol) or 32-bit protected mode with paging off (PVH).

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};

use super::gdt::{boot_gdt, segment_from_gdt, CODE32_INDEX, CODE_INDEX, DATA_INDEX, TSS_INDEX};
use super::layout::{BOOT_GDT_ADDR, BOOT_IDT_ADDR, BOOT_STACK_POINTER, PML4_ADDR};

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// RFLAGS bit 1 is reserved and must be 1; IF stays clear.
const RFLAGS_RESERVED: u64 = 1 << 1;

/// How the boot vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootEntry {
    /// 64-bit long mode with the low 4 GiB identity-mapped, CS = 0x10 and
    /// DS = ES = SS = 0x18, at `rip`; `rsi` holds the Linux zero page's
    /// address (0 for our own payloads).
    LongMode { rip: u64, rsi: u64 },
    /// The PVH entry: 32-bit protected mode, paging off, flat CS = 0x08 and
    /// DS = ES = SS = 0x18, at `eip`, with `ebx` = the `hvm_start_info` address.
    Protected32 { eip: u32, ebx: u32 },
}

impl BootEntry {
    /// Long mode at `rip`, nothing in RSI.
    pub fn long_mode(rip: u64) -> Self {
        Self::LongMode { rip, rsi: 0 }
    }

    /// Whether the identity page tables must be in guest RAM.
    pub fn needs_page_tables(&self) -> bool {
        matches!(self, Self::LongMode { .. })
    }
}

/// Special registers for `entry`, starting from what KVM reported.
pub fn boot_sregs(mut sregs: kvm_sregs, entry: &BootEntry) -> kvm_sregs {
    let gdt = boot_gdt();
    let data = segment_from_gdt(gdt[DATA_INDEX as usize], DATA_INDEX);
    sregs.gdt.base = BOOT_GDT_ADDR;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = BOOT_IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment_from_gdt(gdt[TSS_INDEX as usize], TSS_INDEX);
    match entry {
        BootEntry::LongMode { .. } => {
            sregs.cs = segment_from_gdt(gdt[CODE_INDEX as usize], CODE_INDEX);
            sregs.cr3 = PML4_ADDR;
            sregs.cr4 |= CR4_PAE;
            sregs.cr0 |= CR0_PE | CR0_ET | CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
        BootEntry::Protected32 { .. } => {
            sregs.cs = segment_from_gdt(gdt[CODE32_INDEX as usize], CODE32_INDEX);
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            // The PVH ABI: CR0 has PE and ET set and every other bit clear.
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.efer = 0;
        }
    }
    sregs
}

/// General registers: the entry point and its argument, the boot stack,
/// interrupts off.
pub fn boot_regs(entry: &BootEntry) -> kvm_regs {
    let (rip, rsi, rbx) = match *entry {
        BootEntry::LongMode { rip, rsi } => (rip, rsi, 0),
        BootEntry::Protected32 { eip, ebx } => (u64::from(eip), 0, u64::from(ebx)),
    };
    kvm_regs {
        rip,
        rsi,
        rbx,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    }
}

/// x87/SSE state as after FNINIT, with SSE exceptions masked.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What KVM reports for a fresh vCPU: CD, NW, ET set, everything else off.
    fn reset_sregs() -> kvm_sregs {
        kvm_sregs { cr0: 0x6000_0010, ..Default::default() }
    }

    #[test]
    fn long_mode_bits_are_set() {
        let s = boot_sregs(reset_sregs(), &BootEntry::long_mode(0x10_0000));
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_ne!(s.cr4 & CR4_PAE, 0);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(s.cr3, PML4_ADDR);
        assert_eq!(s.cs.l, 1);
        assert_eq!(s.cs.selector, 0x10, "__BOOT_CS");
        assert_eq!((s.ds.selector, s.es.selector, s.ss.selector), (0x18, 0x18, 0x18), "__BOOT_DS");
        assert_eq!(s.tr.selector, 0x20);
        assert_eq!(s.gdt.limit, 39);
    }

    #[test]
    fn pvh_is_protected_mode_with_paging_off() {
        let s = boot_sregs(reset_sregs(), &BootEntry::Protected32 { eip: 0x100_0000, ebx: 0x6000 });
        assert_eq!(s.cr0, 0x11, "PE and ET; PG, CD, NW and the rest off");
        assert_eq!((s.cr3, s.cr4, s.efer), (0, 0, 0));
        assert_eq!((s.cs.selector, s.cs.l, s.cs.db, s.cs.base, s.cs.limit), (0x8, 0, 1, 0, 0xffff_ffff));
        assert_eq!((s.ds.base, s.ds.limit, s.ss.db), (0, 0xffff_ffff, 1));
        assert_eq!((s.tr.base, s.tr.limit), (0, 0x67));
    }

    #[test]
    fn regs_carry_the_entry_and_its_argument_with_interrupts_off() {
        let r = boot_regs(&BootEntry::LongMode { rip: 0x10_0200, rsi: 0x7000 });
        assert_eq!((r.rip, r.rsi, r.rbx), (0x10_0200, 0x7000, 0));
        assert_eq!(r.rsp, BOOT_STACK_POINTER);
        assert_eq!(r.rflags & (1 << 9), 0, "IF must be clear");
        assert_eq!(r.rflags, 2);
        let r = boot_regs(&BootEntry::Protected32 { eip: 0x100_0000, ebx: 0x6000 });
        assert_eq!((r.rip, r.rsi, r.rbx, r.rflags), (0x100_0000, 0, 0x6000, 2));
    }
}
