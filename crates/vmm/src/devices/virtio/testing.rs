//! An in-process virtio-mmio driver for tests and benchmarks (feature
//! `test-utils`): it touches the transport only through register reads and
//! writes and lays out a split virtqueue in guest RAM, the way a guest
//! driver does, so hostile layouts are as easy to build as honest ones.
//!
//! Guest RAM layout it uses: queue 0 from [`RING_BASE`] (descriptor table,
//! available ring, used ring, each page-aligned; queue n 64 KiB further per
//! n, below [`SLOT_BASE`] for up to 7 queues), request headers and status
//! bytes of [`Driver::blk_chain`] from [`SLOT_BASE`], and data wherever the
//! caller says (conventionally from [`DATA_BASE`]).

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

use super::device::{status, VirtioDevice};
use super::mmio::{regs, MmioTransport};
use crate::GuestMemory;

/// Descriptor table; the available and used rings follow on their own pages.
pub const RING_BASE: u64 = 0x1_0000;
/// Per-request slots: a 16-byte header then a status byte, 32 bytes each.
pub const SLOT_BASE: u64 = 0x8_0000;
/// Where tests conventionally put data buffers.
pub const DATA_BASE: u64 = 0x10_0000;

const SLOT_BYTES: u64 = 32;
const PAGE: u64 = 0x1000;

/// One buffer of a chain: guest address, length, device-writable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    pub writable: bool,
}

impl Buf {
    pub fn readable(addr: u64, len: u32) -> Self {
        Self { addr, len, writable: false }
    }
    pub fn writable(addr: u64, len: u32) -> Self {
        Self { addr, len, writable: true }
    }
}

/// A driver's view of one split ring.
#[derive(Debug, Clone, Copy)]
struct Ring {
    size: u16,
    base: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl Ring {
    fn new(base: u64) -> Self {
        Self { size: 0, base, next_desc: 0, avail_idx: 0, used_seen: 0 }
    }
}

/// A driver for one transport. Queue calls act on the selected queue
/// (queue 0 until [`Driver::select_queue`]).
#[derive(Debug)]
pub struct Driver<'m, D> {
    pub transport: MmioTransport<D>,
    mem: &'m GuestMemory,
    queue: u16,
    rings: Vec<Ring>,
}

impl<'m, D: VirtioDevice> Driver<'m, D> {
    /// A driver for `transport`, whose queues live in `mem`.
    pub fn new(transport: MmioTransport<D>, mem: &'m GuestMemory) -> Self {
        Self { transport, mem, queue: 0, rings: vec![Ring::new(RING_BASE)] }
    }

    /// Makes queue `index` the one later queue calls act on. Its rings go
    /// at [`Driver::ring_base`] unless [`Driver::setup_queue_at`] says otherwise.
    pub fn select_queue(&mut self, index: u16) {
        let needed = usize::from(index) + 1;
        while self.rings.len() < needed {
            let next = self.rings.len() as u16;
            self.rings.push(Ring::new(Self::ring_base(next)));
        }
        self.queue = index;
    }

    /// Where [`Driver::setup_queue`] puts queue `index`'s rings: 64 KiB
    /// apart from [`RING_BASE`] (room for queues of up to 256 entries).
    pub fn ring_base(index: u16) -> u64 {
        RING_BASE + 0x1_0000 * u64::from(index)
    }

    /// Gives the transport back.
    pub fn into_transport(self) -> MmioTransport<D> {
        self.transport
    }

    /// Consumes the signals on the device's interrupt line (its irqfd when
    /// KVM isn't there to take them), waiting up to `timeout` for the
    /// first. Returns how many there were.
    pub fn wait_interrupt(&self, timeout: std::time::Duration) -> u64 {
        use std::os::fd::AsRawFd;
        let line = self.transport.interrupt().line();
        let mut pfd = libc::pollfd { fd: line.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd, its count, and an fd kept open by the
        // transport for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, ms) };
        line.read().unwrap_or(0)
    }

    fn ring(&self) -> Ring {
        self.rings[usize::from(self.queue)]
    }

    fn ring_mut(&mut self) -> &mut Ring {
        &mut self.rings[usize::from(self.queue)]
    }

    /// Reads a 32-bit register.
    pub fn reg(&mut self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        self.transport.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    /// Writes a 32-bit register.
    pub fn set_reg(&mut self, offset: u64, value: u32) {
        self.transport.write(offset, &value.to_le_bytes());
    }

    /// Reads `N` bytes of config space at `offset`.
    pub fn config<const N: usize>(&mut self, offset: u64) -> [u8; N] {
        let mut data = [0u8; N];
        self.transport.read(regs::CONFIG + offset, &mut data);
        data
    }

    /// The 64 offered feature bits.
    pub fn device_features(&mut self) -> u64 {
        self.set_reg(regs::DEVICE_FEATURES_SEL, 1);
        let high = self.reg(regs::DEVICE_FEATURES);
        self.set_reg(regs::DEVICE_FEATURES_SEL, 0);
        (u64::from(high) << 32) | u64::from(self.reg(regs::DEVICE_FEATURES))
    }

    /// Reset, ACKNOWLEDGE, DRIVER, accept `features`, FEATURES_OK. Returns
    /// the status register afterwards (FEATURES_OK is set if accepted).
    pub fn negotiate(&mut self, features: u64) -> u32 {
        self.set_reg(regs::STATUS, 0);
        self.set_reg(regs::STATUS, status::ACKNOWLEDGE);
        self.set_reg(regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        self.set_reg(regs::DRIVER_FEATURES_SEL, 0);
        self.set_reg(regs::DRIVER_FEATURES, features as u32);
        self.set_reg(regs::DRIVER_FEATURES_SEL, 1);
        self.set_reg(regs::DRIVER_FEATURES, (features >> 32) as u32);
        self.set_reg(regs::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        self.reg(regs::STATUS)
    }

    /// Programs the selected queue with `size` entries (queue 0 at
    /// [`RING_BASE`]) and marks it ready.
    pub fn setup_queue(&mut self, size: u16) {
        self.setup_queue_at(size, Self::ring_base(self.queue));
    }

    /// Like [`Driver::setup_queue`] with the rings from `base`.
    pub fn setup_queue_at(&mut self, size: u16, base: u64) {
        *self.ring_mut() = Ring { size, base, ..Ring::new(base) };
        let (desc, avail, used) = ring_addrs(size, base);
        self.set_reg(regs::QUEUE_SEL, u32::from(self.queue));
        self.set_reg(regs::QUEUE_NUM, u32::from(size));
        for (low, value) in
            [(regs::QUEUE_DESC_LOW, desc), (regs::QUEUE_DRIVER_LOW, avail), (regs::QUEUE_DEVICE_LOW, used)]
        {
            self.set_reg(low, value as u32);
            self.set_reg(low + 4, (value >> 32) as u32);
        }
        self.set_reg(regs::QUEUE_READY, 1);
    }

    /// Sets DRIVER_OK; returns the status register afterwards.
    pub fn start(&mut self) -> u32 {
        let now = self.reg(regs::STATUS);
        self.set_reg(regs::STATUS, now | status::DRIVER_OK);
        self.reg(regs::STATUS)
    }

    /// The whole handshake, accepting every offered feature, with a queue of
    /// `size`. Panics (it's a test helper) if the device refuses.
    pub fn init(&mut self, size: u16) {
        let features = self.device_features();
        assert_ne!(self.negotiate(features) & status::FEATURES_OK, 0, "features refused");
        self.setup_queue(size);
        assert_eq!(self.start() & (status::DRIVER_OK | status::DEVICE_NEEDS_RESET), status::DRIVER_OK);
    }

    /// Writes descriptor `index` as is (any flags, any `next`).
    pub fn write_desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let Ring { size, base, .. } = self.ring();
        let at = ring_addrs(size, base).0 + 16 * u64::from(index);
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..].copy_from_slice(&next.to_le_bytes());
        self.mem.write(at, &raw).expect("descriptor table in RAM");
    }

    /// Makes the chain at `head` available (no notification).
    pub fn publish(&mut self, head: u16) {
        let Ring { size, base, avail_idx, .. } = self.ring();
        let avail = ring_addrs(size, base).1;
        let slot = u64::from(avail_idx % size.max(1));
        self.mem.write(avail + 4 + 2 * slot, &head.to_le_bytes()).expect("avail ring in RAM");
        self.ring_mut().avail_idx = avail_idx.wrapping_add(1);
        self.set_avail_idx(avail_idx.wrapping_add(1));
    }

    /// Writes the available ring's index as is.
    pub fn set_avail_idx(&self, idx: u16) {
        let Ring { size, base, .. } = self.ring();
        let avail = ring_addrs(size, base).1;
        self.mem.write(avail + 2, &idx.to_le_bytes()).expect("avail ring in RAM");
    }

    /// Links `bufs` into a chain on the next free descriptors and publishes it.
    pub fn add_chain(&mut self, bufs: &[Buf]) -> u16 {
        let head = self.ring().next_desc;
        for (i, buf) in bufs.iter().enumerate() {
            let ring = self.ring_mut();
            let index = ring.next_desc;
            ring.next_desc = (ring.next_desc + 1) % ring.size;
            let next = ring.next_desc;
            let last = i + 1 == bufs.len();
            let flags = if last { 0 } else { VRING_DESC_F_NEXT as u16 }
                | if buf.writable { VRING_DESC_F_WRITE as u16 } else { 0 };
            self.write_desc(index, buf.addr, buf.len, flags, next);
        }
        self.publish(head);
        head
    }

    /// Kicks the selected queue.
    pub fn notify(&mut self) {
        self.set_reg(regs::QUEUE_NOTIFY, u32::from(self.queue));
    }

    /// The next used element `(id, len)` the device returned, if any.
    pub fn pop_used(&mut self) -> Option<(u32, u32)> {
        let Ring { size, base, used_seen, .. } = self.ring();
        let used = ring_addrs(size, base).2;
        let mut idx = [0u8; 2];
        self.mem.read(used + 2, &mut idx).ok()?;
        if u16::from_le_bytes(idx) == used_seen {
            return None;
        }
        let mut elem = [0u8; 8];
        let slot = u64::from(used_seen % size);
        self.mem.read(used + 4 + 8 * slot, &mut elem).ok()?;
        self.ring_mut().used_seen = used_seen.wrapping_add(1);
        Some((u32::from_le_bytes(elem[..4].try_into().ok()?), u32::from_le_bytes(elem[4..].try_into().ok()?)))
    }

    /// Publishes a virtio-blk request in request slot `slot`: header
    /// (`kind`, `sector`), then `data`, then the slot's status byte (set to
    /// 0xff first so an unanswered request shows).
    pub fn blk_chain(&mut self, slot: u16, kind: u32, sector: u64, data: &[Buf]) -> u16 {
        let hdr = SLOT_BASE + SLOT_BYTES * u64::from(slot);
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&kind.to_le_bytes());
        raw[8..].copy_from_slice(&sector.to_le_bytes());
        self.mem.write(hdr, &raw).expect("slot in RAM");
        self.mem.write(hdr + 16, &[0xff]).expect("slot in RAM");
        let mut bufs = Vec::with_capacity(data.len() + 2);
        bufs.push(Buf::readable(hdr, 16));
        bufs.extend_from_slice(data);
        bufs.push(Buf::writable(hdr + 16, 1));
        self.add_chain(&bufs)
    }

    /// The status byte of request slot `slot`.
    pub fn blk_status(&self, slot: u16) -> u8 {
        let mut b = [0u8];
        self.mem.read(SLOT_BASE + SLOT_BYTES * u64::from(slot) + 16, &mut b).expect("slot in RAM");
        b[0]
    }

    /// One request, start to finish: publish, notify, collect. Returns the
    /// status byte and the used length, or `None` if nothing came back.
    pub fn blk_request(&mut self, kind: u32, sector: u64, data: &[Buf]) -> Option<(u8, u32)> {
        self.blk_chain(0, kind, sector, data);
        self.notify();
        let (_, len) = self.pop_used()?;
        Some((self.blk_status(0), len))
    }
}

/// Descriptor table, available ring and used ring addresses for a queue of
/// `size` from `base`.
fn ring_addrs(size: u16, base: u64) -> (u64, u64, u64) {
    let size = u64::from(size);
    let avail = (base + 16 * size).next_multiple_of(PAGE);
    let used = (avail + 6 + 2 * size).next_multiple_of(PAGE);
    (base, avail, used)
}
