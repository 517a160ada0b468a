//! What a virtio device provides to its transport.

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Feature bit 32: the device follows virtio 1.x (no legacy interface).
/// The transport offers it for every device and refuses drivers that don't
/// accept it.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    pub const FAILED: u32 = 0x80;
}

/// One virtio device behind a transport. Five required methods; the rest
/// have defaults. Everything a device receives from the guest (queue
/// contents) is hostile input: a device must answer malformed requests with
/// an error status and never panic.
pub trait VirtioDevice: Send {
    /// The virtio device ID (2 = block).
    fn device_type(&self) -> u32;

    /// Device-specific feature bits offered to the driver; the transport adds
    /// [`VIRTIO_F_VERSION_1`].
    fn features(&self) -> u64;

    /// The largest size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// The device's config space, as the driver reads it (little-endian).
    fn config(&self) -> &[u8];

    /// Handles the buffers the driver made available on queue `index`.
    /// Returns whether the driver should be interrupted (used buffers were
    /// added and the driver did not suppress interrupts).
    fn process_queue(&mut self, index: usize, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool;

    /// The driver wrote `data` at `offset` in config space. Read-only
    /// config spaces ignore it (the default).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    /// The driver set `DRIVER_OK` having accepted `features`.
    fn activate(&mut self, _features: u64) {}

    /// The driver reset the device: forget any per-session state.
    fn reset(&mut self) {}

    /// Right after [`VirtioDevice::activate`], a device whose queues are
    /// served outside the VMM (vhost-user) is handed the driver's queues and
    /// the interrupt line (an irqfd) to pass on. `false` means it could not
    /// start them: the transport then asks the driver for a reset.
    fn hand_off_queues(&mut self, _queues: &[Queue], _mem: &GuestMemoryMmap, _line: &EventFd) -> bool {
        true
    }

    /// Whether something other than the transport signals used buffers on
    /// the interrupt line (a vhost-user back-end writing the irqfd). The
    /// transport can't know when that happens, so while such a device is
    /// live its `InterruptStatus` always shows a used-buffer interrupt, and
    /// the driver checks its used rings on every interrupt.
    fn interrupts_out_of_band(&self) -> bool {
        false
    }
}
