//! Hostile guests: random descriptor tables, rings and headers under a fixed
//! seed. The device must not panic, and nothing it holds may grow past its bounds.

use std::io::Write;
use std::os::unix::net::UnixStream;

use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress};

use crate::guest::{pkt, write_desc, Bench, Ring, GUEST_CID, MEM_SIZE};
use crate::packet::{HDR_LEN, HOST_CID, MAX_PAYLOAD};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }
}

fn addr(r: &mut Rng) -> u64 {
    let mem = MEM_SIZE as u64;
    match r.below(6) {
        0 => r.below(0x20000), // the rings themselves
        1 => mem - r.below(64),
        2 => mem + r.below(1 << 20),
        3 => u64::MAX - r.below(4096),
        _ => (1 << 20) + r.below(mem - (2 << 20)),
    }
}

fn len(r: &mut Rng) -> u32 {
    let (any, small) = (r.next() as u32, r.below(200) as u32);
    r.pick(&[0, 1, 43, HDR_LEN as u32, 4096, (HDR_LEN + MAX_PAYLOAD) as u32, u32::MAX, any, small])
}

/// Random descriptors at random indices, and `heads` random heads made available.
fn scribble(b: &Bench, ring: &Ring, r: &mut Rng, writable: bool) {
    for _ in 0..r.below(8) + 1 {
        let mut flags = (r.next() as u16) & (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE | VRING_DESC_F_INDIRECT) as u16;
        if writable && r.below(4) > 0 {
            flags |= VRING_DESC_F_WRITE as u16;
        }
        let next = if r.below(8) == 0 { r.next() as u16 } else { r.below(256) as u16 };
        write_desc(&b.mem, ring.desc, r.below(256) as u16, addr(r), len(r), flags, next);
    }
    let heads = r.below(4) as u16;
    publish(b, ring, r, heads);
}

/// Makes `n` random heads available; sometimes the index jumps anywhere.
fn publish(b: &Bench, ring: &Ring, r: &mut Rng, n: u16) {
    let idx: u16 = b.mem.read_obj(GuestAddress(ring.avail.0 + 2)).unwrap();
    for i in 0..n {
        let slot = u64::from(idx.wrapping_add(i) % 256);
        let head = if r.below(16) == 0 { r.next() as u16 } else { r.below(256) as u16 };
        b.mem.write_obj(head, GuestAddress(ring.avail.0 + 4 + 2 * slot)).unwrap();
    }
    let new = if r.below(32) == 0 { r.next() as u16 } else { idx.wrapping_add(n) };
    b.mem.write_obj(new, GuestAddress(ring.avail.0 + 2)).unwrap();
}

/// A well-formed chain carrying a header with random fields.
fn plausible(b: &Bench, r: &mut Rng, head: u16) {
    let any = r.next();
    let mut h = pkt(crate::packet::Op::Rw, r.pick(&[1024, 2000, any as u32]), r.pick(&[5000, 5001, 1 << 30]));
    h.op = r.below(10) as u16;
    h.src_cid = r.pick(&[GUEST_CID, GUEST_CID, HOST_CID, any]);
    h.dst_cid = r.pick(&[HOST_CID, HOST_CID, GUEST_CID]);
    h.kind = r.pick(&[1, 1, 2, any as u16]);
    h.flags = r.below(4) as u32;
    h.buf_alloc = r.pick(&[0, 4096, 256 * 1024, (any >> 16) as u32]);
    h.fwd_cnt = r.next() as u32;
    let payload = r.below(3000) as usize;
    h.len = r.pick(&[payload as u32, payload as u32, (any >> 32) as u32, (MAX_PAYLOAD + 1) as u32]);
    let mut bytes = h.encode().to_vec();
    bytes.resize(HDR_LEN + payload, 0xa5);
    let base = (1 << 20) + r.below(32 << 20);
    b.mem.write_slice(&bytes, GuestAddress(base)).unwrap();
    // Cut into up to 4 descriptors, ids head..head+3.
    let mut at = 0usize;
    let pieces = r.below(4) + 1;
    for i in 0..pieces {
        let last = i + 1 == pieces;
        let n = if last { bytes.len() - at } else { (r.below(60) as usize).min(bytes.len() - at) };
        let id = (head + i as u16) % 256;
        let flags = if last { 0 } else { VRING_DESC_F_NEXT as u16 };
        write_desc(&b.mem, b.tx.desc, id, base + at as u64, n as u32, flags, (id + 1) % 256);
        at += n;
    }
    let idx: u16 = b.mem.read_obj(GuestAddress(b.tx.avail.0 + 2)).unwrap();
    b.mem.write_obj(head % 256, GuestAddress(b.tx.avail.0 + 4 + 2 * u64::from(idx % 256))).unwrap();
    b.mem.write_obj(idx.wrapping_add(1), GuestAddress(b.tx.avail.0 + 2)).unwrap();
}

#[test]
fn thousands_of_hostile_chains_neither_panic_nor_grow_without_bound() {
    const LIMIT: usize = 16;
    let mut b = Bench::with_limit(true, LIMIT);
    let services = [b.listen(5000), b.listen(5001)];
    for l in &services {
        l.set_nonblocking(true).unwrap();
    }
    let mut host_ends: Vec<UnixStream> = Vec::new();
    let mut r = Rng(0x5eed_0123_4567_89ab);
    for round in 0..4000 {
        if round % 64 == 0 {
            b.reset_rings();
        }
        if round % 512 == 0 {
            b.dev.reset();
        }
        match r.below(5) {
            0 => scribble(&b, &b.tx, &mut r, false),
            1 | 2 => {
                let head = r.below(256) as u16;
                plausible(&b, &mut r, head);
            }
            3 => scribble(&b, &b.rx, &mut r, true),
            _ => {
                for l in &services {
                    while let Ok((s, _)) = l.accept() {
                        s.set_nonblocking(true).unwrap();
                        host_ends.push(s);
                    }
                }
                if let Ok(mut c) = UnixStream::connect(b.uds()) {
                    let line = r.pick(&["CONNECT 1024\n", "CONNECT 99999999999\n", "connect 7\nhello", "junk"]);
                    let _ = c.write_all(line.as_bytes());
                    c.set_nonblocking(true).unwrap();
                    host_ends.push(c);
                }
                for s in host_ends.iter_mut() {
                    let _ = s.write(&[0x5a; 3000]);
                }
                if host_ends.len() > 40 || r.below(4) == 0 {
                    let n = r.below(host_ends.len() as u64 + 1) as usize;
                    host_ends.drain(..n);
                }
            }
        }
        b.dev.process_tx(&mut b.txq, &b.mem);
        b.dev.handle_host_events();
        b.dev.process_rx(&mut b.rxq, &b.mem);
        let (conns, clients) = b.dev.connections();
        assert!(conns + clients <= LIMIT, "round {round}: {conns} + {clients} connections");
        assert!(b.dev.buffered_bytes() <= b.dev.max_buffered_bytes());
        let (ready, rsts) = b.dev.queue_lens();
        assert!(ready <= conns && rsts <= 256, "round {round}: {ready} queued, {rsts} RSTs");
    }
    let s = b.dev.stats();
    // The run must have exercised the checks, not just the happy path.
    assert!(s.bad_tx_chain.count() > 0 && s.bad_tx_len.count() > 0 && s.wrong_cid.count() > 0);
    assert!(s.unknown_conn.count() > 0 && s.bad_rx_chain.count() > 0);
}
