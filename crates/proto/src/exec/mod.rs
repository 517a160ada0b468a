//! The exec wire protocol between the host and the guest agent, version 1.
//!
//! One stream connection (vsock port [`AGENT_PORT`]) carries one request. Every
//! message is a frame:
//!
//! ```text
//! +----------------+--------+---------------------+
//! | len: u32 (BE)  | kind:u8| payload: len bytes  |
//! +----------------+--------+---------------------+
//! ```
//!
//! A whole frame is at most [`MAX_FRAME`] bytes (32 KiB). The bound began as a
//! workaround (the vsock backend Moat used to run wedged when a guest wrote more
//! than 32 KiB at once; see ARCHITECTURE.md) and stays as a cheap bound: a reader
//! rejects any larger length before allocating anything.
//!
//! Control frames carry JSON; data frames carry raw bytes. The conversation:
//!
//! 1. client → [`Frame::Request`] (JSON [`Request`], with `v` = [`VERSION`]);
//! 2. agent → [`Frame::Started`] or [`Frame::Error`] (then the agent closes);
//! 3. both ways until the process ends: `Stdin`/`StdinEof`/`Resize`/`Signal`
//!    from the client, `Stdout`/`Stderr` from the agent;
//! 4. agent → [`Frame::Exit`] and closes.
//!
//! Stdin is flow-controlled: the client keeps at most [`STDIN_WINDOW`] bytes of
//! `Stdin` payload unacknowledged, and the agent answers every `Stdin` frame it
//! reads with [`Frame::StdinAck`]. The window stays well under the guest socket's
//! receive buffer, so the vsock credit never runs out (the backend Moat used to
//! run could stall a connection for good when it did).
//!
//! The protocol never relies on a half-close from the guest side (the old backend
//! dropped it); end of input is an explicit frame.
//! Unknown frame kinds, bad JSON and oversize lengths are errors, never panics.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Protocol version spoken by this build.
pub const VERSION: u32 = 1;
/// vsock port the guest agent listens on.
pub const AGENT_PORT: u32 = 1024;
/// Largest frame, header included.
pub const MAX_FRAME: usize = 32 * 1024;
/// Bytes before the payload: length and kind.
pub const HEADER_LEN: usize = 5;
/// Largest payload of one frame.
pub const MAX_PAYLOAD: usize = MAX_FRAME - HEADER_LEN;
/// Most `Stdin` payload bytes a client may have sent and not yet seen acknowledged.
pub const STDIN_WINDOW: usize = 128 * 1024;

/// What a client asks of the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version the client speaks.
    pub v: u32,
    /// The operation.
    #[serde(flatten)]
    pub op: Op,
}

/// The operations of version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Liveness check; answered with [`Frame::Pong`].
    Ping,
    /// Run a process.
    Exec(ExecRequest),
    /// Power the VM off cleanly (sync, unmount, reboot the machine away).
    Shutdown,
}

/// A process to run in the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program and arguments; `argv[0]` is looked up in `PATH`.
    pub argv: Vec<String>,
    /// Extra environment, applied over the user's login defaults.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory; the user's home when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    /// User name or numeric uid; `agent` when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Allocate a terminal of this size (stdout and stderr then share it).
    #[serde(default)]
    pub tty: Option<WinSize>,
    /// Keep the process's stdin open for `Stdin` frames; otherwise it reads `/dev/null`.
    #[serde(default)]
    pub stdin: bool,
}

/// A terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention: the code, or 128 + signal.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

/// The agent's answer to [`Op::Ping`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// Protocol version of the agent.
    pub version: u32,
    /// Agent build, e.g. `moat-guest-agent 0.1.0`.
    pub agent: String,
    /// Guest uptime in milliseconds.
    pub uptime_ms: u64,
}

/// A failure reported by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    /// Stable machine-readable class, e.g. `not_found`, `bad_request`, `version`.
    pub kind: String,
    /// Human-readable message.
    pub message: String,
}

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client → agent: the request (first frame of a connection).
    Request(Request),
    /// Agent → client: the process started with this guest pid.
    Started { pid: u32 },
    /// Client → agent: bytes for the process's stdin (or terminal).
    Stdin(Vec<u8>),
    /// Client → agent: the process's stdin is at end.
    StdinEof,
    /// Agent → client: bytes the process wrote to stdout (or its terminal).
    Stdout(Vec<u8>),
    /// Agent → client: bytes the process wrote to stderr.
    Stderr(Vec<u8>),
    /// Client → agent: the terminal changed size.
    Resize(WinSize),
    /// Client → agent: deliver this signal to the process group.
    Signal(i32),
    /// Agent → client: the process ended; the agent closes after this.
    Exit(ExitStatus),
    /// Agent → client: the request failed.
    Error(RemoteError),
    /// Agent → client: answer to a ping.
    Pong(Pong),
    /// Agent → client: it read this many bytes of `Stdin` payload off the connection.
    StdinAck(u32),
}

mod kind {
    pub const REQUEST: u8 = 1;
    pub const STARTED: u8 = 2;
    pub const STDIN: u8 = 3;
    pub const STDIN_EOF: u8 = 4;
    pub const STDOUT: u8 = 5;
    pub const STDERR: u8 = 6;
    pub const RESIZE: u8 = 7;
    pub const SIGNAL: u8 = 8;
    pub const EXIT: u8 = 9;
    pub const ERROR: u8 = 10;
    pub const PONG: u8 = 11;
    pub const STDIN_ACK: u8 = 12;
}

/// Why bytes could not become a frame.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The length field exceeds [`MAX_PAYLOAD`].
    #[error("frame payload of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLong(usize),
    /// The kind byte is not one of version 1's.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// A fixed-size payload had the wrong size.
    #[error("frame kind {kind} needs {want} payload bytes, got {got}")]
    BadSize { kind: u8, want: usize, got: usize },
    /// A JSON payload did not parse.
    #[error("malformed JSON in frame kind {kind}")]
    Json {
        kind: u8,
        #[source]
        source: serde_json::Error,
    },
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The transport failed.
    #[error("connection to the guest agent failed")]
    Io(#[from] io::Error),
    /// The peer sent something that is not a valid frame.
    #[error("malformed frame from peer")]
    Decode(#[from] DecodeError),
    /// A data payload was larger than one frame may carry.
    #[error("payload of {0} bytes does not fit one frame; split it")]
    PayloadTooLarge(usize),
}

impl Frame {
    fn kind(&self) -> u8 {
        match self {
            Frame::Request(_) => kind::REQUEST,
            Frame::Started { .. } => kind::STARTED,
            Frame::Stdin(_) => kind::STDIN,
            Frame::StdinEof => kind::STDIN_EOF,
            Frame::Stdout(_) => kind::STDOUT,
            Frame::Stderr(_) => kind::STDERR,
            Frame::Resize(_) => kind::RESIZE,
            Frame::Signal(_) => kind::SIGNAL,
            Frame::Exit(_) => kind::EXIT,
            Frame::Error(_) => kind::ERROR,
            Frame::Pong(_) => kind::PONG,
            Frame::StdinAck(_) => kind::STDIN_ACK,
        }
    }

    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let start = out.len();
        out.extend_from_slice(&[0, 0, 0, 0, self.kind()]);
        match self {
            Frame::Request(r) => json_into(out, r),
            Frame::Started { pid } => json_into(out, &serde_json::json!({ "pid": pid })),
            Frame::Stdin(b) | Frame::Stdout(b) | Frame::Stderr(b) => out.extend_from_slice(b),
            Frame::StdinEof => {}
            Frame::Resize(ws) => {
                out.extend_from_slice(&ws.rows.to_be_bytes());
                out.extend_from_slice(&ws.cols.to_be_bytes());
            }
            Frame::Signal(s) => out.extend_from_slice(&s.to_be_bytes()),
            Frame::Exit(st) => json_into(out, st),
            Frame::Error(e) => json_into(out, e),
            Frame::Pong(p) => json_into(out, p),
            Frame::StdinAck(n) => out.extend_from_slice(&n.to_be_bytes()),
        }
        let len = out.len() - start - HEADER_LEN;
        if len > MAX_PAYLOAD {
            out.truncate(start);
            return Err(FrameError::PayloadTooLarge(len));
        }
        out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }

    /// Decodes one frame from the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a frame, otherwise the frame
    /// and how many bytes it used. Rejects oversize lengths as soon as the header is in.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(DecodeError::TooLong(len));
        }
        let kind = buf[4];
        if buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let p = &buf[HEADER_LEN..HEADER_LEN + len];
        let frame = match kind {
            kind::REQUEST => Frame::Request(json_from(kind, p)?),
            kind::STARTED => {
                #[derive(Deserialize)]
                struct Started {
                    pid: u32,
                }
                let s: Started = json_from(kind, p)?;
                Frame::Started { pid: s.pid }
            }
            kind::STDIN => Frame::Stdin(p.to_vec()),
            kind::STDIN_EOF => {
                fixed::<0>(kind, p)?;
                Frame::StdinEof
            }
            kind::STDOUT => Frame::Stdout(p.to_vec()),
            kind::STDERR => Frame::Stderr(p.to_vec()),
            kind::RESIZE => {
                let b = fixed::<4>(kind, p)?;
                Frame::Resize(WinSize {
                    rows: u16::from_be_bytes([b[0], b[1]]),
                    cols: u16::from_be_bytes([b[2], b[3]]),
                })
            }
            kind::SIGNAL => Frame::Signal(i32::from_be_bytes(fixed::<4>(kind, p)?)),
            kind::EXIT => Frame::Exit(json_from(kind, p)?),
            kind::ERROR => Frame::Error(json_from(kind, p)?),
            kind::PONG => Frame::Pong(json_from(kind, p)?),
            kind::STDIN_ACK => Frame::StdinAck(u32::from_be_bytes(fixed::<4>(kind, p)?)),
            other => return Err(DecodeError::UnknownKind(other)),
        };
        Ok(Some((frame, HEADER_LEN + len)))
    }
}

fn json_into<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    // Serializing our own plain structs into a Vec cannot fail.
    serde_json::to_writer(&mut *out, value).expect("serializing a protocol struct");
}

fn json_from<'a, T: Deserialize<'a>>(kind: u8, p: &'a [u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(p).map_err(|source| DecodeError::Json { kind, source })
}

fn fixed<const N: usize>(kind: u8, p: &[u8]) -> Result<[u8; N], DecodeError> {
    p.try_into().map_err(|_| DecodeError::BadSize { kind, want: N, got: p.len() })
}

/// Reads frames from a byte stream, one at a time, with a bounded buffer.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
}

impl<R: Read> FrameReader<R> {
    /// Wraps a stream.
    pub fn new(inner: R) -> Self {
        FrameReader { inner, buf: Vec::with_capacity(MAX_FRAME), start: 0 }
    }

    /// The next frame, or `None` at a clean end of stream (between frames).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            if let Some((frame, used)) = Frame::decode(&self.buf[self.start..])? {
                self.start += used;
                return Ok(Some(frame));
            }
            // Compact, then read more; the buffer never holds more than one frame plus a read.
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let have = self.buf.len();
            self.buf.resize(have + MAX_FRAME, 0);
            let n = loop {
                match self.inner.read(&mut self.buf[have..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r,
                }
            };
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(have);
                    return Err(e.into());
                }
            };
            self.buf.truncate(have + n);
            if n == 0 {
                return if have == 0 {
                    Ok(None)
                } else {
                    Err(io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended inside a frame").into())
                };
            }
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

/// Writes one frame with a single `write_all` of at most [`MAX_FRAME`] bytes.
pub fn write_frame<W: Write>(w: &mut W, frame: &Frame) -> Result<(), FrameError> {
    let mut buf = Vec::with_capacity(64);
    frame.encode(&mut buf)?;
    w.write_all(&buf)?;
    Ok(())
}

/// Writes `data` as as many frames as it takes, built by `make` (e.g. `Frame::Stdout`).
pub fn write_data<W: Write>(w: &mut W, data: &[u8], make: fn(Vec<u8>) -> Frame) -> Result<(), FrameError> {
    for chunk in data.chunks(MAX_PAYLOAD) {
        write_frame(w, &make(chunk.to_vec()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
