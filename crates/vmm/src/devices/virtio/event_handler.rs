//! Wires a virtio-mmio transport to the MMIO bus.
//!
//! Notifications: a guest write to `QueueNotify` reaches us as an ordinary
//! MMIO exit and the queue is processed right there, on the vCPU thread,
//! before the guest resumes. An ioeventfd would let KVM complete the write
//! in-kernel and wake a device thread instead; that waits for the VMM's
//! event loop (there is none yet, and one vCPU gains nothing from it).
//!
//! Interrupts go the other way without us: see [`super::Interrupt`].

use super::device::VirtioDevice;
use super::mmio::MmioTransport;
use crate::device_manager::{BusDevice, GuestRequest};

impl<D: VirtioDevice> BusDevice for MmioTransport<D> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        MmioTransport::read(self, offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<GuestRequest> {
        MmioTransport::write(self, offset, data);
        None
    }
}
