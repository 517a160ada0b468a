//! Attaching vhost-user devices: take the back-end into service, put the
//! device on the MMIO bus with its irqfd, turn each queue's kick into an
//! ioeventfd on the window's `QueueNotify` register, and watch the back-end's
//! socket for a hang-up.

use std::sync::{Arc, Mutex, PoisonError};

use super::{AttachError, DeviceManager, MmioSlot};
use crate::config::{FsConfig, VsockConfig};
use crate::devices::virtio::vhost_user::{BackendWatch, Frontend, VhostUser};
use crate::devices::virtio::{regs, MmioTransport};
use crate::memory::GuestMemory;
use crate::vm::Vm;

/// A vhost-user device behind its transport.
pub type VhostUserTransport = MmioTransport<VhostUser<Frontend>>;

/// One attached vhost-user device.
#[derive(Debug)]
pub struct VhostUserHandle {
    slot: MmioSlot,
    transport: Arc<Mutex<VhostUserTransport>>,
    _watch: BackendWatch,
}

impl VhostUserHandle {
    /// Where the device sits.
    pub fn slot(&self) -> MmioSlot {
        self.slot
    }

    /// The device behind its transport.
    pub fn transport(&self) -> &Arc<Mutex<VhostUserTransport>> {
        &self.transport
    }
}

impl DeviceManager {
    /// Attaches a virtio-fs device served by the back-end on `fs.socket`.
    pub(crate) fn attach_fs(&mut self, vm: &Vm, memory: &GuestMemory, fs: &FsConfig) -> Result<MmioSlot, AttachError> {
        let device = VhostUser::connect_fs(&fs.socket, &fs.tag)?;
        self.attach_vhost_user(vm, memory, device)
    }

    /// Attaches a virtio-vsock device served by the back-end on `vsock.socket`.
    pub(crate) fn attach_vsock(
        &mut self,
        vm: &Vm,
        memory: &GuestMemory,
        vsock: &VsockConfig,
    ) -> Result<MmioSlot, AttachError> {
        let device = VhostUser::connect_vsock(&vsock.socket, vsock.guest_cid)?;
        self.attach_vhost_user(vm, memory, device)
    }

    /// The attached vhost-user devices, in attach order.
    pub fn vhost_users(&self) -> &[VhostUserHandle] {
        &self.vhost_users
    }

    fn attach_vhost_user(
        &mut self,
        vm: &Vm,
        memory: &GuestMemory,
        device: VhostUser<Frontend>,
    ) -> Result<MmioSlot, AttachError> {
        let transport = Arc::new(Mutex::new(MmioTransport::new(device, memory).map_err(AttachError::Transport)?));
        let slot = self.attach_virtio(vm, transport.clone())?;
        let locked = transport.lock().unwrap_or_else(PoisonError::into_inner);
        for (index, kick) in locked.device().kicks().iter().enumerate() {
            let datamatch =
                u32::try_from(index).map_err(|e| AttachError::Ioeventfd(index, std::io::Error::other(e)))?;
            vm.register_ioevent(kick, slot.base + regs::QUEUE_NOTIFY, datamatch)
                .map_err(|e| AttachError::Ioeventfd(index, e))?;
        }
        let watch = BackendWatch::spawn(locked.device().backend().socket(), Arc::downgrade(&transport))
            .map_err(AttachError::Watch)?;
        drop(locked);
        self.vhost_users.push(VhostUserHandle { slot, transport, _watch: watch });
        Ok(slot)
    }
}
