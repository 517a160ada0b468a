//! `moat`: the command line over moat-sandbox-core. Parses, renders, delegates.

mod args;
mod attach;
mod commands;
mod policy;
mod render;
mod secret;
mod template;

use clap::Parser;

/// Exit code for Moat's own failures (as `docker` does), distinct from a guest command's codes.
const MOAT_FAILED: i32 = 125;

fn main() {
    // Before any thread: programs (git, sh, the back-ends) come only from absolute folders.
    moat_sandbox_core::host::drop_relative_path_entries();
    let cli = args::Cli::parse();
    match commands::dispatch(cli.command) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("moat: error: {}", chain(&e));
            std::process::exit(MOAT_FAILED);
        }
    }
}

/// The error and its causes on one line, without repeating a cause already
/// quoted, escaped for the terminal: causes carry text a sandbox chose (file
/// names, a failed start's console tail).
fn chain(e: &anyhow::Error) -> String {
    moat_text::escape_str(&moat_sandbox_core::daemon::error_chain(e.as_ref()))
}
