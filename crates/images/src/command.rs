//! Running the external tools of an image build (tar, make, debootstrap,
//! mkfs.ext4) with their output in a log file and a heartbeat on progress.

use super::progress::Progress;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How often a long-running tool reports progress at most.
const TICK_EVERY: Duration = Duration::from_secs(20);
/// Lines of the log quoted in a failure.
const TAIL_LINES: usize = 15;

/// A tool of an image build failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The tool is not installed.
    #[error("`{tool}` not found: {hint}")]
    NotFound { tool: String, hint: &'static str },
    /// The tool could not be started.
    #[error("could not run `{tool}`")]
    Spawn {
        tool: String,
        #[source]
        source: io::Error,
    },
    /// The tool ran and failed.
    #[error("`{tool}` failed ({status}); full log: {}\n{tail}", log.display())]
    Failed { tool: String, status: ExitStatus, log: PathBuf, tail: String },
    /// The build log could not be written.
    #[error("could not write build log {}", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Finds `tool` on `PATH` or in the sbin directories (which a non-root
/// `PATH` often lacks).
pub(crate) fn find_tool(tool: &str, hint: &'static str) -> Result<PathBuf, ToolError> {
    crate::tools::search_path(tool).ok_or_else(|| ToolError::NotFound { tool: tool.to_string(), hint })
}

/// Runs a short query and returns its stdout (trimmed).
pub(crate) fn output(cmd: &mut Command, tool: &str) -> Result<String, ToolError> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| ToolError::Spawn { tool: tool.to_string(), source })?;
    if !out.status.success() {
        return Err(ToolError::Failed {
            tool: tool.to_string(),
            status: out.status,
            log: PathBuf::from("(stderr)"),
            tail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What a long-running tool reports while it runs.
pub(crate) struct Heartbeat<'a> {
    pub progress: &'a dyn Progress,
    pub artifact: &'a str,
    /// Which output lines count as a unit of work (a compiled object, a
    /// debootstrap step).
    pub counts: fn(&str) -> bool,
    /// What a unit is called: "objects compiled".
    pub noun: &'a str,
}

/// Runs `cmd` with stdout and stderr appended to `log`, failing with the
/// log's tail if it exits unsuccessfully.
pub(crate) fn run_logged(
    cmd: &mut Command,
    tool: &str,
    log: &Path,
    heartbeat: Option<&Heartbeat<'_>>,
) -> Result<(), ToolError> {
    let log_err = |source| ToolError::Log { path: log.to_path_buf(), source };
    let mut log_file = File::options().create(true).append(true).open(log).map_err(log_err)?;
    writeln!(log_file, "\n$ {cmd:?}").map_err(log_err)?;
    let spawn_err = |source| ToolError::Spawn { tool: tool.to_string(), source };

    let (read_end, write_end) = nix::unistd::pipe().map_err(|e| spawn_err(e.into()))?;
    let write_err = write_end.try_clone().map_err(spawn_err)?;
    cmd.stdin(Stdio::null()).stdout(Stdio::from(write_end)).stderr(Stdio::from(write_err));
    let spawned = cmd.spawn();
    // Drop the parent's copies of the write end, or the reader never sees EOF.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = spawned.map_err(spawn_err)?;

    let started = Instant::now();
    let mut last_tick = started;
    let mut count = 0u64;
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    let mut reader = BufReader::new(File::from(read_end));
    let mut raw = Vec::new();
    loop {
        raw.clear();
        if reader.read_until(b'\n', &mut raw).map_err(log_err)? == 0 {
            break;
        }
        log_file.write_all(&raw).map_err(log_err)?;
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end();
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.to_string());
        let Some(beat) = heartbeat else { continue };
        if (beat.counts)(line) {
            count += 1;
            if last_tick.elapsed() >= TICK_EVERY {
                last_tick = Instant::now();
                let secs = started.elapsed().as_secs();
                let msg = format!("{count} {} ({secs} s) … {}", beat.noun, line.trim());
                beat.progress.tick(beat.artifact, &msg);
            }
        }
    }
    let status = child.wait().map_err(spawn_err)?;
    if status.success() {
        return Ok(());
    }
    Err(ToolError::Failed { tool: tool.to_string(), status, log: log.to_path_buf(), tail: Vec::from(tail).join("\n") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_output_and_reports_failure_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("build.log");
        run_logged(Command::new("sh").args(["-c", "echo out; echo err >&2"]), "sh", &log, None).unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("out\n") && text.contains("err\n"));

        let err = run_logged(Command::new("sh").args(["-c", "echo boom; exit 3"]), "sh", &log, None).unwrap_err();
        assert!(matches!(&err, ToolError::Failed { tail, .. } if tail == "boom"), "{err}");
    }

    #[test]
    fn missing_tool_says_what_to_do() {
        let err = find_tool("moat-no-such-tool", "install it").unwrap_err();
        assert_eq!(err.to_string(), "`moat-no-such-tool` not found: install it");
    }
}
