//! The per-VM supervisor process.
//!
//! Each running sandbox has one supervisor: a process of its own (started with
//! `setsid`, so it outlives the daemon that spawned it) that owns the VM monitor
//! and its device back-ends (virtiofsd per share, the vsock backend), publishes
//! the VM's status in its run folder, bounds the console log, and on SIGTERM asks
//! the guest to power off. Its children die with it (`PR_SET_PDEATHSIG`; a
//! monitor that changes its user, through the VM's PID namespace: [`pid_ns`]),
//! so killing a supervisor with SIGKILL never leaves a VM running unseen. It and
//! every child work in `/`, never in a workspace ([`supervise_process`]).

mod console;
mod entry;
mod pid_ns;
mod run;
mod share;
mod status;
mod stderr_tail;

pub use console::BoundedLog;
pub use entry::supervise_process;
pub use run::{supervise, SuperviseError, READY_MARKER};
pub use status::{write_atomic, BootTimes, Phase, RunDir, Status};
