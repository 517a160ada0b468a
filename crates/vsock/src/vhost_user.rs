//! The vhost-user transport: [`VsockDevice`] behind rust-vmm's
//! `vhost-user-backend`, serving one frontend (QEMU's
//! `vhost-user-vsock-device`) and returning when it disconnects.
//!
//! Threads: the caller's (accepts the frontend, then waits for it to go), the
//! vhost-user request thread (`vhost-user-backend`'s), and one epoll worker
//! that runs every queue and host socket of the device.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Error as VhostUserError, Listener};
use vhost_user_backend::{Error as DaemonError, VhostUserBackend, VhostUserDaemon, VringRwLock, VringT};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier};

use crate::device::{DeviceConfig, DeviceError, VsockDevice};

const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
/// The event queue (transport resets for migration) is never used.
const NUM_QUEUES: usize = 3;
/// Token of the device's host-socket epoll in the worker's epoll; tokens up to
/// `NUM_QUEUES` belong to `vhost-user-backend`.
const HOST_EVENT: u16 = NUM_QUEUES as u16 + 1;
const MAX_QUEUE_SIZE: usize = 1024;

/// The command line's worth of configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The guest's CID.
    pub guest_cid: u64,
    /// The vhost-user socket to listen on for the frontend.
    pub socket: PathBuf,
    /// The hybrid vsock socket for host processes.
    pub uds_path: PathBuf,
}

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The device could not start.
    #[error("cannot start the vsock device")]
    Device(#[from] DeviceError),
    /// The vhost-user side failed.
    #[error("vhost-user: {0}")]
    VhostUser(String),
    /// The device's host events could not be wired to the worker thread.
    #[error("cannot watch the host sockets")]
    Watch(#[source] io::Error),
}

/// Listens on `config.socket`, serves the first frontend that connects and
/// returns when it disconnects.
pub fn serve(config: &Config) -> Result<(), ServeError> {
    let device = VsockDevice::new(&DeviceConfig::new(config.guest_cid, &config.uds_path))?;
    let host_fd = device.host_fd();
    let backend = Arc::new(Backend {
        config_space: device.config_space(),
        state: Mutex::new(State { device, mem: GuestMemoryAtomic::new(GuestMemoryMmap::new()) }),
    });
    let vhost_err = |e: &dyn std::fmt::Display| ServeError::VhostUser(e.to_string());
    let mut daemon = VhostUserDaemon::new("moat-vsock".into(), backend, GuestMemoryAtomic::new(GuestMemoryMmap::new()))
        .map_err(|e| vhost_err(&e))?;
    let workers = daemon.get_epoll_handlers();
    for w in &workers {
        w.register_listener(host_fd, EventSet::IN, u64::from(HOST_EVENT)).map_err(ServeError::Watch)?;
    }
    let mut listener = Listener::new(&config.socket, true).map_err(|e| vhost_err(&e))?;
    let served = daemon.start(&mut listener).and_then(|()| daemon.wait());
    for w in &workers {
        w.send_exit_event();
    }
    remove_socket(&config.socket);
    match served {
        // The frontend went away (QEMU exited, or was killed mid-message): the normal end.
        Ok(()) | Err(DaemonError::HandleRequest(VhostUserError::Disconnected | VhostUserError::PartialMessage)) => {
            Ok(())
        }
        Err(e) => Err(vhost_err(&e)),
    }
}

/// Removes a socket file this process created (never anything else).
pub fn remove_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

struct Backend {
    config_space: [u8; 8],
    state: Mutex<State>,
}

struct State {
    device: VsockDevice,
    mem: GuestMemoryAtomic<GuestMemoryMmap>,
}

impl Backend {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl VhostUserBackend for Backend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX) | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // CONFIG: QEMU reads the guest CID with GET_CONFIG. MQ: QEMU asks for the queue count.
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ
    }

    fn reset_device(&self) {
        self.state().device.reset();
    }

    fn set_event_idx(&self, _enabled: bool) {
        // vhost-user-backend sets it on the queues, and the queue walk honours it.
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let (offset, size) = (offset as usize, size as usize);
        match offset.checked_add(size) {
            Some(end) if end <= self.config_space.len() => self.config_space[offset..end].to_vec(),
            _ => Vec::new(),
        }
    }

    fn update_memory(&self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        self.state().mem = mem;
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()
    }

    fn handle_event(&self, event: u16, _set: EventSet, vrings: &[VringRwLock], _thread: usize) -> io::Result<()> {
        let mut state = self.state();
        let State { device, mem } = &mut *state;
        let mem = mem.memory();
        match event {
            TX_QUEUE => with_queue(vrings, TX_QUEUE, |q| device.process_tx(q, &*mem)),
            HOST_EVENT => device.handle_host_events(),
            _ => {}
        }
        // Anything above may have made packets due, and an RX kick means buffers.
        with_queue(vrings, RX_QUEUE, |q| device.process_rx(q, &*mem));
        Ok(())
    }
}

/// Runs `f` on a started, enabled queue and interrupts the guest if it says so.
fn with_queue(vrings: &[VringRwLock], index: u16, f: impl FnOnce(&mut Queue) -> bool) {
    let Some(vring) = vrings.get(usize::from(index)) else { return };
    let mut vring = vring.get_mut();
    if !vring.is_enabled() || !vring.get_queue().ready() {
        return;
    }
    if f(vring.get_queue_mut()) {
        let _ = vring.signal_used_queue();
    }
}
