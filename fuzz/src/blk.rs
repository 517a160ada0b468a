//! `blk_chains`: descriptor tables and rings written by a hostile guest,
//! then queue notifies handled by the real virtio-blk device behind its
//! real MMIO transport, against a small image file.
//!
//! A program is a handshake (features, queue size, where the rings go)
//! and then up to [`MAX_OPS`] steps: descriptors in the queue's table or
//! anywhere else (indirect tables), request headers, discard segments, raw
//! bytes, available-ring entries and indices, and notifies. After every
//! notify: the heap rose by at most [`ALLOC_CAP`], the device wrote guest
//! RAM only inside device-writable buffers and the used ring, the image
//! kept its size (and, read-only, its bytes), and the used ring holds one
//! sane entry per request the device counted as returned.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use moat_vmm::devices::virtio::block::{Block, BlockStats, DiskImage, MAX_DATA};
use moat_vmm::devices::virtio::{regs, status, MmioTransport, VIRTIO_F_VERSION_1};
use moat_vmm::GuestMemory;

use crate::alloc;
use crate::guest::{self, check_writes, Snapshot, REGIONS};
use crate::input::{Input, Seed};

/// Steps in one program.
pub const MAX_OPS: usize = 256;
/// Most the heap may rise while one notify is handled.
pub const ALLOC_CAP: usize = 16 << 10;
/// Sectors in the image.
pub const DISK_SECTORS: u64 = 64;
const DISK_BYTES: u64 = DISK_SECTORS * 512;

/// Where the handshake puts the rings unless the program says otherwise.
pub const DESC: u64 = 0x1000;
pub const AVAIL: u64 = 0x2000;
pub const USED: u64 = 0x3000;

/// Step opcodes (the byte before each step, modulo 8).
pub mod op {
    pub const DESC: u8 = 0;
    pub const DESC_AT: u8 = 1;
    pub const HEADER: u8 = 2;
    pub const BYTES: u8 = 3;
    pub const PUBLISH: u8 = 4;
    pub const AVAIL_IDX: u8 = 5;
    pub const NOTIFY: u8 = 6;
    pub const SEGMENT: u8 = 7;
}

/// Request types a header step picks from (its byte modulo 8; 7 reads a raw u32).
const KINDS: [u32; 7] = [0, 1, 4, 8, 11, 13, 0xdead];

/// The image, made once per process and refilled before each program.
/// One per thread: an open image is locked, and tests run side by side.
fn image() -> PathBuf {
    thread_local! {
        static IMAGE: tempfile::TempPath = {
            let dir = if Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
            tempfile::Builder::new().prefix("moat-fuzz-blk").tempfile_in(dir).expect("temp image").into_temp_path()
        };
    }
    IMAGE.with(|p| p.to_path_buf())
}

fn fresh_image() -> Vec<u8> {
    let content: Vec<u8> = (0..DISK_BYTES).map(|i| (i / 512) as u8 ^ (i as u8).wrapping_mul(7)).collect();
    let mut f = File::options().write(true).open(image()).expect("image");
    f.set_len(0).and_then(|()| f.write_all(&content)).expect("image written");
    content
}

/// The image, refilled (for targets that only need a disk to exist).
pub(crate) fn fresh_image_path() -> PathBuf {
    fresh_image();
    image()
}

fn image_bytes() -> Vec<u8> {
    let mut out = Vec::new();
    let mut f = File::open(image()).expect("image");
    f.seek(SeekFrom::Start(0)).and_then(|_| f.read_to_end(&mut out)).expect("image read");
    out
}

/// A guest and its block device, mid-program.
struct Rig {
    mem: GuestMemory,
    transport: MmioTransport<Block>,
    read_only: bool,
    disk: Vec<u8>,
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
    /// Used entries the device has added (its next used index).
    used_count: u16,
}

/// Runs one program.
pub fn run(data: &[u8]) {
    execute(data);
}

fn execute(data: &[u8]) -> Option<Rig> {
    let mut i = Input::new(data);
    let mut rig = Rig::handshake(&mut i)?;
    for _ in 0..MAX_OPS {
        if i.is_empty() {
            break;
        }
        rig.step(&mut i);
    }
    rig.notify(0);
    Some(rig)
}

impl Rig {
    fn handshake(i: &mut Input) -> Option<Self> {
        let read_only = i.bool();
        let disk = fresh_image();
        let image = DiskImage::open(&image(), read_only).expect("image opens");
        let mem = GuestMemory::with_ranges(&REGIONS).expect("guest RAM");
        let mut transport = MmioTransport::new(Block::new(image), &mem).expect("transport");
        let features = if i.bool() { transport.offered_features() } else { i.u64() | VIRTIO_F_VERSION_1 };
        let size = match i.u8() {
            b @ 0..=0xef => 1 << (b % 9),
            _ => i.u16(),
        };
        let (desc, avail, used) =
            if i.bool() { (DESC, AVAIL, USED) } else { (guest::addr(i), guest::addr(i), guest::addr(i)) };
        let mut set = |offset: u64, value: u32| transport.write(offset, &value.to_le_bytes());
        set(regs::STATUS, status::ACKNOWLEDGE);
        set(regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        set(regs::DRIVER_FEATURES_SEL, 0);
        set(regs::DRIVER_FEATURES, features as u32);
        set(regs::DRIVER_FEATURES_SEL, 1);
        set(regs::DRIVER_FEATURES, (features >> 32) as u32);
        set(regs::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        set(regs::QUEUE_SEL, 0);
        set(regs::QUEUE_NUM, u32::from(size));
        for (low, addr) in
            [(regs::QUEUE_DESC_LOW, desc), (regs::QUEUE_DRIVER_LOW, avail), (regs::QUEUE_DEVICE_LOW, used)]
        {
            set(low, addr as u32);
            set(low + 4, (addr >> 32) as u32);
        }
        set(regs::QUEUE_READY, 1);
        set(regs::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
        // A size the transport refused leaves the queue at its maximum; a
        // misaligned low half of an address is refused, and the high half
        // then lands on a zero low half (virtio-queue's setters).
        let size = if size.is_power_of_two() && size <= 256 { size } else { 256 };
        let aligned = |addr: u64, align: u64| if addr.is_multiple_of(align) { addr } else { addr & !0xffff_ffff };
        let (desc, avail, used) = (aligned(desc, 16), aligned(avail, 2), aligned(used, 4));
        Some(Self { mem, transport, read_only, disk, size, desc, avail, used, avail_idx: 0, used_count: 0 })
    }

    fn step(&mut self, i: &mut Input) {
        match i.u8() % 8 {
            op::DESC => {
                let index = i.small_u16();
                let at = self.desc.wrapping_add(16 * u64::from(index));
                self.put_desc(i, at);
            }
            op::DESC_AT => {
                let at = guest::addr(i);
                self.put_desc(i, at);
            }
            op::HEADER => {
                let at = guest::addr(i);
                let kind = match usize::from(i.u8()) % 8 {
                    7 => i.u32(),
                    k => KINDS[k],
                };
                let sector = if i.bool() { u64::from(i.u8()) } else { i.u64() };
                let mut h = [0u8; 16];
                h[..4].copy_from_slice(&kind.to_le_bytes());
                h[8..].copy_from_slice(&sector.to_le_bytes());
                let _ = self.mem.write(at, &h);
            }
            op::BYTES => {
                let at = guest::addr(i);
                let _ = self.mem.write(at, i.bytes());
            }
            op::PUBLISH => {
                let head = i.small_u16();
                let slot = u64::from(self.avail_idx % self.size);
                let _ = self.mem.write(self.avail.wrapping_add(4 + 2 * slot), &head.to_le_bytes());
                self.avail_idx = self.avail_idx.wrapping_add(1);
                let _ = self.mem.write(self.avail.wrapping_add(2), &self.avail_idx.to_le_bytes());
            }
            op::AVAIL_IDX => {
                // The index (a ring that lies about how much it holds) or the flags.
                let (field, value) = (u64::from(i.u8() & 1) * 2, i.u16());
                if field == 2 {
                    self.avail_idx = value;
                }
                let _ = self.mem.write(self.avail.wrapping_add(field), &value.to_le_bytes());
            }
            op::NOTIFY => {
                let queue = if i.u8() == 0xff { i.u32() } else { 0 };
                self.notify(queue);
            }
            _ => {
                let at = guest::addr(i);
                let mut seg = [0u8; 16];
                seg[..8].copy_from_slice(&u64::from(i.u8()).to_le_bytes());
                seg[8..12].copy_from_slice(&guest::len(i).to_le_bytes());
                seg[12..].copy_from_slice(&u32::from(i.u8() & 3).to_le_bytes());
                let _ = self.mem.write(at, &seg);
            }
        }
    }

    /// A descriptor at `at`: address, length, flags (usually a mix of NEXT,
    /// WRITE and INDIRECT, sometimes any u16) and next.
    fn put_desc(&self, i: &mut Input, at: u64) {
        let (addr, len) = (guest::addr(i), guest::len(i));
        let flags = match i.u8() {
            b @ 0..=0x7f => u16::from(b & 7),
            _ => i.u16(),
        };
        let next = i.small_u16();
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..].copy_from_slice(&next.to_le_bytes());
        let _ = self.mem.write(at, &d);
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot::take(|addr, buf| {
            // Every span is RAM; a failure would be the harness's bug.
            self.mem.read(addr, buf).expect("snapshot of RAM");
        })
    }

    fn used_idx(&self) -> Option<u16> {
        let mut b = [0u8; 2];
        self.mem.read(self.used.checked_add(2)?, &mut b).ok()?;
        Some(u16::from_le_bytes(b))
    }

    fn notify(&mut self, queue: u32) {
        let before = self.snapshot();
        let stats_before = self.transport.device().stats();
        let ((), grew) = alloc::measure(|| self.transport.write(regs::QUEUE_NOTIFY, &queue.to_le_bytes()));
        assert!(grew <= ALLOC_CAP, "handling a notify grew the heap by {grew} bytes");

        let after = self.snapshot();
        let ring = (self.used, self.used.saturating_add(6 + 8 * u64::from(self.size)));
        if let Err(at) = check_writes(&before, &after, &[ring]) {
            let table = (self.desc, self.desc.saturating_add(16 * u64::from(self.size)));
            if !guest::self_modifying(&before, &after, &[table], &[ring]) {
                panic!("the device wrote guest byte {at:#x}, outside every writable buffer and the used ring");
            }
        }
        let image = image_bytes();
        assert_eq!(image.len() as u64, DISK_BYTES, "a write went past the end of the image");
        if self.read_only {
            assert!(image == self.disk, "a read-only image changed");
        }
        self.check_used(stats_before, &before, &after);
    }

    /// Every request the device handled is one used entry with an index
    /// inside the queue and a length it could have written, unless the
    /// guest pointed a writable buffer at the used ring (then it scribbled
    /// over the entries itself).
    fn check_used(&mut self, s0: BlockStats, before: &Snapshot, after: &Snapshot) {
        let s1 = self.transport.device().stats();
        let counted = |s: BlockStats| s.ok + s.ioerr + s.unsupported + s.dropped - s.unreturned;
        let returned = counted(s1).wrapping_sub(counted(s0));
        let from = self.used_count;
        // The device's own count, which it writes as the used index.
        self.used_count = from.wrapping_add(returned as u16);
        if returned == 0 {
            return;
        }
        let problem = match self.used_idx() {
            Some(idx) if idx != self.used_count => {
                Some(format!("used index {idx} after {} requests returned", self.used_count))
            }
            _ => {
                let read = |a: u64, b: &mut [u8]| self.mem.read(a, b).is_ok();
                guest::check_used(read, self.used, self.size, (from, self.used_count), MAX_DATA as u32 + 1).err()
            }
        };
        let Some(problem) = problem else { return };
        let ring = (self.used, self.used.saturating_add(6 + 8 * u64::from(self.size)));
        if !(before.writable_overlaps(ring) || after.writable_overlaps(ring) || self.rings_overlap()) {
            panic!("{problem}");
        }
    }

    /// Whether the descriptor table or available ring shares bytes with
    /// the used ring (the guest's own mess).
    fn rings_overlap(&self) -> bool {
        let n = u64::from(self.size);
        let used = (self.used, self.used.saturating_add(6 + 8 * n));
        [(self.desc, self.desc.saturating_add(16 * n)), (self.avail, self.avail.saturating_add(6 + 2 * n))]
            .iter()
            .any(|&(s, e)| s < used.1 && used.0 < e)
    }
}

/// Seed programs: honest requests of every kind, then the classic hostile
/// shapes, each a valid starting point for the fuzzer.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    // (kind, sector, data buffers as (addr, len, writable)).
    type Buf = (u64, u32, bool);
    let requests: &[(u32, u64, &[Buf])] = &[
        (0, 0, &[(0x8000, 512, true)]),
        (0, 3, &[(0x8000, 100, true), (0x9000, 412, true), (0xa000, 512, true)]),
        (1, 5, &[(0x8000, 1024, false)]),
        (4, 0, &[]),
        (8, 0, &[(0x8000, 20, true)]),
        (11, 0, &[(0x8200, 16, false)]),
        (13, 0, &[(0x8200, 16, false)]),
        // Data running from region A into region B, and into the hole.
        (0, 1, &[(0xff00, 512, true)]),
        (1, 1, &[(0x1_ff00, 512, false)]),
        (0, 63, &[(0x3_0000, 1024, true)]),
    ];
    for (n, &(kind, sector, bufs)) in requests.iter().enumerate() {
        let mut s = handshake_seed();
        s.u8(op::HEADER);
        guest::put_addr(&mut s, 0x7000);
        s.u8(kind_index(kind)).u8(0).u64(sector);
        if kind == 11 || kind == 13 {
            s.u8(op::SEGMENT);
            guest::put_addr(&mut s, 0x8200);
            s.u8(sector as u8);
            guest::put_len(&mut s, 2);
            s.u8(0);
        }
        let mut chain = vec![(0x7000u64, 16u32, false)];
        chain.extend_from_slice(bufs);
        chain.push((0x7010, 1, true));
        put_chain(&mut s, &chain, n as u16 % 2 * 8);
        publish(&mut s, n as u16 % 2 * 8);
        s.u8(op::NOTIFY).u8(0);
        out.push(s.bytes);
    }
    // A loop, an indirect table crossing from A into B, and a head past the queue.
    let mut s = handshake_seed();
    put_desc(&mut s, None, 0, (0x7000, 16, 1, 1));
    put_desc(&mut s, None, 1, (0x7010, 1, 3, 0));
    publish(&mut s, 0);
    put_desc(&mut s, None, 2, (0xffe0, 48, 4, 0));
    put_desc(&mut s, Some(0xffe0), 0, (0x7000, 16, 1, 1));
    put_desc(&mut s, Some(0xffe0), 1, (0x8000, 512, 3, 2));
    put_desc(&mut s, Some(0xffe0), 2, (0x7010, 1, 2, 0));
    publish(&mut s, 2);
    publish(&mut s, 300);
    s.u8(op::NOTIFY).u8(0);
    out.push(s.bytes);
    out
}

fn kind_index(kind: u32) -> u8 {
    KINDS.iter().position(|&k| k == kind).unwrap_or(7) as u8
}

fn handshake_seed() -> Seed {
    let mut s = Seed::default();
    // Read-write, every offered feature, 16 entries, default ring places.
    s.u8(0).u8(1).u8(4).u8(1);
    s
}

fn put_desc(s: &mut Seed, table: Option<u64>, index: u16, (addr, len, flags, next): (u64, u32, u8, u16)) {
    match table {
        None => {
            s.u8(op::DESC).u8(index as u8);
        }
        Some(t) => {
            s.u8(op::DESC_AT);
            guest::put_addr(s, t + 16 * u64::from(index));
        }
    }
    guest::put_addr(s, addr);
    guest::put_len(s, len);
    s.u8(flags).u8(next as u8);
}

fn put_chain(s: &mut Seed, bufs: &[(u64, u32, bool)], first: u16) {
    for (n, &(addr, len, writable)) in bufs.iter().enumerate() {
        let index = first + n as u16;
        let last = n + 1 == bufs.len();
        let flags = u8::from(!last) | if writable { 2 } else { 0 };
        put_desc(s, None, index, (addr, len, flags, index + 1));
    }
}

fn publish(s: &mut Seed, head: u16) {
    s.u8(op::PUBLISH);
    if head < 0xff {
        s.u8(head as u8);
    } else {
        s.u8(0xff).u16(head);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn honest_seeds_are_answered_ok() {
        for (n, seed) in seeds().iter().enumerate().take(7) {
            let rig = execute(seed).expect("rig");
            let stats = rig.transport.device().stats();
            assert_eq!(stats.ok, 1, "seed {n}: {stats:?}");
        }
    }
}
