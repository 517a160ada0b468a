//! CPUID the guest sees: what KVM supports, with per-vCPU fixes.

use kvm_bindings::kvm_cpuid_entry2;

const HYPERVISOR_BIT: u32 = 1 << 31;

/// Adjusts `KVM_GET_SUPPORTED_CPUID` output for vCPU `index`: its APIC ID in
/// leaves 0x1, 0xB and 0x1F, one logical CPU per package, and the
/// "running under a hypervisor" bit.
pub fn filter_cpuid(entries: &mut [kvm_cpuid_entry2], index: u8) {
    for entry in entries {
        match entry.function {
            0x1 => {
                // EBX[31:24] initial APIC ID, EBX[23:16] logical CPU count.
                entry.ebx = (entry.ebx & 0x0000_ffff) | (u32::from(index) << 24) | (1 << 16);
                entry.ecx |= HYPERVISOR_BIT;
            }
            0xb | 0x1f => entry.edx = u32::from(index),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, ebx: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 { function, ebx, ecx, edx, ..Default::default() }
    }

    #[test]
    fn sets_apic_id_and_hypervisor_bit() {
        let mut e = [leaf(0x1, 0xff12_3456, 0, 0), leaf(0xb, 0, 0, 99), leaf(0x7, 1, 2, 3)];
        filter_cpuid(&mut e, 3);
        assert_eq!(e[0].ebx, 0x0301_3456);
        assert_eq!(e[0].ecx, HYPERVISOR_BIT);
        assert_eq!(e[1].edx, 3);
        assert_eq!((e[2].ebx, e[2].ecx, e[2].edx), (1, 2, 3), "others untouched");
    }
}
