//! `moat-vsock`: a vhost-user vsock backend, a drop-in for `vhost-device-vsock`
//! on Moat's command line. It serves one frontend and exits when it goes
//! (as the init of a PID namespace, it waits for a signal instead);
//! SIGTERM, SIGINT and SIGHUP end it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use nix::sys::signal::{SigSet, Signal};

#[derive(Debug, Parser)]
#[command(version, about = "vhost-user virtio-vsock backend with hybrid Unix sockets")]
struct Args {
    /// The guest's CID.
    #[arg(long)]
    guest_cid: u64,
    /// vhost-user socket to listen on for the VMM.
    #[arg(long)]
    socket: PathBuf,
    /// Hybrid vsock socket for host processes (`CONNECT <port>\n`); the guest's
    /// connections to host port P go to `<uds-path>_P`.
    #[arg(long)]
    uds_path: PathBuf,
    /// Take the sockets' folder as the root and drop every capability before
    /// serving (needs root; both sockets must be in that folder).
    #[arg(long)]
    jail: bool,
}

mod jail;

fn main() -> ExitCode {
    let args = Args::parse();
    // Before any thread starts, so that every thread inherits it.
    let confined = match args.jail {
        true => jail::enter(&args.socket, &args.uds_path),
        false => Ok((args.socket, args.uds_path)),
    };
    let (socket, uds_path) = match confined.and_then(|paths| jail::restrict().map(|()| paths)) {
        Ok(paths) => paths,
        Err(e) => {
            eprintln!("moat-vsock: {}", chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let config = moat_vsock::Config { guest_cid: args.guest_cid, socket, uds_path };
    // A bug must end the process, not leave a worker thread dead and the guest's
    // sockets silently wedged.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::exit(101);
    }));
    // Every thread inherits the mask; one thread takes the signals and exits cleanly.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    if let Err(e) = signals.thread_block() {
        eprintln!("moat-vsock: cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    let cleanup = config.clone();
    std::thread::spawn(move || {
        if signals.wait().is_ok() {
            remove_sockets(&cleanup);
            std::process::exit(0);
        }
    });
    let served = moat_vsock::serve(&config);
    remove_sockets(&config);
    let code = match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("moat-vsock: {}", chain(&e));
            ExitCode::FAILURE
        }
    };
    if std::process::id() == 1 {
        // The init of the VM's PID namespace: ending now would kill the
        // monitor (the kernel kills a namespace whose init is gone) before it
        // reports why it stopped. The supervisor ends us once it has reaped
        // the monitor (SIGTERM, taken by the thread above), or dies, which
        // kills us (death signal).
        loop {
            std::thread::park();
        }
    }
    code
}

/// An error and its sources, joined by `: `.
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

fn remove_sockets(config: &moat_vsock::Config) {
    moat_vsock::vhost_user::remove_socket(&config.uds_path);
    moat_vsock::vhost_user::remove_socket(&config.socket);
}
