//! Wiring a vhost-user device to the transport and to its back-end's socket.
//!
//! Kicks: each queue has an eventfd the back-end waits on. The device
//! manager registers it with KVM as an ioeventfd on the window's
//! `QueueNotify` register, matching the queue's index, so a guest kick goes
//! from the vCPU straight to the back-end without leaving the kernel. A
//! notify KVM doesn't match still traps, and [`VirtioDevice::process_queue`]
//! writes the same eventfd.
//!
//! Interrupts: the back-end writes the transport's irqfd itself, so the
//! device reports its interrupts as out of band (see
//! [`VirtioDevice::interrupts_out_of_band`]).
//!
//! Hang-ups: [`BackendWatch`] is a thread that sleeps in `poll` on the
//! back-end's socket and, when the back-end goes, marks the device lost and
//! sets `DEVICE_NEEDS_RESET` through the transport. The VMM keeps running.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Mutex, PoisonError, Weak};
use std::thread;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::device::{Backend, VhostUser};
use crate::devices::virtio::{MmioTransport, VirtioDevice};
use crate::seccomp::{self, Thread};

impl<B: Backend> VirtioDevice for VhostUser<B> {
    fn device_type(&self) -> u32 {
        self.kind().device_type()
    }

    fn features(&self) -> u64 {
        self.offered()
    }

    fn queue_max_sizes(&self) -> &[u16] {
        self.max_sizes()
    }

    fn config(&self) -> &[u8] {
        VhostUser::config(self)
    }

    /// The back-end owns the rings; a trapped kick is passed on to it.
    fn process_queue(&mut self, index: usize, _queue: &mut Queue, _mem: &GuestMemoryMmap) -> bool {
        self.kick(index);
        false
    }

    fn activate(&mut self, features: u64) {
        self.set_acked(features);
    }

    fn reset(&mut self) {
        self.stop();
    }

    fn hand_off_queues(&mut self, queues: &[Queue], mem: &GuestMemoryMmap, line: &EventFd) -> bool {
        self.start(queues, mem, line)
    }

    fn interrupts_out_of_band(&self) -> bool {
        true
    }
}

/// Watches a back-end's socket for a hang-up; stops watching when dropped.
#[derive(Debug)]
pub struct BackendWatch {
    stop: EventFd,
}

impl BackendWatch {
    /// Starts watching `socket`, the connection to the back-end of the
    /// device behind `transport`. The thread holds only a weak reference:
    /// a dropped device just ends it.
    pub fn spawn<B: Backend + 'static>(
        socket: BorrowedFd<'_>,
        transport: Weak<Mutex<MmioTransport<VhostUser<B>>>>,
    ) -> io::Result<Self> {
        // Our own handle on the socket, so the thread never polls an fd
        // number that was closed and reused.
        let socket = socket.try_clone_to_owned()?;
        let stop = EventFd::new(EFD_NONBLOCK)?;
        let stop_thread = stop.try_clone()?;
        // Compiled here, so a filter that can't be built fails the attach.
        let filter = seccomp::filter(Thread::DeviceWatch).map_err(io::Error::other)?;
        thread::Builder::new().name("vhost-user-watch".into()).spawn(move || {
            if let Err(e) = seccomp::apply(&filter) {
                // Unconfined, a watch is still only a watch; say so and go on.
                eprintln!("moat-vmm: vhost-user watch runs without its seccomp filter: {e}");
            }
            if wait_for_hang_up(&socket, &stop_thread) {
                if let Some(transport) = transport.upgrade() {
                    let mut transport = transport.lock().unwrap_or_else(PoisonError::into_inner);
                    transport.device_mut().backend_lost("the back-end closed the vhost-user socket");
                    transport.request_reset();
                }
            }
        })?;
        Ok(Self { stop })
    }
}

impl Drop for BackendWatch {
    fn drop(&mut self) {
        // Not joined: the thread may be the one dropping the last transport
        // reference. It exits on its next wake-up, which this is.
        let _ = self.stop.write(1);
    }
}

/// Sleeps until the peer of `socket` hangs up (`true`) or `stop` is
/// signalled (`false`).
fn wait_for_hang_up(socket: &OwnedFd, stop: &EventFd) -> bool {
    let mut fds = [
        libc::pollfd { fd: socket.as_fd().as_raw_fd(), events: libc::POLLRDHUP, revents: 0 },
        libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two pollfds, its length is passed
        // with it, and both fds stay open for the call (`socket` and `stop`
        // are borrowed for the whole function).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // poll itself failed: nothing to watch with; treat as stop.
            return false;
        }
        if fds[1].revents != 0 {
            return false;
        }
        if fds[0].revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            return true;
        }
    }
}
