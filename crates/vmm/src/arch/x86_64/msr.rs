//! Model-specific registers the boot vCPU starts with, as a BIOS would
//! leave them for Linux: fast strings on, MTRRs on with write-back as the
//! default type, the SYSCALL/SYSENTER MSRs cleared. EFER is not here: the
//! entry path sets it with the special registers.

use kvm_bindings::kvm_msr_entry;

const IA32_SYSENTER_CS: u32 = 0x174;
const IA32_SYSENTER_ESP: u32 = 0x175;
const IA32_SYSENTER_EIP: u32 = 0x176;
const IA32_TSC: u32 = 0x10;
const IA32_MISC_ENABLE: u32 = 0x1a0;
const IA32_MTRR_DEF_TYPE: u32 = 0x2ff;
const STAR: u32 = 0xc000_0081;
const LSTAR: u32 = 0xc000_0082;
const CSTAR: u32 = 0xc000_0083;
const SYSCALL_MASK: u32 = 0xc000_0084;
const KERNEL_GS_BASE: u32 = 0xc000_0102;

/// IA32_MISC_ENABLE bit 0: fast-string `rep movs/stos`.
pub const MISC_ENABLE_FAST_STRING: u64 = 1;
/// IA32_MTRR_DEF_TYPE: MTRRs enabled (bit 11), default type write-back (6).
pub const MTRR_DEF_TYPE_WB_ENABLED: u64 = (1 << 11) | 6;

/// The MSRs to set on every vCPU before it first runs.
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    [
        (IA32_SYSENTER_CS, 0),
        (IA32_SYSENTER_ESP, 0),
        (IA32_SYSENTER_EIP, 0),
        (STAR, 0),
        (CSTAR, 0),
        (KERNEL_GS_BASE, 0),
        (SYSCALL_MASK, 0),
        (LSTAR, 0),
        (IA32_TSC, 0),
        (IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (IA32_MTRR_DEF_TYPE, MTRR_DEF_TYPE_WB_ENABLED),
    ]
    .into_iter()
    .map(|(index, data)| kvm_msr_entry { index, data, ..Default::default() })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_strings_and_write_back_mtrrs() {
        let msrs = boot_msrs();
        let get = |i| msrs.iter().find(|m| m.index == i).map(|m| m.data);
        assert_eq!(get(IA32_MISC_ENABLE), Some(1));
        assert_eq!(get(IA32_MTRR_DEF_TYPE), Some(0x806));
        assert_eq!(get(LSTAR), Some(0));
        assert_eq!(get(0xc000_0080), None, "EFER belongs to the entry path");
    }
}
