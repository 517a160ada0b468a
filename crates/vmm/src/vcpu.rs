//! The vCPU run loop, one per vCPU thread: ask the run's [`Control`]
//! whether to enter the guest, enter it, dispatch its exits, and report how
//! the run ended. Guest behaviour never panics the VMM: exits we do not
//! handle become [`RunError`]s.

use std::io;

use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::arch::kvm_err;
use crate::device_manager::{DeviceManager, GuestRequest};
use crate::kick::{self, Kickable};
use crate::runtime::Control;

/// Why a run ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// The guest wrote this code to the debug-exit port.
    Exited(u8),
    /// The guest asked for a reset (i8042); resets are not emulated, so a
    /// reset is how a guest powers off (Linux with `reboot=k`).
    Reset,
    /// KVM reported HLT. With the in-kernel irqchip (our set-up) KVM handles
    /// HLT itself and the vCPU sleeps until an interrupt, so a guest halting
    /// with interrupts off ends at the deadline as `TimedOut` instead.
    Halted,
    /// Triple fault or similar: KVM reported a shutdown.
    Shutdown,
    /// The run's deadline passed first.
    TimedOut,
    /// The controller stopped the VM: a `stop` request, or a `shutdown`
    /// the guest did not answer within its grace period.
    Stopped,
}

/// The run stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("KVM_RUN failed on vCPU {0}")]
    Kvm(u8, #[source] io::Error),
    #[error("KVM could not enter the guest on vCPU {0} (hardware reason {1:#x})")]
    FailEntry(u8, u64),
    #[error(
        "KVM reported internal error {suberror} on vCPU {vcpu} at RIP {rip:#x} \
         (1: an instruction it cannot emulate; data {data:x?})"
    )]
    InternalError { vcpu: u8, suberror: u32, rip: u64, data: Vec<u64> },
    #[error("unhandled exit on vCPU {0}: {1}")]
    UnhandledExit(u8, String),
    #[error("could not start the run")]
    Start(#[source] io::Error),
    #[error("could not confine the {0:?} thread")]
    Seccomp(crate::seccomp::Thread, #[source] crate::seccomp::SeccompError),
}

/// Runs vCPU `index` until the guest stops or asks to stop, or `control`
/// says to stop; returns `None` in that last case.
pub(crate) fn run(
    vcpu: &mut VcpuFd,
    index: u8,
    devices: &DeviceManager,
    control: &Control,
) -> Option<Result<RunOutcome, RunError>> {
    // SAFETY: `vcpu` is borrowed for this whole function and `_kickable`
    // is dropped when the function returns, before that borrow ends.
    let _kickable = unsafe { Kickable::new(vcpu) };
    loop {
        // Clear any earlier kick *before* looking at the state: a kick that
        // lands after the check makes the next KVM_RUN return at once.
        kick::rearm(vcpu);
        if !control.gate() {
            return None;
        }
        match step(vcpu, index, devices) {
            Ok(None) => {}
            Ok(Some(outcome)) => return Some(Ok(outcome)),
            Err(e) => return Some(Err(e)),
        }
    }
}

/// One guest entry and the exit it ends with.
fn step(vcpu: &mut VcpuFd, index: u8, devices: &DeviceManager) -> Result<Option<RunOutcome>, RunError> {
    let request = match vcpu.run() {
        Ok(VcpuExit::IoIn(port, data)) => {
            devices.pio_read(port, data);
            None
        }
        Ok(VcpuExit::IoOut(port, data)) => devices.pio_write(port, data),
        Ok(VcpuExit::MmioRead(addr, data)) => {
            devices.mmio_read(addr, data);
            None
        }
        Ok(VcpuExit::MmioWrite(addr, data)) => devices.mmio_write(addr, data),
        Ok(VcpuExit::Hlt) => return Ok(Some(RunOutcome::Halted)),
        Ok(VcpuExit::Shutdown) => return Ok(Some(RunOutcome::Shutdown)),
        Ok(VcpuExit::Intr) => None,
        Ok(VcpuExit::FailEntry(reason, _cpu)) => return Err(RunError::FailEntry(index, reason)),
        Ok(VcpuExit::InternalError) => return Err(internal_error(vcpu, index)),
        Ok(other) => return Err(RunError::UnhandledExit(index, format!("{other:?}"))),
        // A kick, or a signal meant for someone else: back to the gate.
        Err(e) if matches!(e.errno(), libc::EINTR | libc::EAGAIN) => None,
        Err(e) => return Err(RunError::Kvm(index, kvm_err(e))),
    };
    Ok(match request {
        None => None,
        Some(GuestRequest::Exit(code)) => Some(RunOutcome::Exited(code)),
        Some(GuestRequest::Reset) => Some(RunOutcome::Reset),
    })
}

/// What KVM says about its internal error, and where the guest was.
fn internal_error(vcpu: &mut VcpuFd, index: u8) -> RunError {
    let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(u64::MAX);
    let run = vcpu.get_kvm_run();
    // SAFETY: KVM_RUN just returned with exit reason KVM_EXIT_INTERNAL_ERROR
    // (that is how kvm-ioctls produced `VcpuExit::InternalError`), so KVM
    // filled the `internal` member of the exit union; it is plain data.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let ndata = (internal.ndata as usize).min(internal.data.len());
    RunError::InternalError { vcpu: index, suberror: internal.suberror, rip, data: internal.data[..ndata].to_vec() }
}
