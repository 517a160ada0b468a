//! A virtio device's interrupt: the interrupt status register the driver
//! reads and acknowledges, and the line that tells it to look.
//!
//! The line is an eventfd. Once the device manager registers it with KVM as
//! an irqfd, every write to it is an edge on the device's GSI, delivered by
//! the in-kernel irqchip. Unregistered (unit tests), the writes just count.

use std::io;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The driver must look at the used rings.
pub const USED_BUFFER: u32 = 1;
/// The device's config space changed (or it needs a reset).
pub const CONFIG_CHANGE: u32 = 2;

/// Interrupt status plus the irqfd that signals it.
#[derive(Debug)]
pub struct Interrupt {
    status: u32,
    line: EventFd,
    raised: u64,
}

impl Interrupt {
    /// A new, quiet interrupt with its own eventfd.
    pub fn new() -> io::Result<Self> {
        Ok(Self { status: 0, line: EventFd::new(EFD_NONBLOCK)?, raised: 0 })
    }

    /// The `InterruptStatus` register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Times the line was signalled.
    pub fn raised(&self) -> u64 {
        self.raised
    }

    /// Sets `bits` in the status register and signals the line.
    pub fn raise(&mut self, bits: u32) {
        self.status |= bits;
        self.raised += 1;
        // The counter saturating (EAGAIN after 2^64-2 unread signals) only
        // means the edge is already pending: nothing is lost.
        let _ = self.line.write(1);
    }

    /// The driver acknowledged `bits` (`InterruptACK`).
    pub fn ack(&mut self, bits: u32) {
        self.status &= !bits;
    }

    /// Device reset: nothing pending.
    pub fn clear(&mut self) {
        self.status = 0;
    }

    /// The eventfd to register with KVM as an irqfd.
    pub(crate) fn line(&self) -> &EventFd {
        &self.line
    }
}
