//! The `__supervise` entry point: the process set-up every supervisor gets
//! before [`supervise`] runs its VM.

use std::io::Write;
use std::path::Path;

use super::run::supervise;
use super::status::RunDir;
use crate::host::process::{enter_host_process, raise_nofile, supervisor_nofile_need, NofileOutcome};

/// What a binary hands `__supervise <run-dir>` to: works in `/` with only absolute
/// `PATH` entries, raises the open-file limit to what the VM's connections need
/// (a line in the supervisor log if the hard limit is lower), then [`supervise`].
/// Call it while the process has one thread.
pub fn supervise_process(run_dir: &Path) -> i32 {
    // The run folder may be relative to where we were started.
    let run_dir = std::path::absolute(run_dir).unwrap_or_else(|_| run_dir.to_path_buf());
    let run = RunDir::new(&run_dir);
    let say = |msg: String| {
        if let Ok(mut log) = std::fs::OpenOptions::new().create(true).append(true).open(run.supervisor_log()) {
            let _ = writeln!(log, "supervisor: {msg}");
        }
    };
    if let Err(e) = enter_host_process() {
        say(format!("cannot change to /: {e}"));
        return 1;
    }
    match raise_nofile(supervisor_nofile_need()) {
        Ok(NofileOutcome::Short { soft, need }) => say(format!(
            "open-file limit is {soft} (the hard limit), below the {need} a VM's connections may need; \
             raise it (ulimit -Hn) to serve every connection"
        )),
        Ok(_) => {}
        Err(e) => say(format!("cannot read or raise the open-file limit: {e}")),
    }
    supervise(&run_dir)
}
