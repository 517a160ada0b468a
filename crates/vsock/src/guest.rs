//! A guest driver for tests. It lays split virtqueues out in test memory and
//! behaves like Linux's virtio-vsock driver, strictly: it kicks a queue only
//! when the device asked for kicks (`VRING_USED_F_NO_NOTIFY` or, with
//! `VIRTIO_RING_F_EVENT_IDX`, `avail_event`), and it looks at RX buffers only
//! after the device interrupted it. A lost wakeup therefore shows up as a
//! stalled test, as it would in a real guest.
//!
//! Public with the `test-utils` feature, for the throughput bench.

use std::collections::VecDeque;
use std::num::Wrapping;
use std::ops::Range;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::Duration;

use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use crate::device::{DeviceConfig, VsockDevice};
use crate::packet::{Header, Op, HDR_LEN, HOST_CID, TYPE_STREAM};

pub const GUEST_CID: u64 = 3;
pub const MEM_SIZE: usize = 64 << 20;
const QUEUE_SIZE: u16 = 256;
/// RX buffers come from `[RX_HEAP, TX_HEAP)`, packets from `[TX_HEAP, MEM_SIZE)`,
/// each area reused round-robin: buffers in flight are the last few taken
/// from their area, so on long runs neither direction overwrites the other's.
const RX_HEAP: u64 = 1 << 20;
const TX_HEAP: u64 = 9 << 20;
/// What Linux gives an RX buffer: one page of payload behind the header.
pub const RX_BUF: u32 = HDR_LEN as u32 + 4096;

/// One split ring, seen from the driver.
#[derive(Debug)]
pub struct Ring {
    pub desc: GuestAddress,
    pub avail: GuestAddress,
    pub used: GuestAddress,
    free: Vec<u16>,
    /// Descriptors and buffers of each chain in flight, by head.
    chains: Vec<Vec<(u16, GuestAddress, u32)>>,
    used_seen: Wrapping<u16>,
}

impl Ring {
    fn new(base: u64) -> Ring {
        let size = u64::from(QUEUE_SIZE);
        let desc = GuestAddress(base);
        let avail = GuestAddress(base + 16 * size);
        let used = GuestAddress((avail.0 + 6 + 2 * size + 3) & !3);
        Ring {
            desc,
            avail,
            used,
            free: (0..QUEUE_SIZE).rev().collect(),
            chains: vec![Vec::new(); QUEUE_SIZE as usize],
            used_seen: Wrapping(0),
        }
    }

    pub fn queue(&self, event_idx: bool) -> Queue {
        let mut q = Queue::new(QUEUE_SIZE).unwrap();
        q.try_set_desc_table_address(self.desc).unwrap();
        q.try_set_avail_ring_address(self.avail).unwrap();
        q.try_set_used_ring_address(self.used).unwrap();
        q.set_event_idx(event_idx);
        q.set_ready(true);
        q
    }

    /// Publishes a chain of `(addr, len, device-writable)` buffers; returns whether to kick.
    fn push(&mut self, mem: &GuestMemoryMmap, bufs: &[(GuestAddress, u32, bool)], event_idx: bool) -> bool {
        assert!(self.free.len() >= bufs.len(), "test ring out of descriptors");
        let ids: Vec<u16> = (0..bufs.len()).map(|_| self.free.pop().unwrap()).collect();
        for (i, &(addr, len, write)) in bufs.iter().enumerate() {
            let mut flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
            let next = ids.get(i + 1).copied().unwrap_or(0);
            if i + 1 < bufs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            write_desc(mem, self.desc, ids[i], addr.0, len, flags, next);
        }
        self.chains[ids[0] as usize] = ids.iter().zip(bufs).map(|(&id, &(a, l, _))| (id, a, l)).collect();
        let old: u16 = mem.read_obj(self.avail.unchecked(2)).unwrap();
        mem.write_obj(ids[0], self.avail.unchecked(4 + 2 * u64::from(old % QUEUE_SIZE))).unwrap();
        let new = old.wrapping_add(1);
        mem.write_obj(new, self.avail.unchecked(2)).unwrap();
        if event_idx {
            let avail_event: u16 = mem.read_obj(self.used.unchecked(4 + 8 * u64::from(QUEUE_SIZE))).unwrap();
            new.wrapping_sub(avail_event).wrapping_sub(1) < new.wrapping_sub(old)
        } else {
            let flags: u16 = mem.read_obj(self.used).unwrap();
            flags & VRING_USED_F_NO_NOTIFY as u16 == 0
        }
    }

    /// Takes the used chains the device returned since last time: (buffers, used length).
    fn take_used(&mut self, mem: &GuestMemoryMmap) -> Vec<(Vec<(GuestAddress, u32)>, u32)> {
        let idx: u16 = mem.read_obj(self.used.unchecked(2)).unwrap();
        let mut out = Vec::new();
        while self.used_seen.0 != idx {
            let at = self.used.unchecked(4 + 8 * u64::from(self.used_seen.0 % QUEUE_SIZE));
            let head: u32 = mem.read_obj(at).unwrap();
            let len: u32 = mem.read_obj(at.unchecked(4)).unwrap();
            let chain = std::mem::take(&mut self.chains[head as usize]);
            assert!(!chain.is_empty(), "device returned descriptor {head}, which isn't in flight");
            self.free.extend(chain.iter().map(|c| c.0));
            out.push((chain.iter().map(|c| (c.1, c.2)).collect(), len));
            self.used_seen += 1;
        }
        // Re-arm: interrupt me at the next used buffer.
        mem.write_obj(self.used_seen.0, self.avail.unchecked(4 + 2 * u64::from(QUEUE_SIZE))).unwrap();
        out
    }
}

pub fn write_desc(mem: &GuestMemoryMmap, table: GuestAddress, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let at = table.unchecked(16 * u64::from(i));
    mem.write_obj(addr, at).unwrap();
    mem.write_obj(len, at.unchecked(8)).unwrap();
    mem.write_obj(flags, at.unchecked(12)).unwrap();
    mem.write_obj(next, at.unchecked(14)).unwrap();
}

trait Unchecked {
    fn unchecked(self, off: u64) -> GuestAddress;
}

impl Unchecked for GuestAddress {
    fn unchecked(self, off: u64) -> GuestAddress {
        GuestAddress(self.0 + off)
    }
}

/// A device, its rings and a driver, pumped like the vhost-user worker does.
#[derive(Debug)]
pub struct Bench {
    pub dev: VsockDevice,
    pub mem: GuestMemoryMmap,
    pub tx: Ring,
    pub rx: Ring,
    pub txq: Queue,
    pub rxq: Queue,
    pub event_idx: bool,
    rx_heap: u64,
    tx_heap: u64,
    tx_kick: bool,
    rx_kick: bool,
    /// Give the device a fresh RX buffer for each one it fills (as Linux does).
    pub refill: bool,
    /// How each RX buffer is split into descriptors (lengths).
    pub rx_split: Vec<u32>,
    pub received: VecDeque<(Header, Vec<u8>)>,
    pub interrupts: usize,
    poller: Epoll,
    pub dir: tempfile::TempDir,
    /// A thread CPU clock: when set, [`Bench::device_cpu`] adds up the time
    /// spent in the device's entry points.
    pub clock: Option<fn() -> Duration>,
    pub device_cpu: Duration,
}

impl Bench {
    pub fn new(event_idx: bool) -> Bench {
        Bench::with_limit(event_idx, crate::device::MAX_CONNECTIONS)
    }

    pub fn with_limit(event_idx: bool, max_connections: usize) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let mut config = DeviceConfig::new(GUEST_CID, &dir.path().join("v.sock"));
        config.max_connections = max_connections;
        let dev = VsockDevice::new(&config).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let (tx, rx) = (Ring::new(0x1000), Ring::new(0x10000));
        let (txq, rxq) = (tx.queue(event_idx), rx.queue(event_idx));
        let poller = Epoll::new().unwrap();
        poller.ctl(ControlOperation::Add, dev.host_fd(), EpollEvent::new(EventSet::IN, 0)).unwrap();
        let mut b = Bench {
            dev,
            mem,
            tx,
            rx,
            txq,
            rxq,
            event_idx,
            rx_heap: RX_HEAP,
            tx_heap: TX_HEAP,
            tx_kick: false,
            rx_kick: false,
            refill: true,
            rx_split: vec![RX_BUF],
            received: VecDeque::new(),
            interrupts: 0,
            poller,
            dir,
            clock: None,
            device_cpu: Duration::ZERO,
        };
        b.add_rx_buffers(64);
        b
    }

    pub fn uds(&self) -> PathBuf {
        self.dir.path().join("v.sock")
    }

    /// A host service on port `port` (what `<uds>_<port>` reaches).
    pub fn listen(&self, port: u32) -> UnixListener {
        UnixListener::bind(self.dir.path().join(format!("v.sock_{port}"))).unwrap()
    }

    /// Space for a buffer in `[start, end)`, taken after `*next`.
    fn alloc(next: &mut u64, start: u64, end: u64, len: u32) -> GuestAddress {
        if *next + u64::from(len) > end {
            *next = start;
        }
        let a = GuestAddress(*next);
        *next = (*next + u64::from(len) + 63) & !63;
        a
    }

    fn alloc_rx(&mut self, len: u32) -> GuestAddress {
        Bench::alloc(&mut self.rx_heap, RX_HEAP, TX_HEAP, len)
    }

    fn alloc_tx(&mut self, len: u32) -> GuestAddress {
        Bench::alloc(&mut self.tx_heap, TX_HEAP, MEM_SIZE as u64, len)
    }

    pub fn add_rx_buffers(&mut self, n: usize) {
        for _ in 0..n {
            let split = self.rx_split.clone();
            let bufs: Vec<_> = split.iter().map(|&l| (self.alloc_rx(l), l, true)).collect();
            self.rx_kick |= self.rx.push(&self.mem, &bufs, self.event_idx);
        }
    }

    /// Queues one packet on TX, its header and payload bytes cut into descriptors
    /// of the lengths in `split` (the last one takes the rest).
    pub fn send_split(&mut self, hdr: &Header, payload: &[u8], split: &[usize]) {
        let hdr = hdr.encode();
        let (mut bufs, mut at, len) = (Vec::new(), 0, HDR_LEN + payload.len());
        for (i, &cut) in split.iter().enumerate() {
            let n = if i + 1 == split.len() { len - at } else { cut.min(len - at) };
            let a = self.alloc_tx(n as u32);
            let (h, p) = packet_bytes(at, n);
            self.mem.write_slice(&hdr[h.clone()], a).unwrap();
            self.mem.write_slice(&payload[p], a.unchecked(h.len() as u64)).unwrap();
            bufs.push((a, n as u32, false));
            at += n;
        }
        self.tx_kick |= self.tx.push(&self.mem, &bufs, self.event_idx);
    }

    /// Header (its `len` set to the payload's) in one descriptor, payload in
    /// another: the common Linux layout.
    pub fn send(&mut self, hdr: &Header, payload: &[u8]) {
        let hdr = Header { len: payload.len() as u32, ..*hdr };
        self.send_split(&hdr, payload, &[HDR_LEN, payload.len()]);
    }

    /// Runs the device like its worker thread would until nothing happens for `idle_ms`.
    pub fn pump_for(&mut self, idle_ms: i32) {
        for _ in 0..100_000 {
            if !self.pump_once(idle_ms) {
                return;
            }
        }
        panic!("the device never went idle");
    }

    pub fn pump(&mut self) {
        self.pump_for(30);
    }

    /// One turn of the worker's loop: waits up to `wait_ms` for host events
    /// (not at all while a kick is pending), then serves the host events and
    /// the kicks. Returns whether there was anything to do.
    pub fn pump_once(&mut self, wait_ms: i32) -> bool {
        let mut events = [EpollEvent::default(); 1];
        let busy = self.tx_kick || self.rx_kick;
        let host = self.poller.wait(if busy { 0 } else { wait_ms }, &mut events).unwrap() > 0;
        if host {
            self.timed(|b| b.dev.handle_host_events());
            self.run_rx();
        }
        if std::mem::take(&mut self.tx_kick) {
            self.timed(|b| b.dev.process_tx(&mut b.txq, &b.mem));
            self.tx.take_used(&self.mem);
            self.run_rx();
        }
        if std::mem::take(&mut self.rx_kick) {
            self.run_rx();
        }
        busy || host
    }

    /// Calls into the device, adding its CPU time to `device_cpu` if there is a clock.
    fn timed<R>(&mut self, f: impl FnOnce(&mut Bench) -> R) -> R {
        let Some(clock) = self.clock else { return f(self) };
        let start = clock();
        let r = f(self);
        self.device_cpu += clock().saturating_sub(start);
        r
    }

    fn run_rx(&mut self) {
        if !self.timed(|b| b.dev.process_rx(&mut b.rxq, &b.mem)) {
            return;
        }
        self.interrupts += 1;
        let used = self.rx.take_used(&self.mem);
        for (bufs, len) in &used {
            let len = *len as usize;
            assert!(len >= HDR_LEN, "device used an RX buffer with {len} bytes");
            let room: usize = bufs.iter().map(|&(_, l)| l as usize).sum();
            assert!(len <= room, "used length {len} beyond the RX buffer's {room} bytes");
            let (mut hdr, mut payload) = ([0u8; HDR_LEN], vec![0u8; len - HDR_LEN]);
            let mut at = 0;
            for &(a, l) in bufs {
                let n = (l as usize).min(len - at);
                let (h, p) = packet_bytes(at, n);
                self.mem.read_slice(&mut hdr[h.clone()], a).unwrap();
                self.mem.read_slice(&mut payload[p], a.unchecked(h.len() as u64)).unwrap();
                at += n;
            }
            let hdr = Header::decode(&hdr);
            assert_eq!(hdr.len as usize, len - HDR_LEN, "used length and header len disagree");
            self.received.push_back((hdr, payload));
        }
        if self.refill {
            self.add_rx_buffers(used.len());
        }
    }

    /// The packets received since last time.
    pub fn take(&mut self) -> Vec<(Header, Vec<u8>)> {
        self.received.drain(..).collect()
    }

    /// Forgets the rings (after a hostile test scribbled over them) and starts afresh.
    pub fn reset_rings(&mut self) {
        self.mem.write_slice(&vec![0u8; 0x10000], GuestAddress(0x1000)).unwrap();
        self.mem.write_slice(&vec![0u8; 0x10000], GuestAddress(0x10000)).unwrap();
        (self.tx, self.rx) = (Ring::new(0x1000), Ring::new(0x10000));
        (self.txq, self.rxq) = (self.tx.queue(self.event_idx), self.rx.queue(self.event_idx));
    }
}

/// Where a packet's bytes `[at, at + n)` lie: a range of the header, then one of the payload.
fn packet_bytes(at: usize, n: usize) -> (Range<usize>, Range<usize>) {
    let end = at + n;
    (at.min(HDR_LEN)..end.min(HDR_LEN), at.max(HDR_LEN) - HDR_LEN..end.max(HDR_LEN) - HDR_LEN)
}

/// Builder-style flags for test packets.
pub trait WithFlags {
    fn with_flags(self, flags: u32) -> Header;
}

impl WithFlags for Header {
    fn with_flags(mut self, flags: u32) -> Header {
        self.flags = flags;
        self
    }
}

/// A guest packet from `src` (guest port) to `dst` (host port), with the
/// guest's default credit (256 KiB, nothing consumed).
pub fn pkt(op: Op, src: u32, dst: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port: src,
        dst_port: dst,
        kind: TYPE_STREAM,
        op: op as u16,
        buf_alloc: 256 * 1024,
        ..Header::default()
    }
}
