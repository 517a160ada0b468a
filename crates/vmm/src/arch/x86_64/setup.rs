//! VM- and vCPU-level set-up through KVM: what must exist before vCPUs
//! (TSS, irqchip, PIT), the boot tables in guest RAM, and each vCPU's
//! CPUID, MSRs and local APIC (plus the boot vCPU's registers).

use std::io;

use kvm_bindings::{kvm_pit_config, Msrs, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use super::gdt::boot_gdt;
use super::lapic::wire_lint_pins;
use super::layout::{BOOT_GDT_ADDR, BOOT_IDT_ADDR, KVM_TSS_ADDR, PML4_ADDR};
use super::paging::IdentityPageTables;
use super::regs::{boot_fpu, boot_regs, boot_sregs, BootEntry};
use super::{cpuid::filter_cpuid, msr::boot_msrs};
use crate::memory::{GuestMemory, MemoryError};

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
    #[error("could not set the vCPU's MSRs")]
    Msrs(#[source] io::Error),
    #[error("KVM refused MSR {0:#x} for the boot vCPU")]
    MsrRefused(u32),
    #[error("could not set the vCPU's registers")]
    Registers(#[source] io::Error),
    #[error("could not set up the vCPU's local APIC")]
    Lapic(#[source] io::Error),
    #[error("could not write the boot tables into guest RAM")]
    BootTables(#[source] MemoryError),
}

/// The `io::Error` behind a KVM ioctl failure.
pub(crate) fn kvm_err(e: kvm_ioctls::Error) -> io::Error {
    io::Error::from_raw_os_error(e.errno())
}

/// VM-wide set-up that must precede vCPU creation: TSS, irqchip, PIT.
pub fn setup_vm(vm: &VmFd) -> Result<(), ArchError> {
    vm.set_tss_address(KVM_TSS_ADDR as usize).map_err(|e| ArchError::Tss(kvm_err(e)))?;
    vm.create_irq_chip().map_err(|e| ArchError::Irqchip(kvm_err(e)))?;
    let pit = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
    vm.create_pit2(pit).map_err(|e| ArchError::Pit(kvm_err(e)))
}

/// Writes the GDT, an empty IDT and, for a long-mode entry, the identity
/// page tables the boot vCPU starts with.
pub fn write_boot_tables(mem: &GuestMemory, entry: &BootEntry) -> Result<(), ArchError> {
    for (i, descriptor) in boot_gdt().iter().enumerate() {
        mem.write_u64(BOOT_GDT_ADDR + 8 * i as u64, *descriptor).map_err(ArchError::BootTables)?;
    }
    mem.write_u64(BOOT_IDT_ADDR, 0).map_err(ArchError::BootTables)?;
    if entry.needs_page_tables() {
        IdentityPageTables::new(PML4_ADDR).write_to(mem).map_err(ArchError::BootTables)?;
    }
    Ok(())
}

/// Prepares every vCPU of the VM. Each gets filtered CPUID (its own APIC ID),
/// the boot MSRs and LINT0/LINT1 wired as the MP table says; vCPU 0, the
/// bootstrap processor, also gets the registers to start at `entry`.
///
/// The others stay as KVM created them: with the in-kernel irqchip every
/// vCPU but the BSP starts in wait-for-SIPI, so an application processor
/// runs only once the guest sends it INIT and a startup IPI, as on hardware.
pub fn configure_vcpus(kvm: &Kvm, vcpus: &[VcpuFd], entry: &BootEntry) -> Result<(), ArchError> {
    let supported =
        kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(|e| ArchError::SupportedCpuid(kvm_err(e)))?;
    for (index, vcpu) in (0u8..).zip(vcpus) {
        let mut cpuid = supported.clone();
        filter_cpuid(cpuid.as_mut_slice(), index);
        vcpu.set_cpuid2(&cpuid).map_err(|e| ArchError::SetCpuid(kvm_err(e)))?;
        set_boot_msrs(vcpu)?;
        if index == 0 {
            set_boot_registers(vcpu, entry)?;
        }
        let lapic = vcpu.get_lapic().map_err(|e| ArchError::Lapic(kvm_err(e)))?;
        vcpu.set_lapic(&wire_lint_pins(lapic)).map_err(|e| ArchError::Lapic(kvm_err(e)))?;
    }
    Ok(())
}

fn set_boot_msrs(vcpu: &VcpuFd) -> Result<(), ArchError> {
    let wanted = boot_msrs();
    let msrs = Msrs::from_entries(&wanted).map_err(|_| ArchError::Msrs(io::ErrorKind::InvalidInput.into()))?;
    let set = vcpu.set_msrs(&msrs).map_err(|e| ArchError::Msrs(kvm_err(e)))?;
    if let Some(refused) = wanted.get(set) {
        // KVM stops at the first MSR it refuses and reports how many it set.
        return Err(ArchError::MsrRefused(refused.index));
    }
    Ok(())
}

fn set_boot_registers(vcpu: &VcpuFd, entry: &BootEntry) -> Result<(), ArchError> {
    let sregs = vcpu.get_sregs().map_err(|e| ArchError::Registers(kvm_err(e)))?;
    vcpu.set_sregs(&boot_sregs(sregs, entry)).map_err(|e| ArchError::Registers(kvm_err(e)))?;
    vcpu.set_regs(&boot_regs(entry)).map_err(|e| ArchError::Registers(kvm_err(e)))?;
    vcpu.set_fpu(&boot_fpu()).map_err(|e| ArchError::Registers(kvm_err(e)))
}
