//! Embedding Moat in your own agent harness, without the `moat` CLI or daemon.
//!
//! Creates a sandbox on a folder, boots it, runs a command in it, streams the
//! output, and removes the sandbox. The same executable doubles as the VM
//! supervisor: `Manager` re-runs it as `<exe> __supervise <run-dir>` for each VM.
//!
//! ```sh
//! cargo xtask build            # builds the static guest agent into target/guest/
//! MOAT_AGENT_BIN=target/guest/x86_64-unknown-linux-gnu/release/moat-guest-agent \
//!     cargo run -p moat-examples --example embed -- /path/to/project uname -a
//! ```

use std::path::PathBuf;

use moat_sandbox_core::agent::{AgentConn, ExecRequest};
use moat_sandbox_core::images::CachedImages;
use moat_sandbox_core::manager::{Manager, SupervisorCommand};
use moat_sandbox_core::paths::Home;
use moat_sandbox_core::spec::CreateRequest;
use moat_sandbox_core::supervisor;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    // The supervisor contract: this binary must hand `__supervise DIR` to the library.
    if args.get(1).map(String::as_str) == Some("__supervise") {
        std::process::exit(supervisor::supervise_process(&PathBuf::from(&args[2])));
    }
    let (Some(folder), command) = (args.get(1), &args[2.min(args.len())..]) else {
        eprintln!("usage: embed FOLDER COMMAND...");
        std::process::exit(2);
    };
    let command = if command.is_empty() { vec!["uname".to_string(), "-a".to_string()] } else { command.to_vec() };

    // A private installation for this tool, beside Moat's own.
    let home = Home::at(std::env::temp_dir().join("moat-embed-example"));
    let manager = Manager::open(home, SupervisorCommand::current_exe()?, Box::new(CachedImages::from_env()?))?;

    let req = CreateRequest {
        name: Some("embed-example".into()),
        agent: "shell".into(),
        workspace: folder.into(),
        memory: Some("1g".into()),
        ..Default::default()
    };
    let cwd = std::env::current_dir()?;
    let created = manager.create(&req, &cwd)?;
    let result = (|| -> Result<i32, Box<dyn std::error::Error>> {
        let running = manager.start(&created.spec.name)?;
        let exec = ExecRequest {
            argv: command,
            // The sandbox's own variables (none here): every process it runs gets them.
            env: running.spec.env.clone().into_iter().collect(),
            cwd: Some(running.spec.workspace.to_string_lossy().into_owned()),
            ..Default::default()
        };
        let session = AgentConn::connect(&running.vsock_socket)?.exec(&exec)?;
        let status = session.wait(
            |out| print!("{}", String::from_utf8_lossy(out)),
            |err| eprint!("{}", String::from_utf8_lossy(err)),
        )?;
        Ok(status.shell_code())
    })();
    manager.remove(&created.spec.name, true)?;
    std::process::exit(result?);
}
