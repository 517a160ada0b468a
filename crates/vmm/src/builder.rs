//! Building a microVM, as one recipe: memory → VM → vCPUs → devices → boot
//! set-up → start. No device logic lives here.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kvm_ioctls::VcpuFd;

use crate::arch::{self, ArchError, MpTableError};
use crate::config::{ConfigError, VmConfig};
use crate::device_manager::{AttachError, BusDevice, BusError, DeviceManager, UnmappedAccesses, VhostUserHandle};
use crate::devices::serial::SerialStats;
use crate::devices::virtio::block::BlockStats;
use crate::loader::{self, LoadError, Payload};
use crate::memory::{GuestMemory, MemoryError};
use crate::vcpu::{self, RunError, RunOutcome};
use crate::vm::{Vm, VmError};
use crate::watchdog::Watchdog;

/// A microVM could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid VM config")]
    Config(#[from] ConfigError),
    #[error("could not set up guest memory")]
    Memory(#[from] MemoryError),
    #[error("could not set up the VM")]
    Vm(#[from] VmError),
    #[error("could not attach devices")]
    Devices(#[from] BusError),
    #[error("could not attach disk {0}")]
    Disk(usize, #[source] AttachError),
    #[error("could not attach shared directory {0}")]
    Fs(usize, #[source] AttachError),
    #[error("could not attach the vsock device")]
    Vsock(#[source] AttachError),
    #[error("could not load the payload")]
    Load(#[from] LoadError),
    #[error("could not write the MP table")]
    MpTable(#[from] MpTableError),
    #[error("could not prepare the boot vCPU")]
    Boot(#[from] ArchError),
}

/// Builds a microVM ready to [`MicroVm::run`] `payload`.
pub fn build_microvm(config: &VmConfig, payload: Payload<'_>) -> Result<MicroVm, BuildError> {
    config.validate()?;

    let memory = GuestMemory::new(config.mem_mib)?;
    let vm = Vm::new()?;
    vm.register_memory(&memory)?;

    let boot_vcpu = vm.create_vcpu(0)?;

    let mut devices = DeviceManager::with_legacy_devices(config.serial_limit)?;
    for (i, disk) in config.disks.iter().enumerate() {
        devices.attach_block(&vm, &memory, disk).map_err(|e| BuildError::Disk(i, e))?;
    }
    for (i, fs) in config.fs.iter().enumerate() {
        devices.attach_fs(&vm, &memory, fs).map_err(|e| BuildError::Fs(i, e))?;
    }
    if let Some(vsock) = &config.vsock {
        devices.attach_vsock(&vm, &memory, vsock).map_err(BuildError::Vsock)?;
    }

    let entry = loader::load(&memory, payload, &devices.virtio_cmdline())?;
    arch::write_boot_tables(&memory, &entry)?;
    arch::write_mptable(&memory, config.vcpus)?;
    arch::configure_vcpu(vm.kvm(), &boot_vcpu, 0, &entry)?;

    Ok(MicroVm { boot_vcpu, devices, _vm: vm, memory, timeout: config.timeout })
}

/// What one run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    pub outcome: RunOutcome,
    pub elapsed: Duration,
    pub unmapped: UnmappedAccesses,
    pub serial: SerialStats,
}

/// A built microVM. Start it with [`MicroVm::run`].
#[derive(Debug)]
pub struct MicroVm {
    // Field order is drop order and matters: the vCPU and VM fds close before
    // guest RAM is unmapped (see `Vm::register_memory`).
    boot_vcpu: VcpuFd,
    devices: DeviceManager,
    _vm: Vm,
    memory: GuestMemory,
    timeout: Duration,
}

impl MicroVm {
    /// Attaches an extra MMIO device at `[base, base + len)`.
    pub fn attach_mmio(&mut self, base: u64, len: u64, device: Arc<Mutex<dyn BusDevice>>) -> Result<(), BusError> {
        self.devices.attach_mmio(base, len, device)
    }

    /// Runs the boot vCPU on the calling thread until the guest stops or the
    /// configured timeout passes.
    pub fn run(&mut self) -> Result<RunReport, RunError> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let watchdog = Watchdog::arm(deadline).map_err(RunError::Watchdog)?;
        let outcome = vcpu::run(&mut self.boot_vcpu, &mut self.devices, deadline);
        drop(watchdog);
        Ok(RunReport {
            outcome: outcome?,
            elapsed: start.elapsed(),
            unmapped: self.devices.unmapped(),
            serial: self.serial_stats(),
        })
    }

    /// The kernel command-line entries announcing the virtio devices
    /// (`virtio_mmio.device=…`, space-separated).
    pub fn virtio_cmdline(&self) -> String {
        self.devices.virtio_cmdline()
    }

    /// Each disk's request counts, in [`VmConfig::disks`] order.
    pub fn block_stats(&self) -> Vec<BlockStats> {
        self.devices.block_stats()
    }

    /// The vhost-user devices (virtio-fs, then vsock), in attach order.
    pub fn vhost_users(&self) -> &[VhostUserHandle] {
        self.devices.vhost_users()
    }

    /// Drains the serial output buffered so far.
    pub fn take_serial_output(&mut self) -> Vec<u8> {
        self.serial().take_output()
    }

    /// Serial bytes written and dropped so far.
    pub fn serial_stats(&self) -> SerialStats {
        self.serial().stats()
    }

    /// Guest RAM.
    pub fn memory(&self) -> &GuestMemory {
        &self.memory
    }

    fn serial(&self) -> std::sync::MutexGuard<'_, crate::devices::serial::Serial> {
        self.devices.serial().lock().unwrap_or_else(PoisonError::into_inner)
    }
}
