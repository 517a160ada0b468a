//! vhost-user devices: virtio devices behind our virtio-mmio transport whose
//! queues an external back-end process serves over a Unix socket —
//! virtio-fs with `virtiofsd`, virtio-vsock with `moat-vsock` (the backend
//! the QEMU backend uses too, so one vsock implementation serves both).
//!
//! The VMM keeps the register model and the config space (the fs tag, the
//! guest CID); the back-end maps guest RAM (our memfd) and walks the rings.
//! Kicks reach it through ioeventfds, its interrupts reach the guest through
//! the device's irqfd: neither passes through the VMM.
//!
//! `device.rs` is the device (what is offered, when the back-end starts and
//! stops, the [`Backend`] trait), `vring.rs` checks the driver's queues before
//! a back-end sees them, `frontend.rs` speaks vhost-user, `event_handler.rs`
//! wires it all to the transport and watches for the back-end hanging up.
//!
//! Not here: reconnecting to a restarted back-end (a lost back-end leaves the
//! device in `DEVICE_NEEDS_RESET` for good), virtio-fs DAX windows and
//! notification queues, dirty-page logging, in-flight I/O tracking.

mod device;
mod event_handler;
mod frontend;
mod vring;

pub use self::device::{
    Backend, BackendError, BackendState, DeviceKind, VhostUser, VhostUserStats, FS_TAG_LEN, MAX_FS_REQUEST_QUEUES,
    QUEUE_MAX, VIRTIO_ID_FS, VIRTIO_ID_VSOCK,
};
pub use self::event_handler::BackendWatch;
pub use self::frontend::{ConnectError, Frontend, REPLY_TIMEOUT};
pub use self::vring::{plan_vring, plan_vrings, RingLayout, VringError, VringPlan};

#[cfg(test)]
mod tests;
