//! The vCPU run loop: enter the guest, dispatch its exits, decide when the
//! run is over. Guest behaviour never panics the VMM: exits we do not handle
//! become [`RunError`]s.

use std::io;
use std::time::Instant;

use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::arch::kvm_err;
use crate::device_manager::{DeviceManager, GuestRequest};

/// Why a run ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// The guest wrote this code to the debug-exit port.
    Exited(u8),
    /// The guest asked for a reset (i8042); resets are not emulated yet.
    Reset,
    /// KVM reported HLT. With the in-kernel irqchip (our set-up) KVM handles
    /// HLT itself and the vCPU sleeps until an interrupt, so a guest halting
    /// with interrupts off ends at the deadline as `TimedOut` instead.
    Halted,
    /// Triple fault or similar: KVM reported a shutdown.
    Shutdown,
    /// The run's deadline passed first.
    TimedOut,
}

/// The run stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("KVM_RUN failed")]
    Kvm(#[source] io::Error),
    #[error("KVM could not enter the guest (hardware reason {0:#x})")]
    FailEntry(u64),
    #[error(
        "KVM reported internal error {suberror} at RIP {rip:#x} \
         (1: an instruction it cannot emulate; data {data:x?})"
    )]
    InternalError { suberror: u32, rip: u64, data: Vec<u64> },
    #[error("unhandled vCPU exit: {0}")]
    UnhandledExit(String),
    #[error("could not arm the run deadline")]
    Watchdog(#[source] io::Error),
}

/// Runs `vcpu` until the guest stops, asks to stop, or `deadline` passes.
pub(crate) fn run(vcpu: &mut VcpuFd, devices: &mut DeviceManager, deadline: Instant) -> Result<RunOutcome, RunError> {
    loop {
        if Instant::now() >= deadline {
            return Ok(RunOutcome::TimedOut);
        }
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
            Ok(VcpuExit::Hlt) => return Ok(RunOutcome::Halted),
            Ok(VcpuExit::Shutdown) => return Ok(RunOutcome::Shutdown),
            Ok(VcpuExit::Intr) => None,
            Ok(VcpuExit::FailEntry(reason, _cpu)) => return Err(RunError::FailEntry(reason)),
            Ok(VcpuExit::InternalError) => return Err(internal_error(vcpu)),
            Ok(other) => return Err(RunError::UnhandledExit(format!("{other:?}"))),
            Err(e) if matches!(e.errno(), libc::EINTR | libc::EAGAIN) => None,
            Err(e) => return Err(RunError::Kvm(kvm_err(e))),
        };
        match request {
            None => {}
            Some(GuestRequest::Exit(code)) => return Ok(RunOutcome::Exited(code)),
            Some(GuestRequest::Reset) => return Ok(RunOutcome::Reset),
        }
    }
}

/// What KVM says about its internal error, and where the guest was.
fn internal_error(vcpu: &mut VcpuFd) -> RunError {
    let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(u64::MAX);
    let run = vcpu.get_kvm_run();
    // SAFETY: KVM_RUN just returned with exit reason KVM_EXIT_INTERNAL_ERROR
    // (that is how kvm-ioctls produced `VcpuExit::InternalError`), so KVM
    // filled the `internal` member of the exit union; it is plain data.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let ndata = (internal.ndata as usize).min(internal.data.len());
    RunError::InternalError { suberror: internal.suberror, rip, data: internal.data[..ndata].to_vec() }
}
