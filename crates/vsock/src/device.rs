//! The vsock device without its transport: the connection table, the host
//! sockets (watched by one epoll of its own), and the order packets go to the
//! guest in. Virtqueues are walked in `virtq`; a transport (vhost-user
//! today, moat-vmm later) calls [`VsockDevice::process_tx`],
//! [`VsockDevice::process_rx`] and [`VsockDevice::handle_host_events`] and
//! watches [`VsockDevice::host_fd`].

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use crate::conn::{rst_for, Conn, ConnKey, Next, Verdict, BUF_ALLOC};
use crate::host::{Client, HostListener, Said};
use crate::packet::{Header, Op, HOST_CID, MAX_PAYLOAD, TYPE_STREAM};
use crate::stats::Stats;

/// Default cap on connections (established, opening, and host clients yet to
/// say `CONNECT`).
pub const MAX_CONNECTIONS: usize = 1024;
/// RSTs for unknown connections held while the guest gives no RX buffers.
const MAX_QUEUED_RSTS: usize = 256;
/// Host-side ports handed to host-initiated connections start here.
const FIRST_HOST_PORT: u32 = 1 << 30;
/// Epoll token of the listening socket; sockets get tokens from 1 up.
const LISTENER: u64 = 0;
/// Host events handled per call, so one busy host can't starve the guest.
const EVENTS_PER_CALL: usize = 64;

/// What the device needs to know.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// The guest's CID (3 or more).
    pub guest_cid: u64,
    /// Where host processes connect (`CONNECT <port>\n`); `<path>_<port>` is
    /// where the guest's connections to host port `<port>` go.
    pub uds_path: PathBuf,
    /// Most connections at once.
    pub max_connections: usize,
}

impl DeviceConfig {
    /// A configuration with the default connection cap.
    pub fn new(guest_cid: u64, uds_path: &Path) -> DeviceConfig {
        DeviceConfig { guest_cid, uds_path: uds_path.to_path_buf(), max_connections: MAX_CONNECTIONS }
    }
}

/// Why the device could not start.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The CID is reserved (0, 1, 2 and `u32::MAX` and above are not guest CIDs).
    #[error("guest CID {0} is reserved; use 3 or more")]
    ReservedCid(u64),
    /// The hybrid socket could not be created.
    #[error("cannot listen on {}", .0.display())]
    Listen(PathBuf, #[source] std::io::Error),
    /// No epoll instance.
    #[error("cannot create an epoll instance")]
    Epoll(#[source] std::io::Error),
}

/// One connection and its bookkeeping.
#[derive(Debug)]
struct Slot {
    conn: Conn,
    token: u64,
    /// Events the epoll watches for (empty: not registered).
    armed: EventSet,
    /// In the `ready` queue.
    queued: bool,
}

/// What [`VsockDevice::next_rx`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RxNext {
    /// A packet; its payload is `scratch[..len]`.
    Packet(Header),
    /// The buffer has no room past the header and data is what's due.
    TooSmall,
    /// Nothing to send.
    Nothing,
}

/// The vsock device.
#[derive(Debug)]
pub struct VsockDevice {
    guest_cid: u64,
    max_connections: usize,
    host: HostListener,
    epoll: Epoll,
    conns: HashMap<ConnKey, Slot>,
    tokens: HashMap<u64, ConnKey>,
    clients: HashMap<u64, Client>,
    /// Connections that may have a packet for the guest, in turn.
    ready: VecDeque<ConnKey>,
    /// RSTs for packets that matched no connection.
    rsts: VecDeque<Header>,
    next_token: u64,
    next_host_port: u32,
    pub(crate) scratch: Box<[u8]>,
    pub(crate) stats: Stats,
}

impl VsockDevice {
    /// Listens on the hybrid socket.
    pub fn new(config: &DeviceConfig) -> Result<VsockDevice, DeviceError> {
        if config.guest_cid <= HOST_CID || config.guest_cid >= u64::from(u32::MAX) {
            return Err(DeviceError::ReservedCid(config.guest_cid));
        }
        let host = HostListener::bind(&config.uds_path).map_err(|e| DeviceError::Listen(config.uds_path.clone(), e))?;
        let epoll = Epoll::new().map_err(DeviceError::Epoll)?;
        epoll
            .ctl(ControlOperation::Add, host.listener().as_raw_fd(), EpollEvent::new(EventSet::IN, LISTENER))
            .map_err(DeviceError::Epoll)?;
        Ok(VsockDevice {
            guest_cid: config.guest_cid,
            max_connections: config.max_connections,
            host,
            epoll,
            conns: HashMap::new(),
            tokens: HashMap::new(),
            clients: HashMap::new(),
            ready: VecDeque::new(),
            rsts: VecDeque::new(),
            next_token: LISTENER + 1,
            next_host_port: FIRST_HOST_PORT,
            scratch: vec![0u8; MAX_PAYLOAD].into_boxed_slice(),
            stats: Stats::default(),
        })
    }

    /// The virtio config space: `le64 guest_cid`.
    pub fn config_space(&self) -> [u8; 8] {
        self.guest_cid.to_le_bytes()
    }

    /// An fd that is readable while host sockets need [`VsockDevice::handle_host_events`].
    pub fn host_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Counters of refused input.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Open connections, and host clients yet to send their `CONNECT` line.
    pub fn connections(&self) -> (usize, usize) {
        (self.conns.len(), self.clients.len())
    }

    /// Guest data held for host readers, in all connections.
    pub fn buffered_bytes(&self) -> usize {
        self.conns.values().map(|s| s.conn.buffered()).sum()
    }

    /// Upper bound of [`VsockDevice::buffered_bytes`] for this configuration.
    pub fn max_buffered_bytes(&self) -> usize {
        self.max_connections * BUF_ALLOC as usize
    }

    /// Lengths of the queues of connections with packets due and of RSTs due.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn queue_lens(&self) -> (usize, usize) {
        (self.ready.len(), self.rsts.len())
    }

    /// Forgets every connection (a device reset): host clients see EOF.
    pub fn reset(&mut self) {
        for slot in self.conns.values() {
            self.disarm(slot.conn.stream().as_raw_fd(), slot.token);
        }
        for (token, client) in &self.clients {
            self.disarm(client.stream().as_raw_fd(), *token);
        }
        self.conns.clear();
        self.tokens.clear();
        self.clients.clear();
        self.ready.clear();
        self.rsts.clear();
    }

    /// Handles what the host sockets have to say (a batch; the fd stays readable if more).
    pub fn handle_host_events(&mut self) {
        let mut events = [EpollEvent::default(); EVENTS_PER_CALL];
        let n = self.epoll.wait(0, &mut events).unwrap_or(0);
        for ev in &events[..n] {
            let (token, set) = (ev.data(), ev.event_set());
            if token == LISTENER {
                self.accept_clients();
            } else if let Some(&key) = self.tokens.get(&token) {
                if let Some(slot) = self.conns.get_mut(&key) {
                    if set.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::READ_HANG_UP | EventSet::ERROR) {
                        slot.conn.on_readable();
                    }
                    if set.intersects(EventSet::OUT | EventSet::HANG_UP | EventSet::ERROR) {
                        slot.conn.on_writable();
                    }
                }
                self.refresh(key);
            } else if self.clients.contains_key(&token) {
                self.on_client(token);
            }
        }
    }

    /// Absorbs one packet from the guest (`payload` is its data, already bounded).
    pub(crate) fn on_guest_packet(&mut self, hdr: &Header, payload: &[u8]) {
        if hdr.src_cid != self.guest_cid || hdr.dst_cid != HOST_CID {
            self.stats.wrong_cid.note("dropped a packet with a wrong source or destination CID");
            return;
        }
        let key = ConnKey { host_port: hdr.dst_port, guest_port: hdr.src_port };
        if hdr.kind == TYPE_STREAM {
            if let Some(slot) = self.conns.get_mut(&key) {
                match slot.conn.on_guest_packet(hdr, payload) {
                    Verdict::Keep => {}
                    Verdict::Violation => {
                        self.stats.violations.note("reset a connection that broke the vsock protocol");
                    }
                    Verdict::Remove => {
                        self.remove(key);
                        return;
                    }
                }
                self.refresh(key);
                return;
            }
        }
        match hdr.op() {
            Some(Op::Rst) => {}
            Some(Op::Request) if hdr.kind == TYPE_STREAM => self.guest_connects(key, hdr),
            // Late control packets of a connection just closed (a credit update after
            // our RST, say) are normal: answered like Linux does, but not worth a log line.
            Some(Op::Shutdown | Op::CreditUpdate | Op::CreditRequest) if hdr.kind == TYPE_STREAM => self.queue_rst(hdr),
            _ => {
                self.stats.unknown_conn.note("answered a packet for no connection with RST");
                self.queue_rst(hdr);
            }
        }
    }

    /// A packet whose payload its chain can't back: whatever it was for is reset.
    pub(crate) fn on_malformed_packet(&mut self, hdr: &Header) {
        if hdr.src_cid != self.guest_cid || hdr.dst_cid != HOST_CID {
            self.stats.wrong_cid.note("dropped a packet with a wrong source or destination CID");
            return;
        }
        let key = ConnKey { host_port: hdr.dst_port, guest_port: hdr.src_port };
        match self.conns.get_mut(&key) {
            Some(slot) if hdr.kind == TYPE_STREAM => {
                slot.conn.reset();
                self.refresh(key);
            }
            _ => self.queue_rst(hdr),
        }
    }

    /// Whether [`VsockDevice::next_rx`] may have a packet.
    pub(crate) fn has_rx_work(&self) -> bool {
        !self.rsts.is_empty() || !self.ready.is_empty()
    }

    /// The next packet for the guest, given `room` payload bytes in its RX buffer.
    pub(crate) fn next_rx(&mut self, room: usize) -> RxNext {
        if let Some(h) = self.rsts.pop_front() {
            return RxNext::Packet(h);
        }
        for _ in 0..self.ready.len() {
            let Some(key) = self.ready.pop_front() else { break };
            let Some(slot) = self.conns.get_mut(&key) else { continue };
            slot.queued = false;
            match slot.conn.next_packet(&mut self.scratch, room) {
                Next::Packet(h) => {
                    self.refresh(key);
                    return RxNext::Packet(h);
                }
                Next::Idle => self.refresh(key),
                Next::NeedRoom => {
                    slot.queued = true;
                    self.ready.push_front(key);
                    return RxNext::TooSmall;
                }
            }
        }
        RxNext::Nothing
    }

    fn accept_clients(&mut self) {
        for _ in 0..EVENTS_PER_CALL {
            let stream = match self.host.accept() {
                Ok(Some(s)) => s,
                Ok(None) | Err(_) => return,
            };
            if self.at_limit() {
                self.stats.over_limit.note("refused a host connection: too many connections");
                continue;
            }
            let token = self.token();
            if self.arm(stream.as_raw_fd(), token, EventSet::empty(), EventSet::IN).is_ok() {
                self.clients.insert(token, Client::new(stream));
            }
        }
    }

    fn on_client(&mut self, token: u64) {
        let Some(client) = self.clients.get_mut(&token) else { return };
        let said = client.read_line();
        if said == Said::Nothing {
            return;
        }
        let Some(client) = self.clients.remove(&token) else { return };
        let Said::Connect(guest_port) = said else {
            self.stats.bad_connect_line.note("dropped a host client without a valid CONNECT line");
            return self.disarm(client.stream().as_raw_fd(), token);
        };
        let Some(host_port) = self.free_host_port(guest_port) else {
            return self.disarm(client.stream().as_raw_fd(), token);
        };
        let key = ConnKey { host_port, guest_port };
        let conn = Conn::host_initiated(client.into_stream(), key, self.guest_cid);
        self.conns.insert(key, Slot { conn, token, armed: EventSet::IN, queued: false });
        self.tokens.insert(token, key);
        self.refresh(key);
    }

    fn guest_connects(&mut self, key: ConnKey, hdr: &Header) {
        if self.at_limit() {
            self.stats.over_limit.note("refused a guest connection: too many connections");
            return self.queue_rst(hdr);
        }
        let stream = match self.host.connect_port(key.host_port) {
            Ok(s) => s,
            Err(_) => {
                self.stats.refused.note("refused a guest connection: nothing listens on the port's socket");
                return self.queue_rst(hdr);
            }
        };
        let token = self.token();
        let conn = Conn::guest_initiated(stream, key, self.guest_cid, hdr);
        self.conns.insert(key, Slot { conn, token, armed: EventSet::empty(), queued: false });
        self.tokens.insert(token, key);
        self.refresh(key);
    }

    /// After anything happened to a connection: drop it if closed, watch the
    /// events it needs, and queue it if it has a packet for the guest.
    fn refresh(&mut self, key: ConnKey) {
        let Some(slot) = self.conns.get(&key) else { return };
        if slot.conn.is_closed() {
            return self.remove(key);
        }
        let (read, write) = slot.conn.interest();
        let mut want = EventSet::empty();
        if read {
            want |= EventSet::IN | EventSet::READ_HANG_UP;
        }
        if write {
            want |= EventSet::OUT;
        }
        let (fd, token, armed) = (slot.conn.stream().as_raw_fd(), slot.token, slot.armed);
        // An fd whose events can't be changed is taken out rather than left
        // reporting events nobody consumes; the connection ends with the guest.
        let armed = self.arm(fd, token, armed, want).unwrap_or_else(|_| {
            self.disarm(fd, token);
            EventSet::empty()
        });
        let Some(slot) = self.conns.get_mut(&key) else { return };
        slot.armed = armed;
        if !slot.queued && slot.conn.has_rx_work() {
            slot.queued = true;
            self.ready.push_back(key);
        }
    }

    fn remove(&mut self, key: ConnKey) {
        if let Some(slot) = self.conns.remove(&key) {
            self.tokens.remove(&slot.token);
            if slot.queued {
                // A stale entry would let a later connection with the same ports queue twice,
                // and churn without RX buffers grow the queue without bound.
                self.ready.retain(|k| *k != key);
            }
            if !slot.armed.is_empty() {
                self.disarm(slot.conn.stream().as_raw_fd(), slot.token);
            }
        }
    }

    /// Makes the epoll watch `fd` for `want`, given it watches `armed`. An fd
    /// watched for nothing is taken out entirely: epoll reports hang-ups even
    /// for an empty event set, which would spin the level-triggered loop.
    fn arm(&self, fd: RawFd, token: u64, armed: EventSet, want: EventSet) -> std::io::Result<EventSet> {
        if want == armed {
            return Ok(armed);
        }
        let op = match (armed.is_empty(), want.is_empty()) {
            (true, _) => ControlOperation::Add,
            (false, true) => ControlOperation::Delete,
            (false, false) => ControlOperation::Modify,
        };
        self.epoll.ctl(op, fd, EpollEvent::new(want, token))?;
        Ok(want)
    }

    fn disarm(&self, fd: RawFd, token: u64) {
        let _ = self.epoll.ctl(ControlOperation::Delete, fd, EpollEvent::new(EventSet::empty(), token));
    }

    fn queue_rst(&mut self, to: &Header) {
        if to.op == Op::Rst as u16 {
            return;
        }
        if self.rsts.len() >= MAX_QUEUED_RSTS {
            self.stats.rst_dropped.note("dropped an RST: the guest isn't taking RX buffers");
            return;
        }
        self.rsts.push_back(rst_for(self.guest_cid, to));
    }

    fn at_limit(&self) -> bool {
        self.conns.len() + self.clients.len() >= self.max_connections
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token - 1
    }

    /// A host-side port no connection to `guest_port` uses.
    fn free_host_port(&mut self, guest_port: u32) -> Option<u32> {
        for _ in 0..=self.conns.len() {
            let port = self.next_host_port;
            self.next_host_port = if port >= u32::MAX - 1 { FIRST_HOST_PORT } else { port + 1 };
            if !self.conns.contains_key(&ConnKey { host_port: port, guest_port }) {
                return Some(port);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
