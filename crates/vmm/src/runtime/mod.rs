//! Running a built microVM: one thread per vCPU plus a VMM thread.
//!
//! - **vCPU threads** (`moat-vcpu<N>`) each loop in [`crate::vcpu::run`]:
//!   enter the guest, emulate the device access it exited for, repeat.
//! - **The VMM thread** (`moat-vmm`) serves the control socket, streams
//!   serial output and enforces deadlines ([`event_loop`]).
//! - The caller's thread only spawns and joins them (a scoped run), so the
//!   threads borrow the VM and nothing outlives [`run`].
//!
//! Pause, stop and deadlines go through [`Control`]: the VMM thread sets
//! what it wants and kicks the vCPU threads out of `KVM_RUN` (see
//! [`crate::kick`]); they park in [`Control::gate`] or leave. The first
//! vCPU to see the guest stop (exit port, reset, triple fault) ends the run
//! for all. With seccomp on, each thread confines itself before it touches
//! guest input (see [`crate::seccomp`]).

mod control;
mod event_loop;
mod stats;

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::thread;
use std::time::{Duration, Instant};

use kvm_ioctls::VcpuFd;

pub(crate) use self::control::Control;
pub use self::control::ControlError;
use self::event_loop::EventLoop;
pub(crate) use self::stats::open_statm;
use self::stats::MemoryProbe;
use crate::api::server::Server;
use crate::device_manager::{DeviceManager, UnmappedAccesses};
use crate::devices::serial::SerialStats;
use crate::kick;
use crate::memory::GuestMemory;
use crate::seccomp::{self, Thread};
use crate::vcpu::{self, RunError, RunOutcome};

/// How long a guest asked to shut down gets by default.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How [`crate::MicroVm::run_with`] runs the VM.
pub struct RunOptions {
    /// Serve the control API (see [`crate::api`]) on this socket.
    pub api: Option<UnixListener>,
    /// Write serial output here as the guest produces it (every 20 ms);
    /// `None` keeps it buffered for [`crate::MicroVm::take_serial_output`].
    pub serial_out: Option<Box<dyn Write + Send>>,
    /// How long the guest gets to power off after a `shutdown` request.
    pub shutdown_grace: Duration,
    /// Confine the vCPU and VMM threads with seccomp filters (on by default).
    pub seccomp: bool,
    /// Hold the vCPUs before their first guest entry until a controller
    /// says `start` (or `resume`): the VM is built and serving, not running.
    pub start_paused: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self { api: None, serial_out: None, shutdown_grace: DEFAULT_SHUTDOWN_GRACE, seccomp: true, start_paused: false }
    }
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("api", &self.api)
            .field("serial_out", &self.serial_out.as_ref().map(|_| "…"))
            .field("shutdown_grace", &self.shutdown_grace)
            .field("seccomp", &self.seccomp)
            .field("start_paused", &self.start_paused)
            .finish()
    }
}

/// What one run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    pub outcome: RunOutcome,
    pub elapsed: Duration,
    pub unmapped: UnmappedAccesses,
    pub serial: SerialStats,
}

/// The parts of a built VM a run needs.
#[derive(Debug)]
pub(crate) struct RunParts<'a> {
    pub(crate) vcpus: &'a mut [VcpuFd],
    pub(crate) devices: &'a DeviceManager,
    pub(crate) memory: &'a GuestMemory,
    pub(crate) timeout: Duration,
    /// `/proc/self/statm`, opened at build time (see [`stats::open_statm`]).
    pub(crate) statm: Option<std::fs::File>,
}

/// Runs the VM until the guest stops, the timeout passes or a controller
/// stops it.
pub(crate) fn run(vm: RunParts<'_>, options: RunOptions) -> Result<RunReport, RunError> {
    kick::install_handler().map_err(RunError::Start)?;
    // Compiled here, before any thread starts: installing is then one
    // syscall, with nothing to allocate.
    let filters = if options.seccomp {
        let compile = |thread| seccomp::filter(thread).map_err(|e| RunError::Seccomp(thread, e));
        Some((compile(Thread::Vcpu)?, compile(Thread::Vmm)?))
    } else {
        None
    };
    let control = Control::new(vm.vcpus.len(), options.start_paused).map_err(RunError::Start)?;
    let api = options.api.map(Server::new).transpose().map_err(RunError::Start)?;
    let started = Instant::now();
    let event_loop = EventLoop {
        control: &control,
        devices: vm.devices,
        memory: MemoryProbe::new(vm.memory, vm.statm),
        api,
        serial_out: options.serial_out,
        started,
        deadline: started.checked_add(vm.timeout),
        shutdown_grace: options.shutdown_grace,
        shutdown_deadline: None,
    };

    thread::scope(|scope| {
        let control = &control;
        for (index, vcpu) in (0u8..).zip(vm.vcpus.iter_mut()) {
            let filter = filters.as_ref().map(|(vcpu, _)| vcpu);
            let devices = vm.devices;
            let body = move || {
                control.vcpu_started(usize::from(index));
                let end = match filter.map(seccomp::apply) {
                    Some(Err(e)) => Some(Err(RunError::Seccomp(Thread::Vcpu, e))),
                    _ => vcpu::run(vcpu, index, devices, control),
                };
                control.vcpu_exited(usize::from(index), end);
            };
            let name = format!("moat-vcpu{index}");
            if let Err(e) = thread::Builder::new().name(name).spawn_scoped(scope, body) {
                control.finish(Err(RunError::Start(e)));
                break;
            }
        }
        let filter = filters.as_ref().map(|(_, vmm)| vmm);
        let body = move || match filter.map(seccomp::apply) {
            Some(Err(e)) => control.finish(Err(RunError::Seccomp(Thread::Vmm, e))),
            _ => event_loop.run(),
        };
        if let Err(e) = thread::Builder::new().name("moat-vmm".into()).spawn_scoped(scope, body) {
            control.finish(Err(RunError::Start(e)));
        }
    });

    let outcome = control.take_end().unwrap_or(Ok(RunOutcome::Stopped))?;
    let serial = vm.devices.serial().lock().unwrap_or_else(std::sync::PoisonError::into_inner).stats();
    Ok(RunReport { outcome, elapsed: started.elapsed(), unmapped: vm.devices.unmapped(), serial })
}
