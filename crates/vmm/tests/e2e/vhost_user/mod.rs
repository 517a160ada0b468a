//! vhost-user devices against real back-ends — `virtiofsd` and `moat-vsock`
//! as separate processes — driven through the transport's registers by the
//! in-process driver, as a guest driver would. There is no vCPU here, so a
//! kick traps into the transport (as it does when KVM has no ioeventfd for
//! it) and reaches the back-end through the queue's kick eventfd; the
//! back-end's interrupts land on the device's irqfd, which the driver reads.
//! `kvm.rs` runs a freestanding guest through /dev/kvm instead.

mod fs;
mod kvm;
mod vsock;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use moat_vmm::devices::virtio::testing::Driver;
use moat_vmm::devices::virtio::vhost_user::{Frontend, VhostUser};
use moat_vmm::devices::virtio::{regs, status};

use crate::util::find_tool;

/// Ring feature bit the in-process driver doesn't implement (it never
/// writes `used_event`), so it never accepts it.
const EVENT_IDX: u64 = 1 << 29;
/// Entries per queue.
const QUEUE_SIZE: u16 = 64;

/// A back-end process, killed and reaped when dropped.
pub struct Backend {
    child: Child,
    pub socket: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Backend {
    /// Runs `program` with `args`, then waits for it to listen on `socket`.
    fn spawn(program: &Path, args: &[&std::ffi::OsStr], socket: PathBuf, dir: tempfile::TempDir) -> Self {
        let child = Command::new(program).args(args).stdout(Stdio::null()).spawn().unwrap();
        let mut backend = Self { child, socket, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !backend.socket.exists() {
            assert!(backend.child.try_wait().unwrap().is_none(), "{} exited before listening", program.display());
            assert!(Instant::now() < deadline, "{} never listened on {}", program.display(), backend.socket.display());
            std::thread::sleep(Duration::from_millis(5));
        }
        backend
    }

    /// SIGKILLs the back-end and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Accepts every offered feature but `EVENT_IDX`, sets up `queues` queues
/// and sets `DRIVER_OK`; asserts the device went live.
fn start(
    d: &mut Driver<'_, VhostUser<Frontend>>,
    queues: u16,
    before_driver_ok: impl FnOnce(&mut Driver<'_, VhostUser<Frontend>>),
) {
    let features = d.device_features() & !EVENT_IDX;
    assert_ne!(d.negotiate(features) & status::FEATURES_OK, 0, "features refused");
    for q in 0..queues {
        d.select_queue(q);
        d.setup_queue(QUEUE_SIZE);
    }
    before_driver_ok(d);
    let after = d.start();
    assert_eq!(
        after & (status::DRIVER_OK | status::DEVICE_NEEDS_RESET),
        status::DRIVER_OK,
        "the back-end did not start: {:?}",
        d.transport.device().last_error()
    );
}

/// Waits up to 5 s for the device to return a buffer on queue `queue`;
/// returns it and how many interrupts the back-end signalled meanwhile.
fn wait_used(d: &mut Driver<'_, VhostUser<Frontend>>, queue: u16) -> ((u32, u32), u64) {
    d.select_queue(queue);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut interrupts = 0;
    loop {
        interrupts += d.wait_interrupt(Duration::from_millis(20));
        if let Some(used) = d.pop_used() {
            if interrupts == 0 {
                // The signal may trail the used-ring update by a moment.
                interrupts += d.wait_interrupt(Duration::from_secs(1));
            }
            return (used, interrupts);
        }
        assert!(Instant::now() < deadline, "queue {queue}: nothing came back; {:?}", d.transport.device().stats());
    }
}

/// The `InterruptStatus` register: the back-end's interrupts show as used
/// buffers while the device is live.
fn interrupt_status(d: &mut Driver<'_, VhostUser<Frontend>>) -> u32 {
    d.reg(regs::INTERRUPT_STATUS)
}

fn tool(test: &str, program: &str, env: &str) -> Option<PathBuf> {
    find_tool(test, program, env)
}
