//! One connection: the state machine between a guest stream socket and a host
//! Unix stream, with credit flow control both ways.
//!
//! Host to guest needs no buffer: bytes stay in the host socket until the guest
//! has both credit and an RX buffer for them. Guest to host is written straight
//! to the host socket; what the host doesn't take at once waits in a buffer of
//! at most [`BUF_ALLOC`] bytes, which is exactly the credit the guest gets, so a
//! guest that honours credit never overflows it and one that doesn't is reset.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;

use crate::packet::{Header, Op, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};

/// Receive buffer advertised to the guest for each connection (`buf_alloc`):
/// the most guest data held for a host reader that is slow to read.
pub const BUF_ALLOC: u32 = 128 * 1024;
/// The guest hears about freed space once what it believes is free drops below this.
const CREDIT_UPDATE_BELOW: u32 = BUF_ALLOC / 2;
/// An emptied buffer bigger than this gives its memory back.
const KEEP_CAPACITY: usize = 16 * 1024;

/// A connection's ports: the host end and the guest end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Port on the host side (CID 2).
    pub host_port: u32,
    /// Port on the guest side.
    pub guest_port: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Host-initiated: REQUEST sent or due, waiting for the guest's RESPONSE.
    Connecting,
    Established,
    /// Finished or aborted: only an RST is left to send.
    Closing,
    /// RST sent: remove.
    Closed,
}

/// Packets owed to the guest, apart from data.
#[derive(Debug, Default, Clone, Copy)]
struct Owed {
    request: bool,
    response: bool,
    shutdown: bool,
    credit_update: bool,
    rst: bool,
}

impl Owed {
    fn any(&self) -> bool {
        self.request || self.response || self.shutdown || self.credit_update || self.rst
    }
}

/// What [`Conn::on_guest_packet`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the connection.
    Keep,
    /// The connection broke a rule (credit, op, order) and is being reset.
    Violation,
    /// The guest reset it: remove it now, nothing to send.
    Remove,
}

/// What [`Conn::next_packet`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A packet: its header (payload, `len` bytes, is at the start of the scratch buffer).
    Packet(Header),
    /// Nothing to send now.
    Idle,
    /// Only data is due and the buffer has no room past the header.
    NeedRoom,
}

/// One guest ⇄ host stream.
#[derive(Debug)]
pub struct Conn {
    stream: UnixStream,
    key: ConnKey,
    guest_cid: u64,
    phase: Phase,
    owed: Owed,
    /// Guest data the host hasn't taken yet.
    to_host: VecDeque<u8>,
    /// Bytes accepted from the guest, ever.
    received: Wrapping<u32>,
    /// Bytes written to the host stream, ever.
    fwd_cnt: Wrapping<u32>,
    /// `fwd_cnt` as last told to the guest.
    fwd_cnt_told: Wrapping<u32>,
    guest_done_sending: bool,
    host_write_closed: bool,
    /// The host stream has data (or EOF) we haven't read.
    readable: bool,
    host_eof: bool,
    eof_told: bool,
    guest_done_receiving: bool,
    /// Bytes sent to the guest, ever.
    sent: Wrapping<u32>,
    guest_buf_alloc: u32,
    guest_fwd_cnt: Wrapping<u32>,
    credit_asked: bool,
}

impl Conn {
    /// A connection the guest asked for (its REQUEST is `hdr`); a RESPONSE is owed.
    pub fn guest_initiated(stream: UnixStream, key: ConnKey, guest_cid: u64, hdr: &Header) -> Conn {
        let mut c = Conn::new(stream, key, guest_cid, Phase::Established);
        c.owed.response = true;
        c.absorb_credit(hdr);
        c
    }

    /// A connection a host process asked for; a REQUEST is owed.
    pub fn host_initiated(stream: UnixStream, key: ConnKey, guest_cid: u64) -> Conn {
        let mut c = Conn::new(stream, key, guest_cid, Phase::Connecting);
        c.owed.request = true;
        c
    }

    fn new(stream: UnixStream, key: ConnKey, guest_cid: u64, phase: Phase) -> Conn {
        Conn {
            stream,
            key,
            guest_cid,
            phase,
            owed: Owed::default(),
            to_host: VecDeque::new(),
            received: Wrapping(0),
            fwd_cnt: Wrapping(0),
            fwd_cnt_told: Wrapping(0),
            guest_done_sending: false,
            host_write_closed: false,
            readable: false,
            host_eof: false,
            eof_told: false,
            guest_done_receiving: false,
            sent: Wrapping(0),
            guest_buf_alloc: 0,
            guest_fwd_cnt: Wrapping(0),
            credit_asked: false,
        }
    }

    /// The host stream.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Guest data waiting for the host to read it.
    pub fn buffered(&self) -> usize {
        self.to_host.len()
    }

    /// The RST has gone out: remove the connection.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Absorbs one guest packet addressed to this connection (`payload` is its data).
    pub fn on_guest_packet(&mut self, hdr: &Header, payload: &[u8]) -> Verdict {
        self.absorb_credit(hdr);
        let Some(op) = hdr.op() else {
            return self.violation();
        };
        if op == Op::Rst {
            return Verdict::Remove;
        }
        match (op, self.phase) {
            // Once aborted, wait for our RST to go out; the guest's packets no longer matter.
            (_, Phase::Closing | Phase::Closed) => Verdict::Keep,
            (Op::Response, Phase::Connecting) => {
                self.phase = Phase::Established;
                // The host client learns the connection is up before any of its data can arrive.
                let line = format!("OK {}\n", self.key.host_port);
                match write_some(&mut self.stream, line.as_bytes()) {
                    Ok(n) if n == line.len() => Verdict::Keep,
                    _ => self.abort(),
                }
            }
            (Op::Rw, Phase::Established) if !self.guest_done_sending => self.take_data(payload),
            (Op::Shutdown, Phase::Established) => {
                if hdr.flags & SHUTDOWN_RCV != 0 && !self.guest_done_receiving {
                    self.guest_done_receiving = true;
                    let _ = self.stream.shutdown(Shutdown::Read);
                }
                self.guest_done_sending |= hdr.flags & SHUTDOWN_SEND != 0;
                self.after_progress();
                Verdict::Keep
            }
            (Op::CreditUpdate, _) => Verdict::Keep,
            (Op::CreditRequest, Phase::Established) => {
                self.owed.credit_update = true;
                Verdict::Keep
            }
            _ => self.violation(),
        }
    }

    /// The host stream became readable (or hung up).
    pub fn on_readable(&mut self) {
        self.readable = true;
    }

    /// The host stream became writable: flush what the guest sent.
    pub fn on_writable(&mut self) {
        while !self.to_host.is_empty() && self.phase == Phase::Established {
            let (front, _) = self.to_host.as_slices();
            match self.stream.write(front) {
                Ok(0) => {
                    self.abort();
                }
                Ok(n) => {
                    self.to_host.drain(..n);
                    self.fwd_cnt += Wrapping(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.abort();
                }
            }
        }
        if self.to_host.is_empty() && self.to_host.capacity() > KEEP_CAPACITY {
            self.to_host = VecDeque::new();
        }
        self.after_progress();
    }

    /// Whether the host stream should be watched for reading and for writing.
    pub fn interest(&self) -> (bool, bool) {
        let open = self.phase == Phase::Established;
        let read = open && !self.readable && !self.host_eof && !self.guest_done_receiving;
        (read, open && !self.to_host.is_empty())
    }

    /// Whether [`Conn::next_packet`] has something to send now (given an RX buffer).
    pub fn has_rx_work(&self) -> bool {
        self.owed.any() || (self.wants_to_read() && (self.credit() > 0 || !self.credit_asked))
    }

    /// Produces the next packet for the guest. `scratch` receives the payload; at
    /// most `room` bytes of it are used.
    pub fn next_packet(&mut self, scratch: &mut [u8], room: usize) -> Next {
        if self.owed.rst {
            self.owed = Owed::default();
            self.phase = Phase::Closed;
            return Next::Packet(self.header(Op::Rst, 0, 0));
        }
        if std::mem::take(&mut self.owed.response) {
            return Next::Packet(self.header(Op::Response, 0, 0));
        }
        if std::mem::take(&mut self.owed.request) {
            return Next::Packet(self.header(Op::Request, 0, 0));
        }
        if self.wants_to_read() {
            let credit = self.credit();
            if credit == 0 {
                if !self.credit_asked {
                    self.credit_asked = true;
                    return Next::Packet(self.header(Op::CreditRequest, 0, 0));
                }
            } else if room == 0 {
                if !self.owed.any() {
                    return Next::NeedRoom;
                }
            } else if let Some(next) = self.read_host(scratch, room.min(credit)) {
                return next;
            }
        }
        if std::mem::take(&mut self.owed.shutdown) {
            self.eof_told = true;
            self.after_progress();
            return Next::Packet(self.header(Op::Shutdown, SHUTDOWN_SEND, 0));
        }
        if std::mem::take(&mut self.owed.credit_update) {
            return Next::Packet(self.header(Op::CreditUpdate, 0, 0));
        }
        Next::Idle
    }

    /// Reads host data for one RW packet; `None` when there is none to send now.
    fn read_host(&mut self, scratch: &mut [u8], max: usize) -> Option<Next> {
        let max = max.min(scratch.len());
        loop {
            match self.stream.read(&mut scratch[..max]) {
                Ok(0) => {
                    self.host_eof = true;
                    self.owed.shutdown = true;
                    return None;
                }
                Ok(n) => {
                    self.sent += Wrapping(n as u32);
                    return Some(Next::Packet(self.header(Op::Rw, 0, n as u32)));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.readable = false;
                    return None;
                }
                Err(_) => {
                    self.abort();
                    return Some(self.next_packet(scratch, 0));
                }
            }
        }
    }

    fn header(&mut self, op: Op, flags: u32, len: u32) -> Header {
        self.fwd_cnt_told = self.fwd_cnt;
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.key.host_port,
            dst_port: self.key.guest_port,
            len,
            kind: TYPE_STREAM,
            op: op as u16,
            flags,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    fn absorb_credit(&mut self, hdr: &Header) {
        self.guest_buf_alloc = hdr.buf_alloc;
        self.guest_fwd_cnt = Wrapping(hdr.fwd_cnt);
        self.credit_asked = false;
    }

    /// Bytes the guest can take now. A guest claiming to have consumed more than
    /// it was sent gets none, not a wrapped-around fortune.
    fn credit(&self) -> usize {
        let in_flight = (self.sent - self.guest_fwd_cnt).0;
        self.guest_buf_alloc.saturating_sub(in_flight) as usize
    }

    fn wants_to_read(&self) -> bool {
        self.phase == Phase::Established && self.readable && !self.host_eof && !self.guest_done_receiving
    }

    fn take_data(&mut self, payload: &[u8]) -> Verdict {
        if self.to_host.len() + payload.len() > BUF_ALLOC as usize {
            return self.violation();
        }
        self.received += Wrapping(payload.len() as u32);
        let mut written = 0;
        if self.to_host.is_empty() {
            written = match write_some(&mut self.stream, payload) {
                Ok(n) => n,
                Err(_) => return self.abort(),
            };
            self.fwd_cnt += Wrapping(written as u32);
        }
        self.to_host.extend(&payload[written..]);
        self.after_progress();
        Verdict::Keep
    }

    /// After data moved or a side shut down: half-close the host stream, tell the
    /// guest about space it can't see, finish the connection when both sides are done.
    fn after_progress(&mut self) {
        if self.phase != Phase::Established {
            return;
        }
        if self.guest_done_sending && self.to_host.is_empty() && !self.host_write_closed {
            self.host_write_closed = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        let told_in_flight = (self.received - self.fwd_cnt_told).0;
        if self.fwd_cnt != self.fwd_cnt_told && BUF_ALLOC.saturating_sub(told_in_flight) < CREDIT_UPDATE_BELOW {
            self.owed.credit_update = true;
        }
        let to_guest_done = self.eof_told || self.guest_done_receiving;
        if self.host_write_closed && to_guest_done && !self.owed.shutdown {
            self.phase = Phase::Closing;
            self.owed = Owed { rst: true, ..Owed::default() };
        }
    }

    /// Resets the connection: the host client sees EOF now, the guest gets an RST.
    pub fn reset(&mut self) {
        self.abort();
    }

    /// Resets the connection because the guest broke the protocol.
    fn violation(&mut self) -> Verdict {
        self.abort();
        Verdict::Violation
    }

    /// Resets the connection: the host client sees EOF now, the guest an RST.
    fn abort(&mut self) -> Verdict {
        self.phase = Phase::Closing;
        self.owed = Owed { rst: true, ..Owed::default() };
        self.to_host = VecDeque::new();
        let _ = self.stream.shutdown(Shutdown::Both);
        Verdict::Keep
    }
}

/// Writes what the nonblocking `stream` takes now.
fn write_some(stream: &mut UnixStream, buf: &[u8]) -> io::Result<usize> {
    loop {
        match stream.write(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        }
    }
}

/// A header-only RST from the host to a guest port with no connection.
pub fn rst_for(guest_cid: u64, to: &Header) -> Header {
    Header {
        src_cid: HOST_CID,
        dst_cid: guest_cid,
        src_port: to.dst_port,
        dst_port: to.src_port,
        kind: to.kind,
        op: Op::Rst as u16,
        ..Header::default()
    }
}

#[cfg(test)]
mod tests;
