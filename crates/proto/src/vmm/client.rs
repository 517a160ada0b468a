//! A client for the control socket, for `sandbox-core` and tests.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::protocol::{Request, Response, VmState, VmStats, MAX_RESPONSE_BYTES};

/// A request could not be made or was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("could not talk to the VMM's control socket")]
    Io(#[from] io::Error),
    #[error("the VMM closed the control connection")]
    Closed,
    #[error("the VMM sent a malformed or oversized answer")]
    Malformed,
    #[error("the VMM refused `{request}`: {reason}")]
    Refused { request: &'static str, reason: String },
}

/// One connection to a VMM's control socket.
#[derive(Debug)]
pub struct ApiClient {
    stream: BufReader<UnixStream>,
}

impl ApiClient {
    /// Connects to the socket at `path`; every answer must come within
    /// `timeout`.
    pub fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<Self, ApiError> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Self { stream: BufReader::new(stream) })
    }

    /// The VM's state.
    pub fn status(&mut self) -> Result<VmState, ApiError> {
        self.call(Request::Status).map(|r| r.state)
    }

    /// Lets the vCPUs of a VM launched paused run for the first time.
    pub fn start(&mut self) -> Result<VmState, ApiError> {
        self.call(Request::Start).map(|r| r.state)
    }

    /// Parks every vCPU; returns once all are parked.
    pub fn pause(&mut self) -> Result<VmState, ApiError> {
        self.call(Request::Pause).map(|r| r.state)
    }

    /// Lets the vCPUs run again.
    pub fn resume(&mut self) -> Result<VmState, ApiError> {
        self.call(Request::Resume).map(|r| r.state)
    }

    /// Asks the guest to power off; the VM is stopped if it does not in time.
    pub fn shutdown(&mut self) -> Result<VmState, ApiError> {
        self.call(Request::Shutdown).map(|r| r.state)
    }

    /// Stops the VM now.
    pub fn stop(&mut self) -> Result<VmState, ApiError> {
        self.call(Request::Stop).map(|r| r.state)
    }

    /// CPU time per vCPU and memory use.
    pub fn stats(&mut self) -> Result<VmStats, ApiError> {
        self.call(Request::Stats)?.stats.ok_or(ApiError::Malformed)
    }

    /// Sends `request` and reads its answer.
    pub fn call(&mut self, request: Request) -> Result<Response, ApiError> {
        let stream = self.stream.get_mut();
        stream.write_all(request.word().as_bytes())?;
        stream.write_all(b"\n")?;
        let mut line = Vec::new();
        let limit = MAX_RESPONSE_BYTES as u64;
        (&mut self.stream).take(limit).read_until(b'\n', &mut line)?;
        match line.last() {
            None => return Err(ApiError::Closed),
            Some(b'\n') => {}
            Some(_) => return Err(ApiError::Malformed),
        }
        let response: Response = serde_json::from_slice(&line).map_err(|_| ApiError::Malformed)?;
        match response.error {
            Some(reason) => Err(ApiError::Refused { request: request.word(), reason }),
            None => Ok(response),
        }
    }
}
