//! Building a microVM, as one recipe: memory → VM → vCPUs → devices → boot
//! set-up → start. No device logic lives here.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kvm_ioctls::VcpuFd;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::{self, ArchError, MpTableError};
use crate::config::{ConfigError, VmConfig};
use crate::device_manager::{AttachError, BusDevice, BusError, DeviceManager, VhostUserHandle};
use crate::devices::serial::SerialStats;
use crate::devices::virtio::block::BlockStats;
use crate::loader::{self, LoadError, Payload};
use crate::memory::{GuestMemory, MemoryError};
use crate::runtime::{self, RunOptions, RunParts, RunReport};
use crate::vcpu::RunError;
use crate::vm::{Vm, VmError};

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
    #[error("could not wire the serial port's interrupt")]
    SerialIrq(#[source] std::io::Error),
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
    #[error("could not prepare the vCPUs")]
    Boot(#[from] ArchError),
}

/// Builds a microVM ready to [`MicroVm::run`] `payload`.
pub fn build_microvm(config: &VmConfig, payload: Payload<'_>) -> Result<MicroVm, BuildError> {
    config.validate()?;

    let memory = GuestMemory::new(config.mem_mib)?;
    let vm = Vm::new()?;
    vm.register_memory(&memory)?;

    let vcpus = (0..config.vcpus).map(|index| vm.create_vcpu(index)).collect::<Result<Vec<_>, _>>()?;

    let serial_irq = EventFd::new(EFD_NONBLOCK).map_err(BuildError::SerialIrq)?;
    vm.register_irqfd(&serial_irq, arch::COM1_IRQ).map_err(BuildError::SerialIrq)?;
    let mut devices = DeviceManager::with_legacy_devices(config.serial_limit, Some(serial_irq))?;
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
    arch::configure_vcpus(vm.kvm(), &vcpus, &entry)?;

    // Opened now: a jail entered after the build hides /proc.
    let statm = runtime::open_statm();
    Ok(MicroVm { vcpus, devices, _vm: vm, memory, timeout: config.timeout, statm })
}

/// A built microVM. Start it with [`MicroVm::run`].
#[derive(Debug)]
pub struct MicroVm {
    // Field order is drop order and matters: the vCPU and VM fds close before
    // guest RAM is unmapped (see `Vm::register_memory`).
    vcpus: Vec<VcpuFd>,
    devices: DeviceManager,
    _vm: Vm,
    memory: GuestMemory,
    timeout: Duration,
    /// For `stats`: the process's resident memory.
    statm: Option<std::fs::File>,
}

impl MicroVm {
    /// Attaches an extra MMIO device at `[base, base + len)`.
    pub fn attach_mmio(&mut self, base: u64, len: u64, device: Arc<Mutex<dyn BusDevice>>) -> Result<(), BusError> {
        self.devices.attach_mmio(base, len, device)
    }

    /// Runs the VM with [`RunOptions::default`]: seccomp on, serial output
    /// buffered, no control socket.
    pub fn run(&mut self) -> Result<RunReport, RunError> {
        self.run_with(RunOptions::default())
    }

    /// Runs every vCPU on its own thread, and a VMM thread, until the guest
    /// stops, the configured timeout passes, or a controller stops the VM.
    /// Returns once every thread has exited.
    pub fn run_with(&mut self, options: RunOptions) -> Result<RunReport, RunError> {
        let parts = RunParts {
            vcpus: &mut self.vcpus,
            devices: &self.devices,
            memory: &self.memory,
            timeout: self.timeout,
            statm: self.statm.as_ref().and_then(|f| f.try_clone().ok()),
        };
        runtime::run(parts, options)
    }

    /// Number of vCPUs.
    pub fn vcpu_count(&self) -> usize {
        self.vcpus.len()
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
