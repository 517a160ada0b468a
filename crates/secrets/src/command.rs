//! Running a host command (`gh auth token`) that prints a credential.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::secret::Secret;

/// A value command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot start `sh -c {cmd:?}`")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{cmd}` failed ({status}): {stderr_tail}")]
    Failed { cmd: String, status: String, stderr_tail: String },
    #[error("`{cmd}` did not finish within {secs}s and was killed: check it runs non-interactively")]
    Timeout { cmd: String, secs: u64 },
    #[error("`{cmd}` printed nothing on stdout: it should print the credential")]
    Empty { cmd: String },
}

impl CommandError {
    /// The same error again (an outcome kept for later callers).
    pub(crate) fn again(&self) -> CommandError {
        match self {
            CommandError::Spawn { cmd, source } => {
                CommandError::Spawn { cmd: cmd.clone(), source: std::io::Error::new(source.kind(), source.to_string()) }
            }
            CommandError::Failed { cmd, status, stderr_tail } => {
                CommandError::Failed { cmd: cmd.clone(), status: status.clone(), stderr_tail: stderr_tail.clone() }
            }
            CommandError::Timeout { cmd, secs } => CommandError::Timeout { cmd: cmd.clone(), secs: *secs },
            CommandError::Empty { cmd } => CommandError::Empty { cmd: cmd.clone() },
        }
    }
}

const TAIL: usize = 400;

/// Runs `cmd` via `sh -c` in its own process group, killing the group after
/// `timeout`. Returns stdout, trimmed.
pub(crate) fn run(cmd: &str, timeout: Duration) -> Result<Secret, CommandError> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|source| CommandError::Spawn { cmd: cmd.into(), source })?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.by_ref().take(1 << 20).read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.by_ref().take(1 << 20).read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => break None,
        }
    };
    if status.is_none() {
        let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let _ = child.wait();
    }
    let stdout = zeroize::Zeroizing::new(out_t.join().unwrap_or_default());
    let stderr = err_t.join().unwrap_or_default();
    let Some(status) = status else {
        return Err(CommandError::Timeout { cmd: cmd.into(), secs: timeout.as_secs() });
    };
    if !status.success() {
        let text = String::from_utf8_lossy(&stderr);
        let text = text.trim();
        let start = text.char_indices().rev().nth(TAIL).map_or(0, |(i, _)| i);
        return Err(CommandError::Failed {
            cmd: cmd.into(),
            status: status.to_string(),
            stderr_tail: text[start..].to_string(),
        });
    }
    let value = String::from_utf8_lossy(&stdout).trim().to_string();
    if value.is_empty() {
        return Err(CommandError::Empty { cmd: cmd.into() });
    }
    Ok(Secret::new(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_trimmed() {
        assert_eq!(run("echo '  tok  '", Duration::from_secs(5)).unwrap().expose(), "tok");
    }

    #[test]
    fn failure_names_the_command_and_stderr_tail() {
        let e = run("echo nope >&2; exit 3", Duration::from_secs(5)).unwrap_err().to_string();
        assert!(e.contains("exit 3") && e.contains("nope") && e.contains("exit status: 3"), "{e}");
    }

    #[test]
    fn timeout_kills_the_command() {
        let t = Instant::now();
        let e = run("sleep 30", Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, CommandError::Timeout { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn empty_output_is_an_error() {
        assert!(matches!(run("true", Duration::from_secs(5)), Err(CommandError::Empty { .. })));
    }
}
