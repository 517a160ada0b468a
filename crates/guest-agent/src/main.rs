//! `moat-guest-agent`: PID 1 of a Moat sandbox VM, or, for tests and debugging,
//! `moat-guest-agent --listen-unix PATH` to serve the exec protocol on a Unix socket.

use std::os::unix::net::UnixListener;
use std::process::ExitCode;
use std::sync::Arc;

use moat_guest_agent::server::{Server, ServerConfig};

fn main() -> ExitCode {
    if std::process::id() == 1 {
        moat_guest_agent::init::run();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, path] if flag == "--listen-unix" => listen_unix(path),
        _ => {
            eprintln!("usage: moat-guest-agent --listen-unix PATH   (as PID 1 it takes no arguments)");
            ExitCode::from(2)
        }
    }
}

fn listen_unix(path: &str) -> ExitCode {
    let _ = std::fs::remove_file(path);
    let listener = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("moat-guest-agent: cannot listen on {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = ServerConfig { default_user: default_user(), ..ServerConfig::default() };
    let server = Arc::new(Server::new(config, || {
        eprintln!("moat-guest-agent: shutdown requested; exiting");
        std::process::exit(0);
    }));
    eprintln!("moat-guest-agent: listening on {path}");
    match server.serve(listener.into()) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("moat-guest-agent: {e}: {}", e.source_text());
            ExitCode::FAILURE
        }
    }
}

/// `agent` if that user exists here, otherwise the current user.
fn default_user() -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    if passwd.lines().any(|l| l.starts_with("agent:")) {
        "agent".into()
    } else {
        // SAFETY: getuid cannot fail and touches no memory.
        unsafe { libc::getuid() }.to_string()
    }
}

trait SourceText {
    fn source_text(&self) -> String;
}

impl<E: std::error::Error> SourceText for E {
    fn source_text(&self) -> String {
        self.source().map(|s| s.to_string()).unwrap_or_default()
    }
}
