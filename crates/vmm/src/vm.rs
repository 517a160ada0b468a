//! The KVM VM: the `/dev/kvm` handle, the VM fd, and its RAM slots.

use std::io;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{IoEventAddress, Kvm, VcpuFd, VmFd};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::{self, kvm_err, ArchError};
use crate::memory::GuestMemory;

/// The VM could not be created or set up.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("could not open /dev/kvm (is KVM available and accessible?)")]
    OpenKvm(#[source] io::Error),
    #[error("could not create the KVM VM")]
    CreateVm(#[source] io::Error),
    #[error("could not set up the VM")]
    Arch(#[source] ArchError),
    #[error("could not register guest RAM slot {0} with KVM")]
    RegisterMemory(u32, #[source] io::Error),
    #[error("could not create vCPU {0}")]
    CreateVcpu(u8, #[source] io::Error),
}

/// A KVM VM with its arch-level set-up done (irqchip, PIT, TSS).
#[derive(Debug)]
pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
}

impl Vm {
    /// Opens `/dev/kvm` and creates a VM.
    pub fn new() -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(|e| VmError::OpenKvm(kvm_err(e)))?;
        let fd = kvm.create_vm().map_err(|e| VmError::CreateVm(kvm_err(e)))?;
        arch::setup_vm(&fd).map_err(VmError::Arch)?;
        Ok(Self { kvm, fd })
    }

    /// Tells KVM where guest RAM lives in our address space.
    ///
    /// The caller must keep `memory` mapped for as long as this VM exists;
    /// [`crate::MicroVm`] does so by owning both, VM first.
    pub(crate) fn register_memory(&self, memory: &GuestMemory) -> Result<(), VmError> {
        for (slot, region) in (0u32..).zip(memory.regions()) {
            let kvm_region = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: region.guest_addr,
                memory_size: region.len,
                userspace_addr: region.host_addr,
            };
            // SAFETY: `userspace_addr..+memory_size` is a live shared mapping
            // owned by `memory` (vm-memory created it with exactly this size).
            // KVM will access it until the VM fd is closed; `MicroVm` upholds
            // that by declaring its `vm` field before its `memory` field, so
            // the VM is dropped (fd closed) before the mapping is unmapped.
            unsafe { self.fd.set_user_memory_region(kvm_region) }
                .map_err(|e| VmError::RegisterMemory(slot, kvm_err(e)))?;
        }
        Ok(())
    }

    /// Creates vCPU `index`.
    pub(crate) fn create_vcpu(&self, index: u8) -> Result<VcpuFd, VmError> {
        self.fd.create_vcpu(u64::from(index)).map_err(|e| VmError::CreateVcpu(index, kvm_err(e)))
    }

    /// Routes `line` to interrupt line `gsi`: each write to the eventfd is
    /// an edge the in-kernel irqchip delivers.
    pub(crate) fn register_irqfd(&self, line: &EventFd, gsi: u32) -> io::Result<()> {
        self.fd.register_irqfd(line, gsi).map_err(kvm_err)
    }

    /// Has KVM complete a guest's 4-byte MMIO write of `value` to `addr`
    /// by signalling `event`, without an exit to us (a queue kick).
    pub(crate) fn register_ioevent(&self, event: &EventFd, addr: u64, value: u32) -> io::Result<()> {
        self.fd.register_ioevent(event, &IoEventAddress::Mmio(addr), value).map_err(kvm_err)
    }

    pub(crate) fn kvm(&self) -> &Kvm {
        &self.kvm
    }
}
