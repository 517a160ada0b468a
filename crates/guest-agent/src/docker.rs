//! The sandbox's own Docker engine, started on first use.
//!
//! Starting `dockerd` (and the `containerd` it manages) costs seconds of CPU
//! under emulation, so boot does not pay for it: the agent listens on
//! `/run/docker.sock` itself and hands the socket to `dockerd` through the
//! systemd activation protocol (`LISTEN_FDS`, `-H fd://`) when the first
//! client connects. A client never sees the difference: its connection waits
//! in the socket's backlog until the engine accepts it. If the engine exits,
//! the next connection starts it again.
//!
//! The engine gets the sandbox's proxy environment (image pulls go through
//! the policy proxy; the CA is already in the system bundle Go reads) and
//! `/etc/docker/daemon.json` from the image points containers' DNS at the
//! gateway. Whatever a container does, its outbound TCP is redirected like
//! any other guest traffic (see `egress`): the engine is a convenience, not
//! a way out.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::log::log;
use crate::server::Reaper;
use moat_proto::exec::ExitStatus;

/// Where clients find the engine (Docker's default).
pub const SOCKET: &str = "/run/docker.sock";
const DOCKERD: &str = "/usr/sbin/dockerd";
/// The engine's own log, truncated at each start.
const LOG: &str = "/var/log/dockerd.log";
/// A crash loop backs off this long between starts.
const RESTART_BACKOFF: Duration = Duration::from_secs(5);

/// Listens on [`SOCKET`] and starts the engine on the first connection.
/// Does nothing when the image has no Docker engine.
pub fn start_on_demand(env: Vec<(String, String)>) {
    if !std::path::Path::new(DOCKERD).exists() {
        return;
    }
    let listener = match listen() {
        Ok(l) => l,
        Err(e) => return log!("docker: cannot listen on {SOCKET}: {e}"),
    };
    let spawned = std::thread::Builder::new().name("docker".into()).spawn(move || serve(listener, env));
    if let Err(e) = spawned {
        log!("docker: cannot start the activation thread: {e}");
    }
}

/// The socket, owned by root and group `docker` (mode 0660), like Docker's own.
fn listen() -> std::io::Result<UnixListener> {
    let _ = fs::remove_file(SOCKET);
    let listener = UnixListener::bind(SOCKET)?;
    let gid = group_id("docker");
    std::os::unix::fs::chown(SOCKET, Some(0), gid)?;
    fs::set_permissions(SOCKET, fs::Permissions::from_mode(if gid.is_some() { 0o660 } else { 0o600 }))?;
    Ok(listener)
}

fn serve(listener: UnixListener, env: Vec<(String, String)>) {
    loop {
        if !wait_readable(listener.as_fd()) {
            return log!("docker: cannot wait on {SOCKET}; the engine will not start");
        }
        let started = Instant::now();
        match run_engine(&listener, &env) {
            Ok(status) => log!("docker: the engine exited ({status:?}); it starts again on the next connection"),
            Err(e) => log!("docker: cannot start the engine: {e}"),
        }
        if started.elapsed() < RESTART_BACKOFF {
            std::thread::sleep(RESTART_BACKOFF - started.elapsed());
        }
    }
}

/// Blocks until a client is waiting to be accepted.
fn wait_readable(fd: BorrowedFd<'_>) -> bool {
    loop {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

/// Runs `dockerd -H fd://` with the listener as its fd 3 until it exits.
fn run_engine(listener: &UnixListener, env: &[(String, String)]) -> std::io::Result<ExitStatus> {
    let log_file = fs::File::create(LOG)?;
    let mut command = Command::new("/bin/sh");
    // `$$` is the shell's pid, which `exec` hands to dockerd: the activation
    // protocol only accepts fds meant for the process's own pid.
    command
        .args(["-c", "export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$0\" -H fd://", DOCKERD])
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let fd = listener.as_raw_fd();
    // SAFETY: between fork and exec the closure only calls async-signal-safe
    // functions (dup2, fcntl, setsid) on fds the child owns.
    unsafe {
        command.pre_exec(move || {
            if fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::setsid();
            Ok(())
        });
    }
    let (_, exit) = Reaper::global().spawn(|| command.spawn().map(|child| child.id() as i32))?;
    log!("docker: engine started for the first client");
    loop {
        if let Some(status) = exit.wait(Duration::from_secs(3600)) {
            return Ok(status);
        }
    }
}

/// The gid of `name` in /etc/group.
fn group_id(name: &str) -> Option<u32> {
    let groups = fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name)).then(|| fields.nth(1)?.parse().ok())?
    })
}
