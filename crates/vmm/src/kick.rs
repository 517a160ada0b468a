//! Kicking a vCPU thread out of `KVM_RUN`, without races.
//!
//! Each vCPU thread publishes its `kvm_run` page in a thread-local. A kick
//! is a real-time signal sent to that thread; the handler sets
//! `immediate_exit` in the page. So wherever the signal lands:
//!
//! - inside `KVM_RUN`: the ioctl returns `EINTR`;
//! - between the run loop's state check and the ioctl: `KVM_RUN` sees
//!   `immediate_exit` and returns `EINTR` at once instead of entering the
//!   guest (the loop clears the flag *before* it checks its state);
//! - anywhere else: the loop's next state check sees what the kicker set.
//!
//! Firecracker and cloud-hypervisor kick the same way.

use std::cell::Cell;
use std::io;
use std::ptr;
use std::sync::Once;

use kvm_bindings::kvm_run;
use kvm_ioctls::VcpuFd;

thread_local! {
    /// This thread's vCPU `kvm_run` page, or null. `const` and without a
    /// destructor, so the signal handler reads it without lazy set-up.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(ptr::null_mut()) };
}

/// The real-time signal used to kick vCPU threads.
fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: a non-null pointer was published by `Kickable::new` on this
        // thread and points into a vCPU's `kvm_run` mapping; `new`'s caller
        // keeps that vCPU (and so the mapping) alive until the guard clears
        // the pointer. The field is a plain byte KVM reads
        // on entry; a volatile write keeps it from being elided.
        unsafe { ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

/// Installs the kick handler (once per process).
pub(crate) fn install_handler() -> io::Result<()> {
    static INSTALL: Once = Once::new();
    let mut result = Ok(());
    INSTALL.call_once(|| {
        result = vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()));
    });
    result
}

/// While alive, kicks sent to the current thread make `vcpu`'s next or
/// current `KVM_RUN` return `EINTR`.
#[derive(Debug)]
pub(crate) struct Kickable {
    /// `!Send`: the thread-local belongs to the thread that created this.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Kickable {
    /// Publishes `vcpu`'s `kvm_run` page to this thread's kick handler.
    ///
    /// # Safety
    ///
    /// `vcpu` must outlive the returned guard (drop the guard first): the
    /// handler writes into its `kvm_run` mapping until then.
    pub(crate) unsafe fn new(vcpu: &mut VcpuFd) -> Self {
        let run: *mut kvm_run = vcpu.get_kvm_run();
        KVM_RUN.with(|cell| cell.set(run));
        Self { _not_send: std::marker::PhantomData }
    }
}

impl Drop for Kickable {
    fn drop(&mut self) {
        KVM_RUN.with(|cell| cell.set(ptr::null_mut()));
    }
}

/// Clears a previous kick; call before deciding whether to enter the guest.
pub(crate) fn rearm(vcpu: &mut VcpuFd) {
    vcpu.set_kvm_immediate_exit(0);
}

/// Kicks `thread`.
///
/// # Safety
///
/// `thread` must be a live thread of this process: it must not have exited
/// (or been joined) yet. `runtime::Control` upholds this by unregistering a
/// vCPU thread, under the lock kicks are sent with, before it exits.
pub(crate) unsafe fn kick(thread: libc::pthread_t) {
    // SAFETY: the caller guarantees `thread` is alive; the signal has a
    // handler (installed before any vCPU thread starts), so it cannot kill.
    unsafe { libc::pthread_kill(thread, kick_signal()) };
}
