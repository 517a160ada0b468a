//! x86_64: guest layout, long-mode vCPU set-up, in-kernel irqchip and PIT.

mod cpuid;
mod gdt;
mod layout;
mod paging;
mod regs;

use std::io;

use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use crate::memory::{GuestMemory, MemoryError};

pub use self::cpuid::filter_cpuid;
pub use self::gdt::{boot_gdt, gdt_entry, segment_from_gdt};
pub use self::layout::*;
pub use self::paging::{IdentityPageTables, PAGE_TABLE_BYTES};
pub use self::regs::{boot_fpu, boot_regs, boot_sregs};

// The boot structures must not overlap each other or the payload.
const _: () = {
    assert!(BOOT_GDT_ADDR + 4 * 8 <= BOOT_IDT_ADDR);
    assert!(BOOT_IDT_ADDR + 8 < BOOT_STACK_POINTER);
    assert!(BOOT_STACK_POINTER < PML4_ADDR);
    assert!(PML4_ADDR + PAGE_TABLE_BYTES <= PAYLOAD_ADDR);
    assert!(PAYLOAD_ADDR < MMIO_GAP_START);
    // Every virtio-mmio window sits in the hole, clear of the TSS pages.
    assert!(VIRTIO_MMIO_BASE >= MMIO_GAP_START);
    assert!(VIRTIO_MMIO_BASE + 32 * VIRTIO_MMIO_WINDOW <= KVM_TSS_ADDR);
};

/// Arch-specific VM or vCPU set-up failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    #[error("could not create the in-kernel irqchip")]
    Irqchip(#[source] io::Error),
    #[error("could not create the in-kernel PIT")]
    Pit(#[source] io::Error),
    #[error("could not set the TSS address")]
    Tss(#[source] io::Error),
    #[error("could not read the CPUID KVM supports")]
    SupportedCpuid(#[source] io::Error),
    #[error("could not set the vCPU's CPUID")]
    SetCpuid(#[source] io::Error),
    #[error("could not set the vCPU's registers")]
    Registers(#[source] io::Error),
    #[error("could not write the boot tables into guest RAM")]
    BootTables(#[source] MemoryError),
}

pub(crate) fn kvm_err(e: kvm_ioctls::Error) -> io::Error {
    io::Error::from_raw_os_error(e.errno())
}

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

/// VM-wide set-up that must precede vCPU creation: TSS, irqchip, PIT.
pub fn setup_vm(vm: &VmFd) -> Result<(), ArchError> {
    vm.set_tss_address(KVM_TSS_ADDR as usize).map_err(|e| ArchError::Tss(kvm_err(e)))?;
    vm.create_irq_chip().map_err(|e| ArchError::Irqchip(kvm_err(e)))?;
    let pit = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
    vm.create_pit2(pit).map_err(|e| ArchError::Pit(kvm_err(e)))
}

/// Writes the GDT and identity page tables the boot vCPU starts with.
pub fn write_boot_tables(mem: &GuestMemory) -> Result<(), ArchError> {
    for (i, entry) in boot_gdt().iter().enumerate() {
        mem.write_u64(BOOT_GDT_ADDR + 8 * i as u64, *entry).map_err(ArchError::BootTables)?;
    }
    mem.write_u64(BOOT_IDT_ADDR, 0).map_err(ArchError::BootTables)?;
    IdentityPageTables::new(PML4_ADDR).write_to(mem).map_err(ArchError::BootTables)
}

/// Puts vCPU `index` in 64-bit long mode at `entry`, with the stack at
/// [`BOOT_STACK_POINTER`] and a filtered CPUID.
pub fn configure_vcpu(kvm: &Kvm, vcpu: &VcpuFd, index: u8, entry: u64) -> Result<(), ArchError> {
    let mut cpuid =
        kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(|e| ArchError::SupportedCpuid(kvm_err(e)))?;
    filter_cpuid(cpuid.as_mut_slice(), index);
    vcpu.set_cpuid2(&cpuid).map_err(|e| ArchError::SetCpuid(kvm_err(e)))?;

    let sregs = vcpu.get_sregs().map_err(|e| ArchError::Registers(kvm_err(e)))?;
    vcpu.set_sregs(&boot_sregs(sregs)).map_err(|e| ArchError::Registers(kvm_err(e)))?;
    vcpu.set_regs(&boot_regs(entry)).map_err(|e| ArchError::Registers(kvm_err(e)))?;
    vcpu.set_fpu(&boot_fpu()).map_err(|e| ArchError::Registers(kvm_err(e)))
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
