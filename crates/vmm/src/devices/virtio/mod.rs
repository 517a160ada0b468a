//! Virtio devices over the virtio-mmio transport (virtio 1.x, MMIO register
//! layout version 2).
//!
//! [`MmioTransport`] is the register model every virtio device sits behind:
//! feature negotiation, the device status state machine, split virtqueues
//! (rust-vmm's `virtio-queue`) in guest RAM, the interrupt status register and
//! the device's config space. A device only implements the small
//! [`VirtioDevice`] trait; [`block`] is the first one, [`vhost_user`]
//! devices (virtio-fs, vsock) hand their queues to an external back-end.
//!
//! Wiring (see `event_handler.rs`): a guest write to `QueueNotify` traps to
//! the VMM as an MMIO exit and is handled synchronously on the vCPU thread
//! (vhost-user devices get ioeventfds instead: their back-end is the
//! thread to wake); the device's interrupt is an eventfd registered with KVM as an irqfd for its GSI, so
//! the in-kernel IOAPIC delivers it without another trip through userspace.
//!
//! Not here: packed virtqueues, `VIRTIO_F_EVENT_IDX`, indirect descriptors
//! as an offered feature of in-process devices (a guest that uses them
//! anyway is still handled; vhost-user back-ends may offer both),
//! shared-memory regions, queue reset.

pub mod block;
mod device;
mod event_handler;
mod interrupt;
mod mmio;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;
pub mod vhost_user;

pub use self::device::{status, VirtioDevice, VIRTIO_F_VERSION_1};
pub use self::interrupt::Interrupt;
pub use self::mmio::{regs, MmioTransport, TransportStats};
