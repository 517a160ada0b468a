//! `agent_frames`: the guest agent's exec protocol decoder on bytes from a
//! hostile peer, whole and as a stream cut into arbitrary reads.
//!
//! Besides "no panic": a decoded frame never claims more bytes than it was
//! given, re-encodes and decodes to itself, the streaming reader agrees
//! with the one-shot decoder, and neither allocates more than a few frames'
//! worth ([`ALLOC_CAP`], plus a bounded cost per input byte) whatever the
//! length fields claim.

use std::io::{self, Read};

use moat_proto::exec::{Frame, FrameReader, HEADER_LEN, MAX_FRAME};

use crate::alloc;
use crate::input::{Input, Seed};

/// Most the heap may rise while one input is decoded.
pub const ALLOC_CAP: usize = 8 * MAX_FRAME;

/// A reader that hands out its bytes in the chunk sizes the input picks.
struct Chunked<'a> {
    data: &'a [u8],
    cuts: &'a [u8],
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let cut = self.cuts.split_first().map_or(usize::MAX, |(&c, rest)| {
            self.cuts = rest;
            usize::from(c) + 1
        });
        let n = cut.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Runs one input: a cut list, then the stream.
pub fn run(data: &[u8]) {
    let mut i = Input::new(data);
    let cuts = i.bytes();
    let stream = i.rest();
    let ((), grew) = alloc::measure(|| {
        let oneshot = decode_all(stream);
        let mut reader = FrameReader::new(Chunked { data: stream, cuts });
        let mut streamed = Vec::new();
        // The reader stops at the first error, as the agent does.
        while let Ok(Some(frame)) = reader.next_frame() {
            streamed.push(frame);
        }
        assert_eq!(streamed, oneshot, "the streaming reader and the decoder disagree");
    });
    assert!(grew <= ALLOC_CAP + 64 * stream.len(), "decoding grew the heap by {grew} bytes");
}

/// Frames decoded back to back until the bytes run out or stop making sense.
fn decode_all(mut buf: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Ok(Some((frame, used))) = Frame::decode(buf) {
        assert!((HEADER_LEN..=buf.len()).contains(&used), "a frame used {used} of {} bytes", buf.len());
        let mut again = Vec::new();
        frame.encode(&mut again).expect("a decoded frame re-encodes");
        let (back, n) = Frame::decode(&again).expect("re-encoded frame decodes").expect("whole");
        assert_eq!((&back, n), (&frame, again.len()), "a frame does not round-trip");
        frames.push(frame);
        buf = &buf[used..];
    }
    frames
}

/// Seeds: every frame kind, encoded by the protocol itself, streamed in
/// awkward cuts.
pub fn seeds() -> Vec<Vec<u8>> {
    use moat_proto::exec::{ExecRequest, ExitStatus, Op, Pong, RemoteError, Request, WinSize, VERSION};
    let frames = [
        Frame::Request(Request { v: VERSION, op: Op::Ping }),
        Frame::Request(Request {
            v: VERSION,
            op: Op::Exec(ExecRequest { argv: vec!["sh".into(), "-c".into(), "echo hi".into()], ..Default::default() }),
        }),
        Frame::Started { pid: 42 },
        Frame::Stdin(b"input".to_vec()),
        Frame::StdinEof,
        Frame::Stdout(vec![0; 300]),
        Frame::Stderr(b"oops".to_vec()),
        Frame::Resize(WinSize { rows: 24, cols: 80 }),
        Frame::Signal(15),
        Frame::Exit(ExitStatus::Code(0)),
        Frame::Error(RemoteError { kind: "not_found".into(), message: "no such program".into() }),
        Frame::Pong(Pong { version: VERSION, agent: "test".into(), uptime_ms: 7 }),
        Frame::StdinAck(5),
    ];
    let mut out = Vec::new();
    for (n, f) in frames.iter().enumerate() {
        let mut s = Seed::default();
        s.bytes(&[n as u8, 0, 3]);
        let mut b = Vec::new();
        f.encode(&mut b).expect("encodes");
        s.bytes.extend_from_slice(&b);
        out.push(s.bytes);
    }
    let mut all = Seed::default();
    all.bytes(&[4, 0, 250, 1]);
    for f in &frames {
        f.encode(&mut all.bytes).expect("encodes");
    }
    out.push(all.bytes);
    out
}
