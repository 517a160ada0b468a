//! The VMM thread: serves the control socket, streams serial output, and
//! enforces the run's deadlines (the timeout, a shutdown's grace period).
//!
//! It sleeps in `poll` on the control socket's fds and the run's "stopped"
//! eventfd, waking early only for the next deadline or serial flush. There
//! are few fds (at most `api::server::MAX_CONNECTIONS` + 2), so `poll`
//! rather than epoll.

use std::io::Write;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use std::os::fd::AsRawFd;

use super::control::{Control, ControlError};
use super::stats::MemoryProbe;
use crate::api::server::Server;
use crate::api::{Request, Response, VcpuStats, VmState, VmStats};
use crate::device_manager::DeviceManager;
use crate::vcpu::RunOutcome;

/// How often buffered serial output is written to its sink.
const SERIAL_FLUSH: Duration = Duration::from_millis(20);

/// Everything the VMM thread works with.
pub(crate) struct EventLoop<'a> {
    pub(crate) control: &'a Control,
    pub(crate) devices: &'a DeviceManager,
    pub(crate) memory: MemoryProbe<'a>,
    pub(crate) api: Option<Server>,
    pub(crate) serial_out: Option<Box<dyn Write + Send>>,
    pub(crate) started: Instant,
    pub(crate) deadline: Option<Instant>,
    pub(crate) shutdown_grace: Duration,
    pub(crate) shutdown_deadline: Option<Instant>,
}

impl EventLoop<'_> {
    /// Runs until the run has ended, then flushes serial output one last time.
    pub(crate) fn run(mut self) {
        let mut fds = Vec::new();
        loop {
            self.enforce_deadlines();
            self.flush_serial();
            if self.control.has_ended() {
                break;
            }
            fds.clear();
            fds.push(libc::pollfd { fd: self.control.stopped_event().as_raw_fd(), events: libc::POLLIN, revents: 0 });
            if let Some(api) = &self.api {
                fds.extend(api.poll_fds());
            }
            let timeout = self.poll_timeout();
            // SAFETY: `fds` is a valid array of `fds.len()` pollfds that the
            // kernel may write `revents` into for the duration of the call.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if ready <= 0 {
                continue; // Timeout, or EINTR.
            }
            if let Some(mut api) = self.api.take() {
                api.on_ready(&fds[1..], |request| self.handle(request));
                self.api = Some(api);
            }
        }
        self.flush_serial();
    }

    /// Milliseconds until the nearest deadline or serial flush; -1: none.
    fn poll_timeout(&self) -> libc::c_int {
        let flush = self.serial_out.as_ref().map(|_| Instant::now() + SERIAL_FLUSH);
        let next = [self.deadline, self.shutdown_deadline, flush].into_iter().flatten().min();
        match next {
            None => -1,
            Some(at) => {
                let wait = at.saturating_duration_since(Instant::now());
                // Round up, so we do not wake just before the deadline.
                wait.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int
            }
        }
    }

    fn enforce_deadlines(&mut self) {
        let now = Instant::now();
        if self.deadline.is_some_and(|d| now >= d) {
            self.control.finish(Ok(RunOutcome::TimedOut));
        }
        if self.shutdown_deadline.is_some_and(|d| now >= d) {
            self.control.finish(Ok(RunOutcome::Stopped));
        }
    }

    fn flush_serial(&mut self) {
        let Some(out) = self.serial_out.as_mut() else { return };
        let bytes = self.devices.serial().lock().unwrap_or_else(PoisonError::into_inner).take_output();
        if !bytes.is_empty() && (out.write_all(&bytes).is_err() || out.flush().is_err()) {
            // A sink that fails stays failed (closed pipe, full disk): stop
            // writing; the guest's output is buffered up to its bound.
            self.serial_out = None;
        }
    }

    fn handle(&mut self, request: Option<Request>) -> Response {
        let result = match request {
            None => {
                let words: Vec<&str> = Request::ALL.iter().map(|(w, _)| *w).collect();
                let error = format!("unknown request; expected one of {}", words.join(", "));
                return Response::error(self.control.state(), error);
            }
            Some(Request::Status) => Ok(self.control.state()),
            Some(Request::Pause) => self.control.pause(),
            Some(Request::Start | Request::Resume) => self.control.resume(),
            Some(Request::Shutdown) => self.shutdown(),
            Some(Request::Stop) => {
                self.control.finish(Ok(RunOutcome::Stopped));
                Ok(VmState::Stopped)
            }
            Some(Request::Stats) => {
                return Response { stats: Some(self.stats()), ..Response::ok(self.control.state()) };
            }
        };
        match result {
            Ok(state) => Response::ok(state),
            Err(e) => Response::error(self.control.state(), e.to_string()),
        }
    }

    fn shutdown(&mut self) -> Result<VmState, ControlError> {
        let state = self.control.begin_shutdown()?;
        self.devices.power_button().lock().unwrap_or_else(PoisonError::into_inner).press();
        if self.shutdown_deadline.is_none() {
            self.shutdown_deadline = Instant::now().checked_add(self.shutdown_grace);
        }
        Ok(state)
    }

    fn stats(&self) -> VmStats {
        let vcpus = (0u8..)
            .zip(self.control.vcpu_times())
            .map(|(index, time)| VcpuStats { index, cpu_ns: time.as_nanos() as u64 })
            .collect();
        let serial = self.devices.serial().lock().unwrap_or_else(PoisonError::into_inner).stats();
        VmStats {
            uptime_ms: self.started.elapsed().as_millis() as u64,
            vcpus,
            rss_bytes: self.memory.process_rss(),
            guest_ram_bytes: self.memory.guest_ram(),
            serial_bytes: serial.written,
        }
    }
}
