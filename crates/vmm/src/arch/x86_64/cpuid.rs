//! CPUID the guest sees: what KVM supports (its hypervisor leaves
//! 0x4000_0000.. included, so a Linux guest finds KVM's paravirt features),
//! with per-vCPU fixes.

use kvm_bindings::kvm_cpuid_entry2;

const HYPERVISOR_BIT: u32 = 1 << 31;
/// Leaf 0x1 EDX: more than one logical processor per package.
const HTT_BIT: u32 = 1 << 28;

/// Adjusts `KVM_GET_SUPPORTED_CPUID` output for vCPU `index`: its APIC ID in
/// leaves 0x1, 0xB and 0x1F, one logical CPU per package (leaves 0x1 and
/// 0x4, as the MP table says), and the "running under a hypervisor" bit.
pub fn filter_cpuid(entries: &mut [kvm_cpuid_entry2], index: u8) {
    for entry in entries {
        match entry.function {
            0x1 => {
                // EBX[31:24] initial APIC ID, EBX[23:16] logical CPU count.
                entry.ebx = (entry.ebx & 0x0000_ffff) | (u32::from(index) << 24) | (1 << 16);
                entry.ecx |= HYPERVISOR_BIT;
                entry.edx &= !HTT_BIT;
            }
            // EAX[31:26] cores per package - 1, EAX[25:14] logical CPUs
            // sharing this cache - 1: none besides us.
            0x4 => entry.eax &= 0x3fff,
            0xb | 0x1f => entry.edx = u32::from(index),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 { function, eax, ebx, ecx, edx, ..Default::default() }
    }

    #[test]
    fn sets_apic_id_and_hypervisor_bit() {
        let mut e = [
            leaf(0x1, 0, 0xff12_3456, 0, HTT_BIT | 1),
            leaf(0xb, 0, 0, 0, 99),
            leaf(0x7, 0, 1, 2, 3),
            leaf(0x4, 0xfc00_4121, 0, 0, 0),
        ];
        filter_cpuid(&mut e, 3);
        assert_eq!(e[0].ebx, 0x0301_3456);
        assert_eq!(e[0].ecx, HYPERVISOR_BIT);
        assert_eq!(e[0].edx, 1, "HTT cleared, the rest kept");
        assert_eq!(e[1].edx, 3);
        assert_eq!((e[2].ebx, e[2].ecx, e[2].edx), (1, 2, 3), "others untouched");
        assert_eq!(e[3].eax, 0x0000_0121, "one core, no cache sharers; cache type/level kept");
    }
}
