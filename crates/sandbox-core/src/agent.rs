//! The host end of the exec protocol: talking to a guest agent.
//!
//! The guest agent listens on vsock port [`AGENT_PORT`]. The vsock backend
//! exposes the guest to the host as a Unix socket ("hybrid vsock"): connect,
//! write `CONNECT <port>\n`, read `OK <port>\n`, then speak the protocol.
//!
//! ```no_run
//! # fn main() -> Result<(), moat_sandbox_core::agent::AgentError> {
//! use moat_sandbox_core::agent::{AgentConn, ExecRequest};
//! let conn = AgentConn::connect("/path/to/vsock.sock".as_ref())?;
//! let session = conn.exec(&ExecRequest { argv: vec!["uname".into(), "-a".into()], ..Default::default() })?;
//! let status = session.wait(|out| print!("{}", String::from_utf8_lossy(out)), |_| {})?;
//! # Ok(()) }
//! ```

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use moat_proto::exec::{write_frame, Frame, FrameError, FrameReader, Op, RemoteError, Request, VERSION};
pub use moat_proto::exec::{ExecRequest, ExitStatus, Pong, WinSize, AGENT_PORT, STDIN_WINDOW};

/// Why talking to the guest agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Could not reach the VM's vsock socket.
    #[error("cannot reach the sandbox VM (is it running? try `moat start NAME`)")]
    Unreachable(#[source] std::io::Error),
    /// The vsock backend refused the connection to the agent's port.
    #[error("the guest agent is not listening yet (backend answered {0:?})")]
    NotListening(String),
    /// The protocol failed.
    #[error("exec protocol error")]
    Protocol(#[from] FrameError),
    /// The agent answered with an error.
    #[error("the guest refused: {}", .0.message)]
    Remote(RemoteError),
    /// The agent sent something out of order.
    #[error("unexpected message from the guest agent: {0}")]
    Unexpected(String),
}

/// A connection to the guest agent, before its one request.
#[derive(Debug)]
pub struct AgentConn {
    stream: UnixStream,
}

impl AgentConn {
    /// Connects to the agent through the VM's hybrid vsock socket.
    pub fn connect(vsock_socket: &Path) -> Result<AgentConn, AgentError> {
        let mut stream = UnixStream::connect(vsock_socket).map_err(AgentError::Unreachable)?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(AgentError::Unreachable)?;
        stream.write_all(format!("CONNECT {AGENT_PORT}\n").as_bytes()).map_err(AgentError::Unreachable)?;
        // Read the answer byte by byte: nothing after the newline belongs to us.
        let mut line = Vec::with_capacity(16);
        let mut byte = [0u8; 1];
        while line.len() < 64 {
            match stream.read(&mut byte) {
                Ok(0) => break,
                Ok(_) if byte[0] == b'\n' => break,
                Ok(_) => line.push(byte[0]),
                Err(e) => return Err(AgentError::NotListening(e.to_string())),
            }
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        if !line.starts_with("OK ") {
            return Err(AgentError::NotListening(line));
        }
        stream.set_read_timeout(None).map_err(AgentError::Unreachable)?;
        Ok(AgentConn { stream })
    }

    fn request(&mut self, op: Op) -> Result<(), AgentError> {
        Ok(write_frame(&mut self.stream, &Frame::Request(Request { v: VERSION, op }))?)
    }

    /// Asks the agent for its version and uptime.
    pub fn ping(mut self) -> Result<Pong, AgentError> {
        self.stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(AgentError::Unreachable)?;
        self.request(Op::Ping)?;
        match FrameReader::new(&self.stream).next_frame()? {
            Some(Frame::Pong(p)) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    /// Asks the guest to power off cleanly.
    pub fn shutdown(mut self) -> Result<(), AgentError> {
        self.request(Op::Shutdown)
    }

    /// Starts a process in the guest.
    pub fn exec(mut self, req: &ExecRequest) -> Result<ExecSession, AgentError> {
        self.request(Op::Exec(req.clone()))?;
        let writer = self.stream.try_clone().map_err(AgentError::Unreachable)?;
        let mut reader = FrameReader::new(self.stream);
        match reader.next_frame()? {
            Some(Frame::Started { pid }) => Ok(ExecSession {
                reader,
                input: ExecInput { writer: Arc::new(Mutex::new(writer)), window: Arc::default() },
                pid,
            }),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(frame: Option<Frame>) -> AgentError {
    match frame {
        Some(Frame::Error(e)) => AgentError::Remote(e),
        Some(f) => AgentError::Unexpected(format!("{f:?}").chars().take(200).collect()),
        None => AgentError::Unexpected("connection closed".into()),
    }
}

/// A running guest process.
#[derive(Debug)]
pub struct ExecSession {
    reader: FrameReader<UnixStream>,
    input: ExecInput,
    pid: u32,
}

/// The sending half of an exec: stdin, resizes, signals. Cheap to clone and share
/// with threads that read the terminal or catch signals.
///
/// Stdin is flow-controlled ([`STDIN_WINDOW`] bytes in flight): [`ExecInput::stdin`]
/// blocks until the agent acknowledges earlier input, which [`ExecSession::wait`]
/// reads — so send stdin from another thread than the one waiting.
#[derive(Debug, Clone)]
pub struct ExecInput {
    writer: Arc<Mutex<UnixStream>>,
    window: Arc<Window>,
}

/// Stdin bytes sent and not yet acknowledged; `closed` once the session ended.
#[derive(Debug, Default)]
struct Window {
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Window {
    /// Waits until `n` more bytes fit, then counts them as in flight.
    fn reserve(&self, n: usize) -> Result<(), AgentError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while st.0 + n > STDIN_WINDOW && !st.1 {
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if st.1 {
            return Err(AgentError::Unexpected("the process has ended".into()));
        }
        st.0 += n;
        Ok(())
    }

    fn ack(&self, n: usize) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.0 = st.0.saturating_sub(n);
        self.changed.notify_all();
    }

    fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.changed.notify_all();
    }
}

impl ExecInput {
    fn send(&self, frame: &Frame) -> Result<(), AgentError> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        Ok(write_frame(&mut *w, frame)?)
    }

    /// Sends bytes to the process's stdin (or terminal), waiting for window space.
    pub fn stdin(&self, data: &[u8]) -> Result<(), AgentError> {
        for chunk in data.chunks(STDIN_CHUNK) {
            self.window.reserve(chunk.len())?;
            self.send(&Frame::Stdin(chunk.to_vec()))?;
        }
        Ok(())
    }

    /// Ends the process's stdin.
    pub fn close_stdin(&self) -> Result<(), AgentError> {
        self.send(&Frame::StdinEof)
    }

    /// Tells the guest the terminal size changed.
    pub fn resize(&self, size: WinSize) -> Result<(), AgentError> {
        self.send(&Frame::Resize(size))
    }

    /// Delivers a signal to the process (group).
    pub fn signal(&self, signo: i32) -> Result<(), AgentError> {
        self.send(&Frame::Signal(signo))
    }

    /// Leaves the process: closes the connection, so [`ExecSession::wait`]
    /// returns and the guest ends the process group as for a lost client.
    pub fn hang_up(&self) {
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let _ = w.shutdown(std::net::Shutdown::Both);
    }
}

/// Stdin frame payload size: several frames fit in the window.
const STDIN_CHUNK: usize = 16 * 1024;

impl ExecSession {
    /// The guest pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A handle for sending input while [`ExecSession::wait`] runs.
    pub fn input(&self) -> ExecInput {
        self.input.clone()
    }

    /// Streams output to the callbacks until the process ends; returns how it ended.
    pub fn wait(
        mut self,
        mut on_stdout: impl FnMut(&[u8]),
        mut on_stderr: impl FnMut(&[u8]),
    ) -> Result<ExitStatus, AgentError> {
        // An Error frame mid-session (e.g. a refused signal) is not the end; the end is Exit.
        let mut last_error = None;
        let result = loop {
            let frame = match self.reader.next_frame() {
                Ok(f) => f,
                Err(e) => break Err(e.into()),
            };
            match frame {
                Some(Frame::Stdout(b)) => on_stdout(&b),
                Some(Frame::Stderr(b)) => on_stderr(&b),
                Some(Frame::StdinAck(n)) => self.input.window.ack(n as usize),
                Some(Frame::Exit(st)) => break Ok(st),
                Some(Frame::Error(e)) => last_error = Some(e),
                None => break Err(last_error.map(AgentError::Remote).unwrap_or_else(|| unexpected(None))),
                other => break Err(unexpected(other)),
            }
        };
        // Whoever still waits to send stdin learns that nobody will read it.
        self.input.window.close();
        result
    }
}
