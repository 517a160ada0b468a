//! PID 1 duties: build the root filesystem from the kernel command line, mount
//! the shares, serve exec requests on vsock, reap orphans and power off cleanly.
//!
//! Nothing here may panic or return: PID 1 exiting is a kernel panic. Failures are
//! logged to the console; a boot that cannot build its root powers off.

mod mounts;
mod power;

use std::os::fd::OwnedFd;
use std::sync::Arc;

use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, VsockAddr};

use crate::log::log;
use crate::server::{Reaper, Server, ServerConfig};
use moat_proto::exec::AGENT_PORT;

pub use moat_proto::boot::{decode_hex, parse as parse_cmdline, BootConfig, CmdlineError, ShareMount};
pub use mounts::MountError;
pub use power::power_off;

/// Runs the whole life of PID 1. Never returns.
pub fn run() -> ! {
    // Before anything else: /dev for the console, then a console on fds 0-2.
    if let Err(e) = mounts::mount_early() {
        log!("{}", chain(&e));
    }
    mounts::open_console();
    // Before any thread exists, so every thread inherits the blocked mask.
    power::watch_signals();
    Reaper::global();

    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let (config, errors) = moat_proto::boot::parse(&cmdline);
    for e in &errors {
        log!("{e}");
    }
    let state = match boot_root(&config) {
        Ok(state) => state,
        Err(e) => {
            log!("boot failed: {}", chain(&e));
            power_off();
        }
    };
    mounts::mount_api_filesystems();
    if let Some(name) = &config.name {
        mounts::set_hostname(name);
    }
    let shares = mounts::mount_shares(&config.mounts);
    power::set_disks(power::Disks { shares, state });

    let net = crate::egress::fetch_config();
    if let Some(net) = &net {
        crate::egress::start(net);
    }
    crate::docker::start_on_demand(net.as_ref().map(|n| n.env.clone()).unwrap_or_default());
    let listener = match listen_vsock() {
        Ok(l) => l,
        Err(e) => {
            log!("cannot listen on vsock port {AGENT_PORT}: {e}");
            power_off();
        }
    };
    log!("ready");
    let config = ServerConfig { base_env: net.map(|n| n.env).unwrap_or_default(), ..ServerConfig::default() };
    let server = Arc::new(Server::new(config, || power_off()));
    match server.serve(listener) {
        Ok(never) => match never {},
        Err(e) => log!("{}", chain(&e)),
    }
    power_off()
}

/// The overlay root and the switch into it; `None` state handle when there is no
/// root device (the initramfs itself stays the root, useful for debugging).
fn boot_root(config: &BootConfig) -> Result<Option<OwnedFd>, MountError> {
    let Some(root) = &config.root else {
        log!("no moat.root= on the kernel command line; staying in the initramfs");
        return Ok(None);
    };
    let state = mounts::mount_overlay_root(root, &config.layers, config.state.as_deref())?;
    mounts::switch_root()?;
    Ok(Some(state))
}

fn listen_vsock() -> nix::Result<OwnedFd> {
    let fd = socket(AddressFamily::Vsock, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &VsockAddr::new(libc::VMADDR_CID_ANY, AGENT_PORT))?;
    listen(&fd, Backlog::new(64)?)?;
    Ok(fd)
}

/// An error and its sources on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}
