//! `vsock_chains`: moat-vsock's device core (no vhost-user, no thread)
//! driven by a hostile guest through TX and RX split rings in guest RAM,
//! with real host sockets on the other side.
//!
//! A program sets the rings up (sizes, places, `EVENT_IDX`) and then runs
//! up to [`MAX_OPS`] steps: packets with any header, cut into descriptors
//! anywhere; raw descriptors in either table or anywhere else (indirect
//! tables); ring entries and lying indices; RX buffers; the device's three
//! entry points; host clients and services talking; device resets.
//! After every entry point: the connection cap holds, buffered bytes and
//! queued packets stay within their bounds, the heap stays within what the
//! connection cap allows, the device wrote RAM only inside RX buffers and
//! the used rings, and the used entries it added are sane.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::OnceLock;

use moat_vsock::packet::{Header, HDR_LEN, MAX_PAYLOAD};
use moat_vsock::{DeviceConfig, VsockDevice};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::alloc;
use crate::guest::{self, check_used, check_writes, Snapshot, REGIONS};
use crate::input::{Input, Seed};

/// Steps in one program.
pub const MAX_OPS: usize = 256;
/// Connections the device may hold.
pub const MAX_CONNECTIONS: usize = 8;
/// What one connection may hold on the heap: its buffer of guest data for
/// the host, and bookkeeping.
const PER_CONNECTION: usize = 128 * 1024 + 16 * 1024;
/// The guest's CID.
pub const GUEST_CID: u64 = 3;
/// Host ports with a service listening.
pub const SERVICES: [u32; 2] = [5000, 5001];

/// Step opcodes (the byte before each step, modulo 10).
pub mod op {
    pub const PACKET: u8 = 0;
    pub const TX_DESC: u8 = 1;
    pub const RX_DESC: u8 = 2;
    pub const DESC_AT: u8 = 3;
    pub const PUBLISH: u8 = 4;
    pub const AVAIL_IDX: u8 = 5;
    pub const RUN: u8 = 6;
    pub const HOST: u8 = 7;
    pub const RX_BUFFER: u8 = 8;
    pub const RESET: u8 = 9;
}

/// Default ring places: TX then RX, each table, available and used ring a page apart.
pub const TX_BASE: u64 = 0x1000;
pub const RX_BASE: u64 = 0x4000;

struct Host {
    dir: tempfile::TempDir,
    services: Vec<UnixListener>,
}

fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let services = SERVICES
            .iter()
            .map(|p| {
                let l = UnixListener::bind(dir.path().join(format!("v.sock_{p}"))).expect("service socket");
                l.set_nonblocking(true).expect("nonblocking");
                l
            })
            .collect();
        Host { dir, services }
    })
}

fn uds() -> PathBuf {
    host().dir.path().join("v.sock")
}

/// One split ring as the guest laid it out.
#[derive(Debug, Clone, Copy)]
struct Ring {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
    next_free: u16,
}

impl Ring {
    fn queue(&self, event_idx: bool) -> Queue {
        let mut q = Queue::new(256).expect("queue");
        let _ = q.try_set_size(self.size);
        q.set_desc_table_address(Some(self.desc as u32), Some((self.desc >> 32) as u32));
        q.set_avail_ring_address(Some(self.avail as u32), Some((self.avail >> 32) as u32));
        q.set_used_ring_address(Some(self.used as u32), Some((self.used >> 32) as u32));
        q.set_event_idx(event_idx);
        q.set_ready(true);
        q
    }

    fn used_range(&self) -> (u64, u64) {
        (self.used, self.used.saturating_add(6 + 8 * u64::from(self.size)))
    }
}

struct Rig {
    dev: VsockDevice,
    mem: GuestMemoryMmap,
    rings: [Ring; 2],
    queues: [Queue; 2],
    /// Host ends: clients we connected and service connections we accepted.
    ends: Vec<UnixStream>,
    heap_start: isize,
}

const TX: usize = 0;
const RX: usize = 1;

/// Runs one program.
pub fn run(data: &[u8]) {
    execute(data);
}

fn execute(data: &[u8]) -> Rig {
    let mut i = Input::new(data);
    let mut rig = Rig::new(&mut i);
    for _ in 0..MAX_OPS {
        if i.is_empty() {
            break;
        }
        rig.step(&mut i);
    }
    for which in 0..3 {
        rig.run(which);
    }
    rig
}

impl Rig {
    fn new(i: &mut Input) -> Self {
        // Drain services of connections a previous program left queued.
        for l in &host().services {
            while l.accept().is_ok() {}
        }
        let heap_start = alloc::live();
        let mut config = DeviceConfig::new(GUEST_CID, &uds());
        config.max_connections = MAX_CONNECTIONS;
        let dev = VsockDevice::new(&config).expect("vsock device");
        let ranges: Vec<_> = REGIONS.iter().map(|&(a, l)| (GuestAddress(a), l as usize)).collect();
        let mem = GuestMemoryMmap::from_ranges(&ranges).expect("guest RAM");
        let event_idx = i.bool();
        let mut ring = |base: u64| {
            let size = match i.u8() {
                b @ 0..=0xef => 1u16 << (b % 9),
                _ => i.u16(),
            };
            let (desc, avail, used) = if i.bool() {
                (base, base + 0x1000, base + 0x2000)
            } else {
                (guest::addr(i), guest::addr(i), guest::addr(i))
            };
            Ring { size, desc, avail, used, avail_idx: 0, next_free: 0 }
        };
        let mut rings = [ring(TX_BASE), ring(RX_BASE)];
        for r in &mut rings {
            // A refused size leaves the queue at its maximum.
            if !(r.size.is_power_of_two() && r.size <= 256) {
                r.size = 256;
            }
        }
        let queues = [rings[TX].queue(event_idx), rings[RX].queue(event_idx)];
        for (r, q) in rings.iter_mut().zip(&queues) {
            // What the queue took (it refuses misaligned addresses).
            (r.desc, r.avail, r.used) = (q.desc_table(), q.avail_ring(), q.used_ring());
        }
        Self { dev, mem, rings, queues, ends: Vec::new(), heap_start }
    }

    fn step(&mut self, i: &mut Input) {
        match i.u8() % 10 {
            op::PACKET => self.packet(i),
            op::TX_DESC | op::RX_DESC => {
                let ring = &self.rings[usize::from(i.u8() & 1)];
                let at = ring.desc.wrapping_add(16 * u64::from(i.small_u16()));
                self.put_desc(i, at);
            }
            op::DESC_AT => {
                let at = guest::addr(i);
                self.put_desc(i, at);
            }
            op::PUBLISH => {
                let which = usize::from(i.u8() & 1);
                let head = i.small_u16();
                self.publish(which, head);
            }
            op::AVAIL_IDX => {
                let which = usize::from(i.u8() & 1);
                let (field, value) = (u64::from(i.u8() % 3) * 2, i.u16());
                let ring = &mut self.rings[which];
                if field == 2 {
                    ring.avail_idx = value;
                }
                // Flags, index, or used_event past the ring.
                let at = if field == 4 {
                    ring.avail.wrapping_add(4 + 2 * u64::from(ring.size))
                } else {
                    ring.avail.wrapping_add(field)
                };
                let _ = self.mem.write_slice(&value.to_le_bytes(), GuestAddress(at));
            }
            op::RUN => self.run(i.u8() % 3),
            op::HOST => self.host(i),
            op::RX_BUFFER => {
                let pieces = usize::from(i.u8() % 4) + 1;
                let bufs: Vec<_> = (0..pieces).map(|_| (guest::addr(i), guest::len(i), true)).collect();
                let head = self.chain(RX, &bufs);
                self.publish(RX, head);
            }
            _ => self.dev.reset(),
        }
    }

    /// A TX packet: a header with mostly plausible fields, a payload, cut
    /// into descriptors at the lengths the program gives, placed at `addr`.
    fn packet(&mut self, i: &mut Input) {
        let pick_u64 = |i: &mut Input, usual: u64| if i.u8() < 0xf0 { usual } else { i.u64() };
        let port = |i: &mut Input| match i.u8() % 4 {
            0 => SERVICES[0],
            1 => SERVICES[1],
            2 => 1024 + u32::from(i.u8() % 4),
            _ => i.u32(),
        };
        let payload = i.bytes();
        let mut h = Header {
            src_cid: pick_u64(i, GUEST_CID),
            dst_cid: pick_u64(i, 2),
            src_port: port(i),
            dst_port: port(i),
            len: payload.len() as u32,
            kind: if i.u8() < 0xf0 { 1 } else { i.u16() },
            op: u16::from(i.u8() % 9),
            flags: u32::from(i.u8() & 3),
            buf_alloc: if i.bool() { 256 * 1024 } else { i.u32() },
            fwd_cnt: i.u32(),
        };
        if i.u8() == 0xff {
            h.len = guest::len(i);
        }
        let mut bytes = h.encode().to_vec();
        bytes.extend_from_slice(payload);
        let at = guest::addr(i);
        let _ = self.mem.write_slice(&bytes, GuestAddress(at));
        let pieces = usize::from(i.u8() % 4) + 1;
        let mut bufs = Vec::with_capacity(pieces);
        let mut done = 0u64;
        for n in 0..pieces {
            let left = bytes.len() as u64 - done.min(bytes.len() as u64);
            let len = if n + 1 == pieces { left } else { u64::from(i.u8()).min(left) };
            bufs.push((at.wrapping_add(done), len as u32, false));
            done += len;
        }
        let head = self.chain(TX, &bufs);
        self.publish(TX, head);
    }

    /// Links `bufs` on the ring's next descriptors; returns the head.
    fn chain(&mut self, which: usize, bufs: &[(u64, u32, bool)]) -> u16 {
        let ring = self.rings[which];
        let head = ring.next_free;
        let mut index = head;
        for (n, &(addr, len, writable)) in bufs.iter().enumerate() {
            let next = (index + 1) % ring.size;
            let flags = u16::from(n + 1 < bufs.len()) | if writable { 2 } else { 0 };
            write_desc(&self.mem, ring.desc.wrapping_add(16 * u64::from(index)), (addr, len, flags, next));
            index = next;
        }
        self.rings[which].next_free = index;
        head
    }

    fn publish(&mut self, which: usize, head: u16) {
        let ring = &mut self.rings[which];
        let slot = u64::from(ring.avail_idx % ring.size);
        let _ = self.mem.write_slice(&head.to_le_bytes(), GuestAddress(ring.avail.wrapping_add(4 + 2 * slot)));
        ring.avail_idx = ring.avail_idx.wrapping_add(1);
        let _ = self.mem.write_slice(&ring.avail_idx.to_le_bytes(), GuestAddress(ring.avail.wrapping_add(2)));
    }

    fn put_desc(&self, i: &mut Input, at: u64) {
        let (addr, len) = (guest::addr(i), guest::len(i));
        let flags = match i.u8() {
            b @ 0..=0x7f => u16::from(b & 7),
            _ => i.u16(),
        };
        write_desc(&self.mem, at, (addr, len, flags, i.small_u16()));
    }

    /// Host side: a client connecting with a line, services accepting,
    /// bytes written and read by every host end, or some ends closed.
    fn host(&mut self, i: &mut Input) {
        match i.u8() % 4 {
            0 => {
                if let Ok(mut c) = UnixStream::connect(uds()) {
                    let _ = c.set_nonblocking(true);
                    let _ = c.write_all(i.bytes());
                    self.ends.push(c);
                }
            }
            1 => {
                for l in &host().services {
                    while let Ok((s, _)) = l.accept() {
                        let _ = s.set_nonblocking(true);
                        self.ends.push(s);
                    }
                }
            }
            2 => {
                let data = i.bytes();
                let mut sink = [0u8; 4096];
                for e in &mut self.ends {
                    let _ = e.write(data);
                    while matches!(e.read(&mut sink), Ok(n) if n > 0) {}
                }
            }
            _ => {
                let n = usize::from(i.u8()).min(self.ends.len());
                self.ends.drain(..n);
            }
        }
        // Host ends are the harness's, not the device's: keep them few.
        self.ends.truncate(32);
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot::take(|addr, buf| self.mem.read_slice(buf, GuestAddress(addr)).expect("snapshot of RAM"))
    }

    fn used_idx(&self, which: usize) -> Option<u16> {
        let at = self.rings[which].used.checked_add(2)?;
        self.mem.read_obj(GuestAddress(at)).ok()
    }

    /// Calls one of the device's entry points (TX, RX, host events) and
    /// checks everything it is bound by.
    fn run(&mut self, which: u8) {
        let before = self.snapshot();
        let next0 = [self.queues[TX].next_used(), self.queues[RX].next_used()];
        let [txq, rxq] = &mut self.queues;
        let ((), grew) = alloc::measure(|| match which {
            0 => {
                self.dev.process_tx(txq, &self.mem);
            }
            1 => {
                self.dev.process_rx(rxq, &self.mem);
            }
            _ => self.dev.handle_host_events(),
        });
        let heap = usize::try_from(alloc::live() - self.heap_start).unwrap_or(0) + grew;
        let cap = MAX_CONNECTIONS * PER_CONNECTION + (1 << 20);
        assert!(heap <= cap, "the device holds {heap} bytes of heap (cap {cap})");

        let (conns, clients) = self.dev.connections();
        assert!(conns + clients <= MAX_CONNECTIONS, "{conns} connections + {clients} clients");
        assert!(self.dev.buffered_bytes() <= self.dev.max_buffered_bytes(), "buffered past the bound");
        let (ready, rsts) = self.dev.queue_lens();
        assert!(ready <= conns && rsts <= 256, "{ready} connections queued, {rsts} RSTs queued");

        let after = self.snapshot();
        let rings = [self.rings[TX].used_range(), self.rings[RX].used_range()];
        if let Err(at) = check_writes(&before, &after, &rings) {
            let tables = self.rings.map(|r| (r.desc, r.desc.saturating_add(16 * u64::from(r.size))));
            if !guest::self_modifying(&before, &after, &tables, &rings) {
                panic!("the device wrote guest byte {at:#x}, outside every RX buffer and the used rings");
            }
        }
        for (q, from) in [TX, RX].into_iter().zip(next0) {
            let to = self.queues[q].next_used();
            if to == from {
                continue;
            }
            let ring = self.rings[q];
            let max_len = if q == TX { 0 } else { (HDR_LEN + MAX_PAYLOAD) as u32 };
            let read = |a: u64, b: &mut [u8]| self.mem.read_slice(b, GuestAddress(a)).is_ok();
            let problem = match self.used_idx(q) {
                Some(idx) if idx != to => Err(format!("used index {idx}, the device's count {}", to)),
                _ => check_used(read, ring.used, ring.size, (from, to), max_len),
            };
            if let Err(problem) = problem {
                // A guest that points buffers or rings at a used ring scribbles on it itself.
                let r = ring.used_range();
                let mine = before.writable_overlaps(r) || after.writable_overlaps(r) || self.rings_overlap();
                assert!(mine, "queue {q}: {problem}");
            }
        }
    }

    /// Whether any two rings share bytes.
    fn rings_overlap(&self) -> bool {
        let mut parts = Vec::new();
        for r in &self.rings {
            let n = u64::from(r.size);
            parts.push((r.desc, r.desc.saturating_add(16 * n)));
            parts.push((r.avail, r.avail.saturating_add(6 + 2 * n)));
            parts.push(r.used_range());
        }
        parts.iter().enumerate().any(|(a, &(s, e))| parts[a + 1..].iter().any(|&(s2, e2)| s < e2 && s2 < e))
    }
}

fn write_desc(mem: &GuestMemoryMmap, at: u64, (addr, len, flags, next): (u64, u32, u16, u16)) {
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&flags.to_le_bytes());
    d[14..].copy_from_slice(&next.to_le_bytes());
    let _ = mem.write_slice(&d, GuestAddress(at));
}

/// Seeds: a guest connecting to a service and sending data, a host client
/// connecting to the guest, packets split across region edges, and a
/// looping chain.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for variant in 0..5u8 {
        let mut s = Seed::default();
        // EVENT_IDX on odd variants; both rings 64 entries in their default places.
        s.u8(variant & 1).u8(6).u8(1).u8(6).u8(1);
        let rx_buffer = |s: &mut Seed, addr: u64, len: u32| {
            s.u8(op::RX_BUFFER).u8(0);
            guest::put_addr(s, addr);
            guest::put_len(s, len);
        };
        for n in 0..4 {
            rx_buffer(&mut s, 0x8000 + 0x1100 * n, 44 + 4096);
        }
        let packet = |s: &mut Seed, op: u8, payload: &[u8], at: u64, cuts: &[u8]| {
            s.u8(super::vsock::op::PACKET).bytes(payload);
            // src_cid, dst_cid usual; ports: guest 1024, host service 5000.
            s.u8(0).u8(0).u8(2).u8(0).u8(0);
            // Stream, the op, no flags, 256 KiB of credit, nothing consumed, true length.
            s.u8(0).u8(op).u8(0).u8(1).u32(0).u8(0);
            guest::put_addr(s, at);
            s.u8(cuts.len() as u8);
            for &c in cuts {
                s.u8(c);
            }
        };
        match variant {
            0 | 1 => {
                packet(&mut s, 1, b"", 0x10000 - 20, &[44]);
                s.u8(op::RUN).u8(0).u8(op::RUN).u8(1);
                s.u8(op::HOST).u8(1);
                packet(&mut s, 5, b"hello from the guest", 0x1_fff0, &[10, 40]);
                s.u8(op::RUN).u8(0);
                s.u8(op::HOST).u8(2).bytes(b"hello from the host");
                s.u8(op::RUN).u8(2).u8(op::RUN).u8(1);
                packet(&mut s, 4, b"", 0x2_0100, &[]);
            }
            2 => {
                s.u8(op::HOST).u8(0).bytes(b"CONNECT 1024\n");
                s.u8(op::RUN).u8(2).u8(op::RUN).u8(1);
                packet(&mut s, 2, b"", 0x3_0000, &[]);
                s.u8(op::RUN).u8(0).u8(op::HOST).u8(2).bytes(b"data");
            }
            3 => {
                // A two-descriptor loop on TX.
                s.u8(op::TX_DESC).u8(0).u8(0);
                guest::put_addr(&mut s, 0x9000);
                guest::put_len(&mut s, 44);
                s.u8(1).u8(1);
                s.u8(op::TX_DESC).u8(0).u8(1);
                guest::put_addr(&mut s, 0x9000);
                guest::put_len(&mut s, 44);
                s.u8(1).u8(0);
                s.u8(op::PUBLISH).u8(0).u8(0);
            }
            _ => {
                // An indirect table in region C.
                s.u8(op::TX_DESC).u8(0).u8(0);
                guest::put_addr(&mut s, 0x3_0000);
                guest::put_len(&mut s, 32);
                s.u8(4).u8(0);
                s.u8(op::DESC_AT);
                guest::put_addr(&mut s, 0x3_0000);
                guest::put_addr(&mut s, 0x3_1000);
                guest::put_len(&mut s, 20);
                s.u8(1).u8(1);
                s.u8(op::DESC_AT);
                guest::put_addr(&mut s, 0x3_0010);
                guest::put_addr(&mut s, 0x3_1014);
                guest::put_len(&mut s, 24);
                s.u8(0).u8(0);
                s.u8(op::PUBLISH).u8(0).u8(0);
            }
        }
        s.u8(op::RUN).u8(0).u8(op::RUN).u8(1);
        out.push(s.bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connecting_seeds_reach_the_host() {
        let rig = execute(&seeds()[0]);
        assert!(!rig.ends.is_empty(), "the service accepted the guest's connection");
        let rig = execute(&seeds()[2]);
        assert_eq!(rig.dev.connections(), (1, 0), "the host client's connection is open");
    }
}
