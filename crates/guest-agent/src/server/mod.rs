//! The exec server: answers [`proto`](crate::proto) requests on any connected
//! stream socket (vsock in the guest, Unix sockets in tests and debugging).
//!
//! One thread per connection; no async runtime. Requests and their answers:
//!
//! - `Ping` → [`Frame::Pong`], then close.
//! - `Shutdown` → [`Frame::Exit`]`(Code(0))` as an acknowledgement, then the
//!   server's shutdown hook runs (in PID 1: power off).
//! - `Exec` → [`Frame::Started`] once `execve` succeeded, output frames, and
//!   [`Frame::Exit`] last; or one [`Frame::Error`] if the process could not start.
//!
//! Error kinds: `bad_request` (malformed frame, bad argument), `version`,
//! `not_found` (user, program or working directory), `permission_denied`,
//! `internal`. During a session an out-of-range `Signal` is answered with a
//! `bad_request` Error frame and the session goes on; every other Error frame ends
//! the connection.
//!
//! Processes run in their own session and process group. If the client goes away
//! mid-exec, the group gets SIGHUP, then SIGKILL. After the process exits, output
//! still arriving from background processes is forwarded for a short grace, then
//! Exit is sent (the background processes are left running).

mod conn;
mod prepare;
mod reaper;
mod session;
mod spawn;
mod users;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{accept4, SockFlag};

use crate::log::log;
use conn::{Conn, Incoming};
use moat_proto::exec::{Frame, Op, Pong, Request, VERSION};

pub use prepare::DEFAULT_PATH;
pub use reaper::{ExitWatch, Reaper};
pub use users::{Account, UserError};

/// How the server runs processes.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// User for requests that name none.
    pub default_user: String,
    /// Directory holding `passwd` and `group`.
    pub etc_dir: PathBuf,
    /// After the process exits, how long output from lingering background
    /// processes is still forwarded before Exit.
    pub drain_grace: Duration,
    /// After the client disconnects mid-exec, how long between SIGHUP and SIGKILL.
    pub hangup_grace: Duration,
    /// Environment every process gets before the request's own (the egress
    /// proxy variables, CA bundle paths).
    pub base_env: Vec<(String, String)>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            default_user: "agent".into(),
            etc_dir: "/etc".into(),
            drain_grace: Duration::from_millis(250),
            hangup_grace: Duration::from_millis(500),
            base_env: Vec::new(),
        }
    }
}

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// `argv` was empty.
    #[error("argv is empty; give at least the program name")]
    EmptyArgv,
    /// A string contained a NUL byte.
    #[error("{0} contains a NUL byte")]
    NulByte(&'static str),
    /// No such user.
    #[error("no user `{0}` in /etc/passwd")]
    UnknownUser(String),
    /// The user database could not be read.
    #[error("cannot read the user database")]
    UserDb(#[source] UserError),
    /// The working directory does not exist or is not a directory.
    #[error("working directory `{0}` is not a directory")]
    BadCwd(String),
    /// The program was not found in `PATH`.
    #[error("program `{0}` not found (searched PATH)")]
    ProgramNotFound(String),
    /// The agent could not prepare the process (out of fds, ...).
    #[error("could not {step}")]
    Setup { step: &'static str, errno: Errno },
    /// The child failed a set-up step as the target user.
    #[error("could not {step} for the new process: {errno}")]
    ChildSetup { step: &'static str, errno: Errno },
    /// `execve` failed.
    #[error("could not execute `{program}`: {errno}")]
    Exec { program: String, errno: Errno },
}

impl From<Errno> for ExecError {
    fn from(errno: Errno) -> Self {
        ExecError::Setup { step: "create a pipe", errno }
    }
}

impl ExecError {
    /// The protocol's error kind for this failure.
    pub fn kind(&self) -> &'static str {
        let by_errno = |e: &Errno| match e {
            Errno::ENOENT | Errno::ENOTDIR => "not_found",
            Errno::EACCES | Errno::EPERM => "permission_denied",
            _ => "internal",
        };
        match self {
            ExecError::EmptyArgv | ExecError::NulByte(_) => "bad_request",
            ExecError::UnknownUser(_) | ExecError::BadCwd(_) | ExecError::ProgramNotFound(_) => "not_found",
            ExecError::UserDb(_) | ExecError::Setup { .. } => "internal",
            ExecError::ChildSetup { errno, .. } | ExecError::Exec { errno, .. } => by_errno(errno),
        }
    }

    /// The message for the client: this error and its sources.
    fn message(&self) -> String {
        let mut msg = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            msg.push_str(&format!(": {e}"));
            source = e.source();
        }
        if let ExecError::Setup { errno, .. } = self {
            msg.push_str(&format!(": {errno}"));
        }
        msg
    }
}

/// Why [`Server::serve`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// `accept` failed in a way retrying cannot fix.
    #[error("accepting connections failed")]
    Accept(#[source] Errno),
}

/// The exec server. Share it between connection threads with an `Arc`.
pub struct Server {
    config: ServerConfig,
    on_shutdown: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Server {
    /// A server that calls `on_shutdown` when a client asks to shut down.
    pub fn new(config: ServerConfig, on_shutdown: impl Fn() + Send + Sync + 'static) -> Self {
        Server { config, on_shutdown: Box::new(on_shutdown) }
    }

    /// Accepts connections on a listening stream socket forever, one thread each.
    pub fn serve(self: Arc<Self>, listener: OwnedFd) -> Result<std::convert::Infallible, ServeError> {
        loop {
            let fd = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                Ok(fd) => fd,
                Err(Errno::EINTR | Errno::ECONNABORTED | Errno::EPROTO) => continue,
                Err(e @ (Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)) => {
                    log!("accept: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                Err(e) => return Err(ServeError::Accept(e)),
            };
            // SAFETY: accept4 just returned this fd; nothing else owns it.
            let conn = unsafe { OwnedFd::from_raw_fd(fd) };
            let server = self.clone();
            let spawned = std::thread::Builder::new().name("exec".into()).spawn(move || server.serve_connection(conn));
            if let Err(e) = spawned {
                log!("cannot start a connection thread: {e}");
            }
        }
    }

    /// Serves one connection to its end: one request, its answer, close.
    pub fn serve_connection(&self, fd: OwnedFd) {
        let mut conn = Conn::new(fd);
        let request = match conn.wait_frame() {
            Incoming::Frame(Frame::Request(r)) => r,
            Incoming::Frame(other) => {
                let _ = conn.send_error("bad_request", format!("expected a request frame, got {other:?}"));
                return;
            }
            Incoming::Malformed(e) => {
                let _ = conn.send_error("bad_request", format!("malformed request: {e}"));
                return;
            }
            Incoming::Closed | Incoming::Pending => return,
        };
        self.answer(&mut conn, request);
    }

    fn answer(&self, conn: &mut Conn, request: Request) {
        if request.v != VERSION {
            let msg = format!("protocol version {} is not supported; this agent speaks {VERSION}", request.v);
            let _ = conn.send_error("version", msg);
            return;
        }
        match request.op {
            Op::Ping => {
                let pong = Pong {
                    version: VERSION,
                    agent: concat!("moat-guest-agent ", env!("CARGO_PKG_VERSION")).into(),
                    uptime_ms: uptime_ms(),
                };
                let _ = conn.send(&Frame::Pong(pong));
            }
            Op::Shutdown => {
                let _ = conn.send(&Frame::Exit(moat_proto::exec::ExitStatus::Code(0)));
                (self.on_shutdown)();
            }
            Op::Exec(req) => {
                let started = prepare::prepare(&req, &self.config).and_then(|p| spawn::spawn(&p));
                match started {
                    Ok(child) => {
                        let timing = session::Timing {
                            drain_grace: self.config.drain_grace,
                            hangup_grace: self.config.hangup_grace,
                        };
                        session::run(conn, child, timing);
                    }
                    Err(e) => {
                        let _ = conn.send_error(e.kind(), e.message());
                    }
                }
            }
        }
    }
}

/// Milliseconds since boot, from `/proc/uptime` (0 if unreadable).
fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0, |secs| (secs * 1000.0) as u64)
}
