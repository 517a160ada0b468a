//! A minimal client for the exec protocol, and a shared in-process server.

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use moat_guest_agent::server::{Server, ServerConfig};
use moat_proto::exec::{write_frame, ExecRequest, ExitStatus, Frame, FrameReader, Op, RemoteError, Request, VERSION};

/// How many times the test server's shutdown hook ran.
pub static SHUTDOWNS: AtomicUsize = AtomicUsize::new(0);

fn server() -> Arc<Server> {
    static SERVER: OnceLock<Arc<Server>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            // There is no `agent` user on a test host.
            let config = ServerConfig { default_user: "root".into(), ..ServerConfig::default() };
            Arc::new(Server::new(config, || {
                SHUTDOWNS.fetch_add(1, Ordering::SeqCst);
            }))
        })
        .clone()
}

/// One client connection to the test server.
pub struct Client {
    pub writer: UnixStream,
    reader: FrameReader<UnixStream>,
    server: Option<JoinHandle<()>>,
    /// Stdin bytes the agent has acknowledged so far (flow control).
    pub acked: u64,
}

impl Client {
    /// Connects a fresh socket pair to the server (served on its own thread).
    pub fn connect() -> Client {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let server = server();
        let handle = std::thread::spawn(move || server.serve_connection(theirs.into()));
        ours.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client { writer: ours.try_clone().unwrap(), reader: FrameReader::new(ours), server: Some(handle), acked: 0 }
    }

    /// Connects and sends an exec request.
    pub fn exec(req: ExecRequest) -> Client {
        let mut c = Client::connect();
        c.send(&Frame::Request(Request { v: VERSION, op: Op::Exec(req) }));
        c
    }

    pub fn send(&mut self, frame: &Frame) {
        write_frame(&mut self.writer, frame).unwrap();
    }

    /// The next frame; `None` when the server closed the connection.
    /// The next frame exactly as sent, flow-control acknowledgements included.
    pub fn recv_raw(&mut self) -> Option<Frame> {
        self.reader.next_frame().expect("reading a frame (timed out?)")
    }

    /// `StdinAck` frames are counted in `acked` and skipped.
    pub fn recv(&mut self) -> Option<Frame> {
        loop {
            match self.reader.next_frame().expect("reading a frame (timed out?)") {
                Some(Frame::StdinAck(n)) => self.acked += u64::from(n),
                other => return other,
            }
        }
    }

    /// Reads frames until the server closes, collecting them.
    pub fn finish(mut self) -> Outcome {
        let mut out = Outcome { acked: self.acked, ..Outcome::default() };
        while let Some(frame) = self.recv() {
            out.push(frame);
        }
        out.acked = self.acked;
        self.join_server();
        out
    }

    /// Asserts the server thread ended without panicking.
    pub fn join_server(&mut self) {
        if let Some(h) = self.server.take() {
            h.join().expect("server thread panicked");
        }
    }

    /// Reads until `Started`, returning the pid; panics on anything else.
    pub fn started(&mut self) -> u32 {
        match self.recv() {
            Some(Frame::Started { pid }) => pid,
            other => panic!("expected Started, got {other:?}"),
        }
    }
}

/// Everything a connection produced, in order.
#[derive(Debug, Default)]
pub struct Outcome {
    pub frames: Vec<&'static str>,
    pub started: Option<u32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: Option<ExitStatus>,
    pub error: Option<RemoteError>,
    /// Stdin bytes the agent acknowledged (flow control; not listed in `frames`).
    pub acked: u64,
}

impl Outcome {
    pub fn push(&mut self, frame: Frame) {
        if let Frame::StdinAck(n) = frame {
            self.acked += u64::from(n);
            return;
        }
        let name = match frame {
            Frame::Started { pid } => {
                self.started = Some(pid);
                "started"
            }
            Frame::Stdout(b) => {
                self.stdout.extend(b);
                "stdout"
            }
            Frame::Stderr(b) => {
                self.stderr.extend(b);
                "stderr"
            }
            Frame::Exit(s) => {
                self.exit = Some(s);
                "exit"
            }
            Frame::Error(e) => {
                self.error = Some(e);
                "error"
            }
            Frame::Pong(_) => "pong",
            other => panic!("the agent sent a client frame: {other:?}"),
        };
        self.frames.push(name);
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Asserts a normal session: Started first, Exit last, exactly once each.
    pub fn assert_well_formed(&self) {
        assert_eq!(self.frames.first(), Some(&"started"), "{:?}", self.frames);
        assert_eq!(self.frames.last(), Some(&"exit"), "{:?}", self.frames);
        assert_eq!(self.frames.iter().filter(|f| **f == "exit").count(), 1);
    }
}

/// `sh -c script` as root, no stdin, no tty.
pub fn sh(script: &str) -> ExecRequest {
    ExecRequest { argv: vec!["sh".into(), "-c".into(), script.into()], ..Default::default() }
}

/// Runs a request to completion.
pub fn run(req: ExecRequest) -> Outcome {
    Client::exec(req).finish()
}

/// Whether process `pid` is gone (no longer exists, or a zombie of someone else's).
pub fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

/// Polls `cond` for up to `secs` seconds.
pub fn eventually(secs: u64, cond: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}
