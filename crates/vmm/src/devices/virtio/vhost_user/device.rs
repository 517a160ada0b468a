//! The device side of a vhost-user device: what the driver is offered and
//! reads, and when the back-end is started and stopped. The back-end itself
//! sits behind the small [`Backend`] trait ([`super::Frontend`] is the real
//! one, speaking vhost-user over a Unix socket).

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::vring::{plan_vrings, VringError, VringPlan};

/// virtio device ID of a file-system device (virtio-fs).
pub const VIRTIO_ID_FS: u32 = 26;
/// virtio device ID of a socket device (virtio-vsock).
pub const VIRTIO_ID_VSOCK: u32 = 19;
/// Largest queue we let a driver ask for. vhost-user has no way to ask a
/// back-end for its limit; virtiofsd and moat-vsock both take 1024.
pub const QUEUE_MAX: u16 = 256;
/// Bytes of the virtio-fs tag (`struct virtio_fs_config.tag`).
pub const FS_TAG_LEN: usize = 36;
/// Most virtio-fs request queues we expose, whatever a back-end claims.
pub const MAX_FS_REQUEST_QUEUES: u16 = 8;

/// Bits of the ring layout a back-end may offer and a driver may take: the
/// back-end walks the rings, the transport only sets them up (split rings).
const RING_FEATURES: u64 =
    1u64 << VIRTIO_RING_F_INDIRECT_DESC | 1u64 << VIRTIO_RING_F_EVENT_IDX | 1u64 << VIRTIO_F_VERSION_1;
/// vsock's own bits: STREAM (0), SEQPACKET (1), NO_IMPLIED_STREAM (2).
const VSOCK_FEATURES: u64 = 0b111;
/// virtio-fs's only bit, NOTIFICATION (0), needs a queue we don't set up.
const FS_FEATURES: u64 = 0;

/// Which device a back-end serves, with the config only we answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceKind {
    /// virtio-fs: queue 0 is high-priority, then `request_queues` request queues.
    Fs { tag: String, request_queues: u16 },
    /// virtio-vsock: rx, tx and event queues.
    Vsock { guest_cid: u64 },
}

impl DeviceKind {
    /// The virtio device ID.
    pub fn device_type(&self) -> u32 {
        match self {
            Self::Fs { .. } => VIRTIO_ID_FS,
            Self::Vsock { .. } => VIRTIO_ID_VSOCK,
        }
    }

    /// How many queues the device has (and the back-end must serve).
    pub fn queue_count(&self) -> usize {
        match self {
            Self::Fs { request_queues, .. } => 1 + usize::from(*request_queues),
            Self::Vsock { .. } => 3,
        }
    }

    /// The feature bits we let through from back-end to driver.
    pub fn feature_mask(&self) -> u64 {
        RING_FEATURES
            | match self {
                Self::Fs { .. } => FS_FEATURES,
                Self::Vsock { .. } => VSOCK_FEATURES,
            }
    }

    /// The config space the driver reads: `struct virtio_fs_config` (tag,
    /// then the request-queue count) or `struct virtio_vsock_config` (the
    /// guest's CID), little-endian.
    pub fn config_space(&self) -> Vec<u8> {
        match self {
            Self::Fs { tag, request_queues } => {
                let mut config = vec![0u8; FS_TAG_LEN + 4];
                // A tag that fills all 36 bytes has no NUL; `FsConfig`
                // validation keeps it to 36 bytes.
                let tag = &tag.as_bytes()[..tag.len().min(FS_TAG_LEN)];
                config[..tag.len()].copy_from_slice(tag);
                config[FS_TAG_LEN..].copy_from_slice(&u32::from(*request_queues).to_le_bytes());
                config
            }
            Self::Vsock { guest_cid } => guest_cid.to_le_bytes().to_vec(),
        }
    }
}

/// The other half of a vhost-user device: the process serving its queues.
pub trait Backend: Send {
    /// Hands the back-end guest memory and `vrings`, kicked through `kicks`
    /// (indexed by queue) and signalling used buffers on `call`, and starts
    /// them with `features` acked.
    fn start(
        &mut self,
        features: u64,
        mem: &GuestMemoryMmap,
        vrings: &[VringPlan],
        kicks: &[EventFd],
        call: &EventFd,
    ) -> Result<(), BackendError>;

    /// Stops every vring started by the last [`Backend::start`].
    fn stop(&mut self) -> Result<(), BackendError>;
}

/// A back-end request failed; the device is unusable until the back-end is back.
#[derive(Debug, thiserror::Error)]
#[error("vhost-user {request} failed")]
pub struct BackendError {
    pub request: &'static str,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// What happened to a vhost-user device.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VhostUserStats {
    /// Times the back-end was started on `DRIVER_OK`.
    pub started: u64,
    /// `DRIVER_OK`s refused because a queue was unfit to hand over.
    pub bad_queues: u64,
    /// `DRIVER_OK`s refused because the driver acked features never offered.
    pub bad_features: u64,
    /// Kicks passed on to the back-end from trapped `QueueNotify` writes.
    pub kicks: u64,
    /// Kicks for a queue that doesn't exist, or while the back-end isn't running.
    pub ignored_kicks: u64,
}

/// Where the device is with its back-end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    /// Connected, no queues handed over.
    Idle,
    /// Serving the driver's queues.
    Running,
    /// A request failed or the connection dropped; the device can't start
    /// again.
    Lost,
}

/// A virtio device whose queues an external vhost-user back-end serves.
#[derive(Debug)]
pub struct VhostUser<B> {
    kind: DeviceKind,
    config: Vec<u8>,
    offered: u64,
    backend_extra: u64,
    max_sizes: Vec<u16>,
    pub(super) kicks: Vec<EventFd>,
    acked: u64,
    pub(super) backend: B,
    pub(super) state: BackendState,
    pub(super) stats: VhostUserStats,
    last_error: Option<String>,
}

impl<B: Backend> VhostUser<B> {
    /// A `kind` device in front of `backend`, which offered `backend_features`
    /// (virtio bits, plus vhost-user's own that `start` must ack again, such
    /// as `VHOST_USER_F_PROTOCOL_FEATURES`: pass those in `backend_extra`).
    pub fn new(kind: DeviceKind, backend_features: u64, backend_extra: u64, backend: B) -> std::io::Result<Self> {
        let kicks = (0..kind.queue_count()).map(|_| EventFd::new(EFD_NONBLOCK)).collect::<std::io::Result<_>>()?;
        Ok(Self {
            config: kind.config_space(),
            offered: backend_features & kind.feature_mask(),
            backend_extra,
            max_sizes: vec![QUEUE_MAX; kind.queue_count()],
            kind,
            kicks,
            acked: 0,
            backend,
            state: BackendState::Idle,
            stats: VhostUserStats::default(),
            last_error: None,
        })
    }

    /// Which device this is.
    pub fn kind(&self) -> &DeviceKind {
        &self.kind
    }

    /// The queues' kick eventfds, by queue index: the device manager
    /// registers each with KVM for `QueueNotify` writes of that index.
    pub fn kicks(&self) -> &[EventFd] {
        &self.kicks
    }

    /// Where the device is with its back-end.
    pub fn state(&self) -> BackendState {
        self.state
    }

    /// What happened so far.
    pub fn stats(&self) -> VhostUserStats {
        self.stats
    }

    /// Why the back-end was lost, if it was.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The back-end.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The back-end went away under us: nothing can start again.
    pub fn backend_lost(&mut self, why: &str) {
        // The first loss is the cause; later failures follow from it.
        if self.state != BackendState::Lost {
            self.last_error = Some(why.to_owned());
        }
        self.state = BackendState::Lost;
    }

    pub(super) fn offered(&self) -> u64 {
        self.offered
    }

    pub(super) fn config(&self) -> &[u8] {
        &self.config
    }

    pub(super) fn max_sizes(&self) -> &[u16] {
        &self.max_sizes
    }

    pub(super) fn set_acked(&mut self, features: u64) {
        self.acked = features;
    }

    /// `DRIVER_OK`: checks the queues and starts the back-end on them.
    /// Returns whether it runs.
    pub(super) fn start(&mut self, queues: &[Queue], mem: &GuestMemoryMmap, call: &EventFd) -> bool {
        if self.state != BackendState::Idle {
            return false;
        }
        // The transport checked this already; the back-end is a separate
        // program and gets nothing we didn't offer.
        if self.acked & !self.offered != 0 {
            self.stats.bad_features += 1;
            return false;
        }
        let vrings = match plan_vrings(queues, mem) {
            Ok(vrings) => vrings,
            Err(e) => {
                self.stats.bad_queues += 1;
                self.note_refusal(&e);
                return false;
            }
        };
        match self.backend.start(self.acked | self.backend_extra, mem, &vrings, &self.kicks, call) {
            Ok(()) => {
                self.state = BackendState::Running;
                self.stats.started += 1;
                true
            }
            Err(e) => {
                self.backend_lost(&error_chain(&e));
                false
            }
        }
    }

    /// Driver reset: stop the back-end's vrings so a new `DRIVER_OK` can
    /// hand them over again.
    pub(super) fn stop(&mut self) {
        self.acked = 0;
        if self.state == BackendState::Running {
            match self.backend.stop() {
                Ok(()) => self.state = BackendState::Idle,
                Err(e) => self.backend_lost(&error_chain(&e)),
            }
        }
    }

    /// A trapped `QueueNotify` write (no ioeventfd caught it): pass it on.
    pub(super) fn kick(&mut self, index: usize) {
        match self.kicks.get(index) {
            Some(kick) if self.state == BackendState::Running => {
                self.stats.kicks += 1;
                // Saturation (EAGAIN) means a kick is already pending.
                let _ = kick.write(1);
            }
            _ => self.stats.ignored_kicks += 1,
        }
    }

    fn note_refusal(&mut self, e: &VringError) {
        // Kept for the operator; bounded (one string, replaced).
        self.last_error = Some(e.to_string());
    }
}

/// `e` and its sources, `: `-separated.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
