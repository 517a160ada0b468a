//! A small blocking client for the daemon API, and daemon auto-start.
//!
//! One request per connection (`Connection: close`), HTTP/1.1 over the Unix
//! socket. Deliberately tiny: `moat exec` pays for this on every call.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::api::{ApiError, VersionInfo};
use crate::manager::SandboxInfo;
use crate::paths::Home;
use crate::spec::CreateRequest;
use crate::templates::{Exported, ImportRequest, ProgramsRequest, SaveRequest, TemplateInfo};

/// Largest response the client accepts.
const MAX_RESPONSE: u64 = 16 << 20;

/// Why a daemon call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon is not reachable.
    #[error("cannot reach the moat daemon at {0} (start it with `moat daemon start`)")]
    Unreachable(PathBuf, #[source] std::io::Error),
    /// The daemon answered with an error.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The answer was not what the API promises.
    #[error("malformed answer from the moat daemon: {0}")]
    Malformed(String),
    /// The daemon could not be started.
    #[error("could not start the moat daemon: {0}")]
    StartFailed(String),
}

/// A connection target for the daemon API.
#[derive(Debug, Clone)]
pub struct DaemonClient {
    socket: PathBuf,
}

impl DaemonClient {
    /// A client for the daemon listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> DaemonClient {
        DaemonClient { socket: socket.into() }
    }

    /// Sends one request; returns the status and body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let unreachable = |e| ClientError::Unreachable(self.socket.clone(), e);
        let mut s = UnixStream::connect(&self.socket).map_err(unreachable)?;
        let body = body.map(|b| serde_json::to_vec(b).expect("serializing a request")).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: moat\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).and_then(|()| s.write_all(&body)).map_err(unreachable)?;
        let mut raw = Vec::new();
        s.take(MAX_RESPONSE).read_to_end(&mut raw).map_err(unreachable)?;
        parse_response(&raw)
    }

    fn json<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.call(method, path, body)?;
        if (200..300).contains(&status) {
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Malformed(e.to_string()))
        } else {
            let mut err: ApiError = serde_json::from_slice(&bytes)
                .map_err(|_| ClientError::Malformed(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes))))?;
            err.status = status;
            Err(err.into())
        }
    }

    /// `GET /v1/version`.
    pub fn version(&self) -> Result<VersionInfo, ClientError> {
        self.json("GET", "/v1/version", None)
    }

    /// `GET /v1/sandboxes`.
    pub fn list(&self) -> Result<Vec<SandboxInfo>, ClientError> {
        self.json("GET", "/v1/sandboxes", None)
    }

    /// `GET /v1/sandboxes/{name}`.
    pub fn get(&self, name: &str) -> Result<SandboxInfo, ClientError> {
        self.json("GET", &format!("/v1/sandboxes/{}", encode(name)), None)
    }

    /// `POST /v1/sandboxes`.
    pub fn create(&self, req: &CreateRequest, cwd: &Path) -> Result<SandboxInfo, ClientError> {
        let mut body = serde_json::to_value(req).expect("serializing a request");
        body["cwd"] = serde_json::to_value(cwd).expect("a path");
        self.json("POST", "/v1/sandboxes", Some(&body))
    }

    /// `POST /v1/sandboxes/{name}/start`.
    pub fn start(&self, name: &str) -> Result<SandboxInfo, ClientError> {
        self.json("POST", &format!("/v1/sandboxes/{}/start", encode(name)), None)
    }

    /// `POST /v1/sandboxes/{name}/stop`.
    pub fn stop(&self, name: &str) -> Result<SandboxInfo, ClientError> {
        self.json("POST", &format!("/v1/sandboxes/{}/stop", encode(name)), None)
    }

    /// `DELETE /v1/sandboxes/{name}[?force=true]`.
    pub fn remove(&self, name: &str, force: bool) -> Result<(), ClientError> {
        let query = if force { "?force=true" } else { "" };
        self.json::<serde_json::Value>("DELETE", &format!("/v1/sandboxes/{}{query}", encode(name)), None).map(drop)
    }

    /// `GET /v1/templates`.
    pub fn templates(&self) -> Result<Vec<TemplateInfo>, ClientError> {
        self.json("GET", "/v1/templates", None)
    }

    /// `GET /v1/templates/{name}`.
    pub fn template(&self, name: &str) -> Result<TemplateInfo, ClientError> {
        self.json("GET", &format!("/v1/templates/{}", encode(name)), None)
    }

    /// `POST /v1/templates`: save a sandbox as a template.
    pub fn save_template(&self, req: &SaveRequest) -> Result<TemplateInfo, ClientError> {
        self.json("POST", "/v1/templates", Some(&serde_json::to_value(req).expect("serializing a request")))
    }

    /// `POST /v1/templates/import`.
    pub fn import_template(&self, req: &ImportRequest) -> Result<TemplateInfo, ClientError> {
        self.json("POST", "/v1/templates/import", Some(&serde_json::to_value(req).expect("serializing a request")))
    }

    /// `POST /v1/templates/programs`.
    pub fn programs_template(&self, req: &ProgramsRequest) -> Result<TemplateInfo, ClientError> {
        self.json("POST", "/v1/templates/programs", Some(&serde_json::to_value(req).expect("serializing a request")))
    }

    /// `POST /v1/templates/{name}/export`.
    pub fn export_template(&self, name: &str, file: &Path) -> Result<Exported, ClientError> {
        let body = serde_json::json!({ "file": file });
        self.json("POST", &format!("/v1/templates/{}/export", encode(name)), Some(&body))
    }

    /// `DELETE /v1/templates/{name}`.
    pub fn remove_template(&self, name: &str) -> Result<(), ClientError> {
        self.json::<serde_json::Value>("DELETE", &format!("/v1/templates/{}", encode(name)), None).map(drop)
    }

    /// `POST /v1/daemon/stop`.
    pub fn stop_daemon(&self) -> Result<(), ClientError> {
        self.json::<serde_json::Value>("POST", "/v1/daemon/stop", None).map(drop)
    }
}

/// Percent-encodes a path segment.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), ClientError> {
    let bad = |m: &str| ClientError::Malformed(m.to_string());
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no header end"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("non-UTF-8 header"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 =
        status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("no status code"))?;
    let mut body = raw[split + 4..].to_vec();
    let chunked = lines.clone().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.to_ascii_lowercase().contains("chunked")
    });
    if let Some(len) =
        lines.find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
    {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        if body.len() < len {
            return Err(bad("truncated body"));
        }
        body.truncate(len);
    } else if chunked {
        return Err(bad("chunked responses are not used by the moat daemon"));
    }
    Ok((status, body))
}

/// How to run the daemon when it isn't running: `program args…`, detached.
#[derive(Debug, Clone)]
pub struct DaemonCommand {
    /// Program (by default this executable).
    pub program: PathBuf,
    /// Arguments (by default `daemon run`).
    pub args: Vec<String>,
}

/// A client for `home`'s daemon, starting the daemon first if nobody answers.
pub fn connect_or_start(home: &Home, start: &DaemonCommand) -> Result<DaemonClient, ClientError> {
    let client = DaemonClient::new(home.daemon_socket());
    match client.version() {
        Ok(v) if v.build == super::api::build_id() => return Ok(client),
        // A daemon from another build (an upgrade, a rebuild): replace it. Running
        // sandboxes don't notice; they belong to their supervisors.
        Ok(_) => {
            let _ = client.stop_daemon();
            let deadline = Instant::now() + Duration::from_secs(5);
            while client.version().is_ok() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Err(_) => {}
    }
    start_daemon(home, start)?;
    Ok(client)
}

/// Starts the daemon in the background and waits until it answers.
pub fn start_daemon(home: &Home, start: &DaemonCommand) -> Result<VersionInfo, ClientError> {
    let failed = |m: String| ClientError::StartFailed(m);
    home.ensure_private().map_err(|e| failed(format!("cannot create {}: {e}", home.root().display())))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.daemon_log())
        .map_err(|e| failed(format!("cannot open {}: {e}", home.daemon_log().display())))?;
    let mut cmd = Command::new(&start.program);
    cmd.args(&start.args)
        .env("MOAT_HOME", home.root())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| failed(e.to_string()))?)
        .stderr(log);
    // SAFETY: runs in the forked child before exec; setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(std::io::Error::from));
    }
    let mut child = cmd.spawn().map_err(|e| failed(format!("{}: {e}", start.program.display())))?;
    let client = DaemonClient::new(home.daemon_socket());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(v) = client.version() {
            // The daemon lives on in its own session; reap it if it ever exits while we run.
            crate::threads::spawn_without_signals(move || child.wait());
            return Ok(v);
        }
        if let Ok(Some(st)) = child.try_wait() {
            // Another daemon may have won a race to the lock: accept it if it answers.
            if let Ok(v) = client.version() {
                return Ok(v);
            }
            return Err(failed(format!("it exited ({st}); see {}", home.daemon_log().display())));
        }
        if Instant::now() > deadline {
            return Err(failed(format!("it did not answer within 10 s; see {}", home.daemon_log().display())));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_with_and_without_length() {
        let (s, b) = parse_response(b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}junk").unwrap();
        assert_eq!((s, b.as_slice()), (404, &b"{}"[..]));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}").is_err());
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn names_are_encoded_as_one_segment() {
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
        assert_eq!(encode("shell-x.1"), "shell-x.1");
    }
}
