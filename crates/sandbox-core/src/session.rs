//! Agent sessions that outlive the user's terminal.
//!
//! `moat run` on a terminal starts the agent inside a tmux server in the
//! guest (its own socket, `tmux -L moat`, as the sandbox user), and attaches
//! the user's terminal to it through an ordinary exec. When that terminal
//! closes, the host CLI is killed or the user detaches (Ctrl-P Ctrl-Q), the
//! guest agent ends only the attached tmux client; the server and the agent
//! keep running. `moat attach` (or `moat run NAME`) attaches a new client,
//! and tmux redraws the whole screen. tmux stays invisible: no status line,
//! no prefix key (every key goes to the agent), no delay on Escape.
//!
//! The agent's exit status is written to [`STATUS_FILE`] by the session's
//! wrapper, so `moat run` still exits with the agent's code.

use std::path::Path;

use moat_proto::exec::{ExecRequest, ExitStatus, WinSize};

use crate::agent::{AgentConn, AgentError};

/// The tmux socket name (`tmux -L`), under the user's `/tmp/tmux-UID/`.
pub const SOCKET: &str = "moat";
/// The session's name.
pub const SESSION: &str = "agent";
/// Where the session's wrapper leaves the agent's exit status.
pub const STATUS_FILE: &str = "/tmp/.moat-session-status";

/// Server options, applied before the session starts (and again, harmlessly,
/// on every attach): tmux as a transparent terminal multiplexer of one window.
const OPTIONS: &[&[&str]] = &[
    &["set-option", "-g", "status", "off"],
    &["set-option", "-g", "prefix", "None"],
    &["set-option", "-g", "prefix2", "None"],
    // (The prefix table is then unreachable; unbinding it would make tmux drop
    // later attaches.)
    &["set-option", "-sg", "escape-time", "0"],
    &["set-option", "-g", "history-limit", "10000"],
    &["set-option", "-g", "default-terminal", "tmux-256color"],
    &["set-option", "-g", "focus-events", "on"],
    &["set-option", "-g", "set-titles", "on"],
    &["set-option", "-g", "aggressive-resize", "on"],
];

fn tmux() -> Vec<String> {
    ["tmux", "-L", SOCKET, "-f", "/dev/null"].map(String::from).to_vec()
}

fn with_options(mut argv: Vec<String>) -> Vec<String> {
    argv.push("start-server".into());
    for option in OPTIONS {
        argv.push(";".into());
        argv.extend(option.iter().map(|s| s.to_string()));
    }
    argv.push(";".into());
    argv
}

/// The exec that starts `command` in the session (or attaches to the session
/// if it already runs, leaving `command` unused), on a terminal of `size`.
/// `env` is the command's environment; `cwd` its folder.
pub fn start(command: &[String], env: &[(String, String)], cwd: &str, size: WinSize) -> ExecRequest {
    let mut argv = with_options(tmux());
    argv.extend(["new-session", "-A", "-s", SESSION, "-c", cwd].map(String::from));
    argv.extend(["-x".to_string(), size.cols.to_string(), "-y".into(), size.rows.to_string()]);
    for (k, v) in env {
        argv.push("-e".into());
        argv.push(format!("{k}={v}"));
    }
    // The wrapper keeps the exit status for `moat run`; the status of an
    // earlier session is removed first.
    let wrapper = format!("rm -f {STATUS_FILE}; \"$@\"; s=$?; echo $s > {STATUS_FILE}; exit $s");
    argv.extend(["sh", "-c", &wrapper, "moat-session"].map(String::from));
    argv.extend(command.iter().cloned());
    ExecRequest { argv, env: env.to_vec(), cwd: Some(cwd.to_string()), user: None, tty: Some(size), stdin: true }
}

/// The exec that attaches to the running session.
pub fn attach(size: WinSize) -> ExecRequest {
    let mut argv = with_options(tmux());
    argv.extend(["attach-session", "-t", SESSION].map(String::from));
    ExecRequest { argv, env: Vec::new(), cwd: None, user: None, tty: Some(size), stdin: true }
}

/// Whether the agent session of the VM behind `vsock` runs.
pub fn is_running(vsock: &Path) -> Result<bool, AgentError> {
    let (status, _) = capture(vsock, &probe())?;
    Ok(status == ExitStatus::Code(0))
}

/// The exit code of the session that ended last, once (it is removed).
pub fn take_exit_code(vsock: &Path) -> Result<Option<i32>, AgentError> {
    let (_, out) = capture(vsock, &take_status())?;
    Ok(parse_status(&out))
}

/// How long a probe of the guest may take (an exec is tens of milliseconds,
/// also under emulation), and how much of its output is kept: the guest is
/// root and may answer slowly, never, or at length.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const PROBE_OUTPUT: usize = 64;

fn capture(vsock: &Path, req: &ExecRequest) -> Result<(ExitStatus, Vec<u8>), AgentError> {
    capture_within(vsock, req, PROBE_TIMEOUT)
}

/// Runs `req`, keeping the first [`PROBE_OUTPUT`] bytes of its stdout; gives
/// up (and leaves the process) after `timeout`.
fn capture_within(
    vsock: &Path,
    req: &ExecRequest,
    timeout: std::time::Duration,
) -> Result<(ExitStatus, Vec<u8>), AgentError> {
    let session = AgentConn::connect(vsock)?.exec(req)?;
    let input = session.input();
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let status = session.wait(|b| out.extend_from_slice(&b[..b.len().min(PROBE_OUTPUT - out.len())]), |_| {});
        let _ = done.send(status.map(|s| (s, out)));
    });
    result.recv_timeout(timeout).unwrap_or_else(|_| {
        input.hang_up();
        Err(AgentError::Unexpected("the guest did not answer in time".into()))
    })
}

/// The exec whose exit status says whether the session runs (0) or not.
pub fn probe() -> ExecRequest {
    let mut argv = tmux();
    argv.extend(["has-session", "-t", SESSION].map(String::from));
    ExecRequest { argv, ..ExecRequest::default() }
}

/// The exec that prints (and removes) the exit status of the session that ended.
pub fn take_status() -> ExecRequest {
    let script = format!("cat {STATUS_FILE} 2>/dev/null && rm -f {STATUS_FILE}");
    ExecRequest { argv: vec!["sh".into(), "-c".into(), script], ..ExecRequest::default() }
}

/// The exit code in [`take_status`]'s output, if there is one.
pub fn parse_status(out: &[u8]) -> Option<i32> {
    std::str::from_utf8(out).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_command_runs_the_agent_argv_unchanged_behind_the_wrapper() {
        let cmd: Vec<String> = ["claude", "--dangerously-skip-permissions", "a b"].map(String::from).to_vec();
        let env = vec![("ANTHROPIC_API_KEY".to_string(), "sk-ant-placeholder".to_string())];
        let req = start(&cmd, &env, "/work/my app", WinSize { rows: 40, cols: 120 });
        let argv = &req.argv;
        assert_eq!(&argv[..5], ["tmux", "-L", "moat", "-f", "/dev/null"]);
        assert!(argv.ends_with(&cmd), "{argv:?}");
        let new = argv.iter().position(|a| a == "new-session").unwrap();
        assert_eq!(&argv[new..new + 6], ["new-session", "-A", "-s", "agent", "-c", "/work/my app"]);
        assert!(argv.windows(2).any(|w| w == ["-e", "ANTHROPIC_API_KEY=sk-ant-placeholder"]));
        assert!(argv.windows(4).any(|w| w == ["-x", "120", "-y", "40"]));
        assert!(argv.windows(4).any(|w| w == ["set-option", "-g", "prefix", "None"]), "no key is taken from the agent");
        assert_eq!(req.tty, Some(WinSize { rows: 40, cols: 120 }));
        assert_eq!(req.cwd.as_deref(), Some("/work/my app"));
    }

    /// A guest agent stand-in on a Unix socket that starts the process, sends
    /// `output`, then the process's `exit` — or, without one, holds the
    /// connection open and says nothing more.
    fn scripted_guest(dir: &Path, output: Vec<u8>, exit: Option<ExitStatus>) -> std::path::PathBuf {
        use moat_proto::exec::{write_frame, Frame};
        use std::io::{BufRead, Write};
        let path = dir.join("vsock.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut line = String::new();
            std::io::BufReader::new(conn.try_clone().unwrap()).read_line(&mut line).unwrap();
            conn.write_all(b"OK 1024\n").unwrap();
            write_frame(&mut conn, &Frame::Started { pid: 7 }).unwrap();
            for chunk in output.chunks(16 * 1024) {
                write_frame(&mut conn, &Frame::Stdout(chunk.to_vec())).unwrap();
            }
            match exit {
                Some(status) => write_frame(&mut conn, &Frame::Exit(status)).unwrap(),
                // Silent until the host hangs up.
                None => {
                    let _ = std::io::Read::read_to_end(&mut conn, &mut Vec::new());
                }
            }
        });
        path
    }

    #[test]
    fn a_guest_that_stalls_a_probe_costs_a_bounded_wait() {
        let tmp = tempfile::tempdir().unwrap();
        let vsock = scripted_guest(tmp.path(), vec![b'7'; 1 << 20], None);
        let started = std::time::Instant::now();
        let timeout = std::time::Duration::from_millis(500);
        let err = capture_within(&vsock, &take_status(), timeout).unwrap_err();
        assert!(err.to_string().contains("did not answer in time"), "{err}");
        assert!(started.elapsed() < timeout * 10, "{:?}", started.elapsed());
    }

    #[test]
    fn a_probe_keeps_only_the_start_of_what_the_guest_prints() {
        let tmp = tempfile::tempdir().unwrap();
        let path = scripted_guest(tmp.path(), vec![b'9'; 1 << 20], Some(ExitStatus::Code(0)));
        let (status, out) = capture(&path, &take_status()).unwrap();
        assert_eq!(status, ExitStatus::Code(0));
        assert_eq!(out.len(), PROBE_OUTPUT, "1 MiB printed, {PROBE_OUTPUT} bytes kept");
    }

    #[test]
    fn the_wrapper_keeps_the_exit_status() {
        let tmp = tempfile::tempdir().unwrap();
        let status = tmp.path().join("status");
        let wrapper = format!("rm -f {s}; \"$@\"; s=$?; echo $s > {s}; exit $s", s = status.display());
        let run = std::process::Command::new("sh")
            .args(["-c", &wrapper, "moat-session", "sh", "-c", "exit 7"])
            .status()
            .unwrap();
        assert_eq!(run.code(), Some(7));
        assert_eq!(parse_status(&std::fs::read(&status).unwrap()), Some(7));
        assert!(start(&[], &[], "/", WinSize { rows: 1, cols: 1 })
            .argv
            .iter()
            .any(|a| a.contains(&format!("rm -f {STATUS_FILE}; \"$@\"; s=$?; echo $s > {STATUS_FILE}; exit $s"))));
        assert_eq!(parse_status(b""), None);
        assert_eq!(parse_status(b"3\n"), Some(3));
    }
}
