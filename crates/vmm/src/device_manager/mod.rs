//! Attaching devices to the port-I/O and MMIO buses, and dispatching guest
//! accesses to them.
//!
//! A guest access that hits no device is not an error: reads return all
//! ones (as on real hardware), writes are dropped, and both are counted.
//!
//! Virtio devices get an MMIO window and an IRQ line each ([`MmioSlots`]);
//! their interrupt eventfd becomes a KVM irqfd on that line.

mod bus;
mod vhost_user;
mod virtio;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

pub use self::bus::{Bus, BusDevice, BusError, GuestRequest};
pub use self::vhost_user::VhostUserHandle;
pub use self::virtio::{MmioSlot, MmioSlots, SlotsExhausted};

use vmm_sys_util::eventfd::EventFd;

use crate::arch;
use crate::config::DiskConfig;
use crate::devices::virtio::block::{Block, BlockStats, DiskError, DiskImage};
use crate::devices::virtio::vhost_user::ConnectError;
use crate::devices::virtio::{MmioTransport, VirtioDevice};
use crate::devices::{debug_exit::DebugExit, i8042::I8042, power_button::PowerButton, serial::Serial};
use crate::memory::GuestMemory;
use crate::vm::Vm;

/// A virtio device could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("could not open the disk image")]
    Disk(#[from] DiskError),
    #[error("could not create the device's queues or interrupt")]
    Transport(#[source] io::Error),
    #[error("no room for the device")]
    Slots(#[from] SlotsExhausted),
    #[error("could not route the device's interrupt to IRQ {0}")]
    Irqfd(u32, #[source] io::Error),
    #[error("could not map the device")]
    Bus(#[from] BusError),
    #[error("could not take the vhost-user back-end into service")]
    VhostUser(#[from] ConnectError),
    #[error("could not route queue {0}'s notifications to the back-end")]
    Ioeventfd(usize, #[source] io::Error),
    #[error("could not watch the vhost-user back-end's socket")]
    Watch(#[source] io::Error),
}

/// Guest accesses that hit no device.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnmappedAccesses {
    pub reads: u64,
    pub writes: u64,
}

/// [`UnmappedAccesses`] as counters every vCPU thread bumps.
#[derive(Debug, Default)]
struct UnmappedCounters {
    reads: AtomicU64,
    writes: AtomicU64,
}

/// The VM's two buses and the devices on them.
///
/// Shared by every vCPU thread once the VM runs: dispatch takes `&self`,
/// each device has its own lock, and the buses do not change while vCPUs run.
#[derive(Debug)]
pub struct DeviceManager {
    pio: Bus,
    mmio: Bus,
    unmapped: UnmappedCounters,
    serial: Arc<Mutex<Serial>>,
    power_button: Arc<Mutex<PowerButton>>,
    virtio: MmioSlots,
    blocks: Vec<Arc<Mutex<MmioTransport<Block>>>>,
    vhost_users: Vec<VhostUserHandle>,
}

impl DeviceManager {
    /// Attaches COM1 (its interrupt on `serial_irq`, an irqfd for IRQ 4),
    /// the debug-exit port, the power button and the i8042 reset line.
    pub fn with_legacy_devices(serial_limit: usize, serial_irq: Option<EventFd>) -> Result<Self, BusError> {
        let serial = Arc::new(Mutex::new(Serial::new(serial_limit, serial_irq)));
        let power_button = Arc::new(Mutex::new(PowerButton::default()));
        let mut pio = Bus::default();
        pio.insert(u64::from(arch::COM1_PORT), 8, serial.clone())?;
        pio.insert(u64::from(arch::DEBUG_EXIT_PORT), 1, Arc::new(Mutex::new(DebugExit)))?;
        pio.insert(u64::from(arch::POWER_BUTTON_PORT), 1, power_button.clone())?;
        pio.insert(u64::from(arch::I8042_PORT), 5, Arc::new(Mutex::new(I8042)))?;
        let virtio = MmioSlots::new(arch::VIRTIO_MMIO_BASE, arch::VIRTIO_MMIO_WINDOW, arch::VIRTIO_IRQS);
        Ok(Self {
            pio,
            mmio: Bus::default(),
            unmapped: UnmappedCounters::default(),
            serial,
            power_button,
            virtio,
            blocks: Vec::new(),
            vhost_users: Vec::new(),
        })
    }

    /// Opens `disk` and attaches a virtio-blk device for it.
    pub(crate) fn attach_block(
        &mut self,
        vm: &Vm,
        memory: &GuestMemory,
        disk: &DiskConfig,
    ) -> Result<MmioSlot, AttachError> {
        let image = DiskImage::open(&disk.path, disk.read_only)?;
        let transport = MmioTransport::new(Block::new(image), memory).map_err(AttachError::Transport)?;
        let device = Arc::new(Mutex::new(transport));
        let slot = self.attach_virtio(vm, device.clone())?;
        self.blocks.push(device);
        Ok(slot)
    }

    /// Gives `device` the next window and IRQ line and routes its interrupt
    /// there through KVM.
    fn attach_virtio<D: VirtioDevice + 'static>(
        &mut self,
        vm: &Vm,
        device: Arc<Mutex<MmioTransport<D>>>,
    ) -> Result<MmioSlot, AttachError> {
        let mut slots = self.virtio.clone();
        let slot = slots.allocate()?;
        let transport = device.lock().unwrap_or_else(PoisonError::into_inner);
        vm.register_irqfd(transport.interrupt().line(), slot.irq).map_err(|e| AttachError::Irqfd(slot.irq, e))?;
        drop(transport);
        self.mmio.insert(slot.base, slot.len, device)?;
        self.virtio = slots;
        Ok(slot)
    }

    /// The kernel command-line entries announcing the virtio devices.
    pub fn virtio_cmdline(&self) -> String {
        self.virtio.kernel_cmdline()
    }

    /// Each block device's request counts, in attach order.
    pub fn block_stats(&self) -> Vec<BlockStats> {
        self.blocks.iter().map(|b| b.lock().unwrap_or_else(PoisonError::into_inner).device().stats()).collect()
    }

    /// Attaches `device` to guest-physical `[base, base + len)`.
    pub fn attach_mmio(&mut self, base: u64, len: u64, device: Arc<Mutex<dyn BusDevice>>) -> Result<(), BusError> {
        self.mmio.insert(base, len, device)
    }

    /// The serial console.
    pub fn serial(&self) -> &Arc<Mutex<Serial>> {
        &self.serial
    }

    /// The power button the VMM presses to ask for a shutdown.
    pub fn power_button(&self) -> &Arc<Mutex<PowerButton>> {
        &self.power_button
    }

    /// Accesses that hit no device so far.
    pub fn unmapped(&self) -> UnmappedAccesses {
        UnmappedAccesses {
            reads: self.unmapped.reads.load(Ordering::Relaxed),
            writes: self.unmapped.writes.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn pio_read(&self, port: u16, data: &mut [u8]) {
        if !self.pio.read(u64::from(port), data) {
            self.unmapped_read(data);
        }
    }

    pub(crate) fn pio_write(&self, port: u16, data: &[u8]) -> Option<GuestRequest> {
        self.pio.write(u64::from(port), data).unwrap_or_else(|| self.unmapped_write())
    }

    pub(crate) fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        if !self.mmio.read(addr, data) {
            self.unmapped_read(data);
        }
    }

    pub(crate) fn mmio_write(&self, addr: u64, data: &[u8]) -> Option<GuestRequest> {
        self.mmio.write(addr, data).unwrap_or_else(|| self.unmapped_write())
    }

    fn unmapped_read(&self, data: &mut [u8]) {
        data.fill(0xff);
        self.unmapped.reads.fetch_add(1, Ordering::Relaxed);
    }

    fn unmapped_write(&self) -> Option<GuestRequest> {
        self.unmapped.writes.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmapped_port_reads_all_ones_and_is_counted() {
        let dm = DeviceManager::with_legacy_devices(16, None).unwrap();
        let mut data = [0u8; 2];
        dm.pio_read(0x1234, &mut data);
        assert_eq!(data, [0xff, 0xff]);
        assert_eq!(dm.pio_write(0x1234, &[1]), None);
        let mut word = [0u8; 4];
        dm.mmio_read(0xd000_0000, &mut word);
        assert_eq!(word, [0xff; 4]);
        assert_eq!(dm.unmapped(), UnmappedAccesses { reads: 2, writes: 1 });
    }

    #[test]
    fn legacy_ports_reach_their_devices() {
        let dm = DeviceManager::with_legacy_devices(16, None).unwrap();
        assert_eq!(dm.pio_write(arch::COM1_PORT, b"h"), None);
        assert_eq!(dm.pio_write(arch::DEBUG_EXIT_PORT, &[7]), Some(GuestRequest::Exit(7)));
        assert_eq!(dm.pio_write(arch::I8042_PORT + 4, &[0xfe]), Some(GuestRequest::Reset));
        assert_eq!(dm.serial().lock().unwrap().output(), b"h");
        let mut button = [0xaa];
        dm.pio_read(arch::POWER_BUTTON_PORT, &mut button);
        assert_eq!(button, [0], "not pressed");
        dm.power_button().lock().unwrap().press();
        dm.pio_read(arch::POWER_BUTTON_PORT, &mut button);
        assert_eq!(button, [1], "pressed");
        assert_eq!(dm.unmapped(), UnmappedAccesses::default());
    }
}
