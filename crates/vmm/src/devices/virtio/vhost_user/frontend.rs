//! The vhost-user front-end: our end of the Unix socket to a back-end
//! process (virtiofsd, moat-vsock), on rust-vmm's `vhost` crate.
//!
//! At attach time [`Frontend::connect`] claims the back-end (`SET_OWNER`),
//! reads its features and negotiates protocol features (`MQ` to learn how
//! many queues it serves, `REPLY_ACK` so every set-up request is confirmed,
//! `CONFIG` to cross-check a vsock back-end's CID). When the driver sets
//! `DRIVER_OK`, [`Backend::start`] sends the acked features, the memory table
//! (our memfd, region by region) and every ready vring: size, addresses,
//! base, call eventfd (the device's irqfd), kick eventfd (the queue's
//! ioeventfd), enable. A driver reset stops the vrings (`GET_VRING_BASE`).
//!
//! Every request has a deadline ([`REPLY_TIMEOUT`]): a wedged back-end fails
//! the request instead of hanging the vCPU thread that made it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
    VHOST_USER_MAX_VRINGS,
};
use vhost::vhost_user::{Frontend as VhostFrontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::device::{Backend, BackendError, DeviceKind, VhostUser, MAX_FS_REQUEST_QUEUES, QUEUE_MAX};
use super::vring::VringPlan;

/// How long the back-end may take to answer one request.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Protocol features we can use, if the back-end offers them.
const WANTED_PROTOCOL: VhostUserProtocolFeatures =
    VhostUserProtocolFeatures::MQ.union(VhostUserProtocolFeatures::REPLY_ACK).union(VhostUserProtocolFeatures::CONFIG);

/// The back-end could not be taken into service.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("could not connect to the vhost-user back-end at {0} (is it running?)")]
    Connect(PathBuf, #[source] io::Error),
    #[error("the handshake with the vhost-user back-end failed")]
    Handshake(#[source] BackendError),
    #[error("the vhost-user back-end is legacy-only (no VIRTIO_F_VERSION_1)")]
    Legacy,
    #[error("the vhost-user back-end serves {served} queues, the device needs {needed}")]
    Queues { served: u64, needed: usize },
    #[error("the vhost-user vsock back-end serves guest CID {backend}, the VM is configured for {configured}")]
    Cid { backend: u64, configured: u64 },
    #[error("could not create the queues' kick eventfds")]
    Kicks(#[source] io::Error),
}

impl VhostUser<Frontend> {
    /// A virtio-fs device tagged `tag`, served by the back-end on `socket`.
    pub fn connect_fs(socket: &Path, tag: &str) -> Result<Self, ConnectError> {
        let frontend = Frontend::connect(socket)?;
        let kind = DeviceKind::Fs { tag: tag.to_owned(), request_queues: frontend.fs_request_queues() };
        Self::serve(kind, frontend)
    }

    /// A virtio-vsock device for guest CID `guest_cid`, served by the
    /// back-end on `socket`.
    pub fn connect_vsock(socket: &Path, guest_cid: u64) -> Result<Self, ConnectError> {
        Self::serve(DeviceKind::Vsock { guest_cid }, Frontend::connect(socket)?)
    }

    fn serve(kind: DeviceKind, mut frontend: Frontend) -> Result<Self, ConnectError> {
        frontend.check(&kind)?;
        let (features, extra) = (frontend.features(), frontend.extra_features());
        VhostUser::new(kind, features, extra, frontend).map_err(ConnectError::Kicks)
    }
}

/// A connected vhost-user back-end.
pub struct Frontend {
    vu: VhostFrontend,
    features: u64,
    protocol: VhostUserProtocolFeatures,
    queue_num: Option<u64>,
    started: Vec<usize>,
}

impl Frontend {
    /// Connects to the back-end listening on `socket` and negotiates with it.
    pub fn connect(socket: &Path) -> Result<Self, ConnectError> {
        let stream = UnixStream::connect(socket).map_err(|e| ConnectError::Connect(socket.to_owned(), e))?;
        for set in [UnixStream::set_read_timeout, UnixStream::set_write_timeout] {
            set(&stream, Some(REPLY_TIMEOUT)).map_err(|e| ConnectError::Connect(socket.to_owned(), e))?;
        }
        // The crate's bound on queue indexes; ours is the device's queue count.
        let vu = VhostFrontend::from_stream(stream, VHOST_USER_MAX_VRINGS);
        let handshake = |request, e| ConnectError::Handshake(request_error(request, e));
        vu.set_owner().map_err(|e| handshake("SET_OWNER", e))?;
        let features = vu.get_features().map_err(|e| handshake("GET_FEATURES", e))?;
        if features & (1 << VIRTIO_F_VERSION_1) == 0 {
            return Err(ConnectError::Legacy);
        }
        let mut frontend =
            Self { vu, features, protocol: VhostUserProtocolFeatures::empty(), queue_num: None, started: Vec::new() };
        if features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0 {
            let offered = frontend.vu.get_protocol_features().map_err(|e| handshake("GET_PROTOCOL_FEATURES", e))?;
            let protocol = offered & WANTED_PROTOCOL;
            frontend.vu.set_protocol_features(protocol).map_err(|e| handshake("SET_PROTOCOL_FEATURES", e))?;
            frontend.protocol = protocol;
            if protocol.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                // From now on every request without a reply of its own is acked.
                frontend.vu.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
            }
            if protocol.contains(VhostUserProtocolFeatures::MQ) {
                frontend.queue_num = Some(frontend.vu.get_queue_num().map_err(|e| handshake("GET_QUEUE_NUM", e))?);
            }
        }
        Ok(frontend)
    }

    /// The virtio and vhost-user feature bits the back-end offered.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The bits [`Backend::start`] must ack besides the driver's:
    /// `VHOST_USER_F_PROTOCOL_FEATURES` if the back-end offered it (without
    /// it, vrings could not be enabled and disabled).
    pub fn extra_features(&self) -> u64 {
        self.features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    /// The protocol features in use.
    pub fn protocol(&self) -> VhostUserProtocolFeatures {
        self.protocol
    }

    /// How many queues the back-end says it serves (`None` without `MQ`).
    pub fn queue_num(&self) -> Option<u64> {
        self.queue_num
    }

    /// The virtio-fs request queues to expose: as many as the back-end
    /// serves besides the high-priority queue (one if it doesn't say),
    /// within [`MAX_FS_REQUEST_QUEUES`].
    pub fn fs_request_queues(&self) -> u16 {
        let served = self.queue_num.unwrap_or(2).saturating_sub(1);
        u16::try_from(served).unwrap_or(u16::MAX).clamp(1, MAX_FS_REQUEST_QUEUES)
    }

    /// Checks that the back-end can serve `kind`: enough queues, and for
    /// vsock the same guest CID (when the back-end answers `GET_CONFIG`).
    pub fn check(&mut self, kind: &DeviceKind) -> Result<(), ConnectError> {
        let needed = kind.queue_count();
        // Without MQ the back-end can't say; we have to trust it.
        if let Some(served) = self.queue_num.filter(|&served| served < needed as u64) {
            return Err(ConnectError::Queues { served, needed });
        }
        if let DeviceKind::Vsock { guest_cid } = *kind {
            if self.protocol.contains(VhostUserProtocolFeatures::CONFIG) {
                let (_, config) = self
                    .vu
                    .get_config(0, 8, VhostUserConfigFlags::empty(), &[0u8; 8])
                    .map_err(|e| ConnectError::Handshake(request_error("GET_CONFIG", e)))?;
                let backend = config.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes);
                if backend != guest_cid {
                    return Err(ConnectError::Cid { backend, configured: guest_cid });
                }
            }
        }
        Ok(())
    }

    /// The socket, to watch for the back-end hanging up.
    pub fn socket(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd is the vhost front-end's socket, open for as long
        // as `self.vu` (which owns it) lives, and the borrow is tied to `self`.
        unsafe { BorrowedFd::borrow_raw(self.vu.as_raw_fd()) }
    }

    /// Without `REPLY_ACK`, set-up requests are fire-and-forget; a request
    /// with a reply behind them proves the back-end took them all (it
    /// handles requests in order and hangs up on one it refuses).
    fn barrier(&self) -> Result<(), BackendError> {
        if self.protocol.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            return Ok(());
        }
        self.vu.get_features().map(drop).map_err(|e| request_error("GET_FEATURES", e))
    }
}

impl std::fmt::Debug for Frontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frontend")
            .field("socket", &self.vu.as_raw_fd())
            .field("features", &format_args!("{:#x}", self.features))
            .field("protocol", &self.protocol)
            .field("queue_num", &self.queue_num)
            .field("started", &self.started)
            .finish()
    }
}

impl AsFd for Frontend {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket()
    }
}

impl Backend for Frontend {
    fn start(
        &mut self,
        features: u64,
        mem: &GuestMemoryMmap,
        vrings: &[VringPlan],
        kicks: &[EventFd],
        call: &EventFd,
    ) -> Result<(), BackendError> {
        self.vu.set_features(features).map_err(|e| request_error("SET_FEATURES", e))?;
        let regions = mem
            .iter()
            .map(VhostUserMemoryRegionInfo::from_guest_region)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| request_error("SET_MEM_TABLE", e))?;
        self.vu.set_mem_table(&regions).map_err(|e| request_error("SET_MEM_TABLE", e))?;
        let enable = features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0;
        for vring in vrings {
            let kick =
                kicks.get(vring.index).ok_or_else(|| request_error("SET_VRING_KICK", vhost::Error::InvalidQueue))?;
            self.start_vring(vring, kick, call, enable)?;
        }
        self.barrier()
    }

    fn stop(&mut self) -> Result<(), BackendError> {
        let enabled = self.extra_features() != 0;
        for index in std::mem::take(&mut self.started) {
            if enabled {
                self.vu.set_vring_enable(index, false).map_err(|e| request_error("SET_VRING_ENABLE", e))?;
            }
            // Stops the ring; the reply (where it stopped) doubles as a barrier.
            self.vu.get_vring_base(index).map_err(|e| request_error("GET_VRING_BASE", e))?;
        }
        Ok(())
    }
}

impl Frontend {
    fn start_vring(
        &mut self,
        vring: &VringPlan,
        kick: &EventFd,
        call: &EventFd,
        enable: bool,
    ) -> Result<(), BackendError> {
        let index = vring.index;
        let addrs = VringConfigData {
            queue_max_size: QUEUE_MAX,
            queue_size: vring.size,
            flags: 0,
            desc_table_addr: vring.desc,
            used_ring_addr: vring.used,
            avail_ring_addr: vring.avail,
            log_addr: None,
        };
        self.vu.set_vring_num(index, vring.size).map_err(|e| request_error("SET_VRING_NUM", e))?;
        self.vu.set_vring_addr(index, &addrs).map_err(|e| request_error("SET_VRING_ADDR", e))?;
        self.vu.set_vring_base(index, vring.next_avail).map_err(|e| request_error("SET_VRING_BASE", e))?;
        self.vu.set_vring_call(index, call).map_err(|e| request_error("SET_VRING_CALL", e))?;
        self.vu.set_vring_kick(index, kick).map_err(|e| request_error("SET_VRING_KICK", e))?;
        // From the kick on the back-end may use the ring; stop it on reset.
        self.started.push(index);
        if enable {
            self.vu.set_vring_enable(index, true).map_err(|e| request_error("SET_VRING_ENABLE", e))?;
        }
        Ok(())
    }
}

fn request_error(request: &'static str, e: vhost::Error) -> BackendError {
    BackendError { request, source: Box::new(e) }
}
