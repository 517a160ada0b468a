//! virtio-blk driven through its MMIO transport and a queue in guest RAM,
//! the way a guest driver drives it: honest requests first, then hostile
//! chains, then a seeded random storm.

use std::io::{Read, Seek, SeekFrom, Write};

use tempfile::NamedTempFile;
use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

use super::*;
use crate::devices::virtio::testing::{Buf, Driver, DATA_BASE};
use crate::devices::virtio::{regs, status, MmioTransport, VIRTIO_F_VERSION_1};
use crate::GuestMemory;

const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;
const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const WRITE: u16 = VRING_DESC_F_WRITE as u16;
const MEM_MIB: u32 = 32;
const RAM_END: u64 = (MEM_MIB as u64) << 20;

/// Byte `i` of sector `s` in the test images.
fn pattern(sector: u64, i: usize) -> u8 {
    (sector as u8).wrapping_mul(31).wrapping_add(i as u8) ^ 0x5a
}

struct Rig {
    mem: GuestMemory,
    image: NamedTempFile,
}

impl Rig {
    /// An image of `sectors` sectors filled with [`pattern`].
    fn new(sectors: u64) -> Self {
        let mut image = NamedTempFile::new().unwrap();
        for s in 0..sectors {
            let data: Vec<u8> = (0..512).map(|i| pattern(s, i)).collect();
            image.write_all(&data).unwrap();
        }
        Self { mem: GuestMemory::new(MEM_MIB).unwrap(), image }
    }

    /// A started driver with every offered feature accepted.
    fn driver(&self, read_only: bool) -> Driver<'_, Block> {
        let disk = DiskImage::open(self.image.path(), read_only).unwrap();
        let mut d = Driver::new(MmioTransport::new(Block::new(disk), &self.mem).unwrap(), &self.mem);
        d.init(QUEUE_SIZE);
        d
    }

    fn image_bytes(&self) -> Vec<u8> {
        let mut f = self.image.reopen().unwrap();
        let mut out = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut out).unwrap();
        out
    }

    fn guest(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.mem.read(addr, &mut buf).unwrap();
        buf
    }
}

fn stats(d: &Driver<'_, Block>) -> BlockStats {
    d.transport.device().stats()
}

#[test]
fn config_space_and_features_describe_the_disk() {
    let rig = Rig::new(8);
    let mut d = rig.driver(false);
    assert_eq!(d.reg(regs::DEVICE_ID), 2);
    assert_eq!(u64::from_le_bytes(d.config::<8>(0)), 8, "capacity");
    assert_eq!(u32::from_le_bytes(d.config::<4>(8)), SIZE_MAX);
    assert_eq!(u32::from_le_bytes(d.config::<4>(12)), SEG_MAX);
    assert_eq!(u32::from_le_bytes(d.config::<4>(20)), 512, "blk_size");
    assert_eq!(d.config::<1>(CONFIG_LEN as u64 - 4), [1], "write_zeroes_may_unmap");
    let features = d.device_features();
    for bit in [VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH] {
        assert_ne!(features & (1 << bit), 0, "feature {bit}");
    }
    assert_ne!(features & (1 << VIRTIO_BLK_F_DISCARD), 0);
    assert_ne!(features & (1 << VIRTIO_BLK_F_WRITE_ZEROES), 0);
    assert_eq!(features & (1 << VIRTIO_BLK_F_RO), 0);
    assert_ne!(features & VIRTIO_F_VERSION_1, 0);
    drop(d); // releases the image's write lock

    let features = rig.driver(true).device_features();
    assert_ne!(features & (1 << VIRTIO_BLK_F_RO), 0);
    assert_eq!(features & (1 << VIRTIO_BLK_F_DISCARD | 1 << VIRTIO_BLK_F_WRITE_ZEROES), 0);
}

#[test]
fn reads_land_in_guest_memory_over_any_descriptor_split() {
    let rig = Rig::new(8);
    let mut d = rig.driver(true);
    let bufs =
        [Buf::writable(DATA_BASE, 100), Buf::writable(DATA_BASE + 0x1000, 412), Buf::writable(DATA_BASE + 0x2000, 512)];
    assert_eq!(d.blk_request(VIRTIO_BLK_T_IN, 2, &bufs), Some((OK, 1025)));
    let got =
        [rig.guest(DATA_BASE, 100), rig.guest(DATA_BASE + 0x1000, 412), rig.guest(DATA_BASE + 0x2000, 512)].concat();
    let want: Vec<u8> = (0..1024).map(|i| pattern(2 + i as u64 / 512, i % 512)).collect();
    assert_eq!(got, want);
    assert_eq!(d.reg(regs::INTERRUPT_STATUS), 1);
    assert_eq!(d.transport.interrupt().raised(), 1);

    // The last sector, whole, is in range.
    assert_eq!(d.blk_request(VIRTIO_BLK_T_IN, 7, &[Buf::writable(DATA_BASE, 512)]), Some((OK, 513)));
    assert_eq!(stats(&d), BlockStats { ok: 2, ..BlockStats::default() });
}

#[test]
fn header_and_status_may_share_descriptors_with_data() {
    let rig = Rig::new(8);
    let mut d = rig.driver(false);
    // Header split 6 + 10 across two descriptors; data and status in one.
    let hdr = DATA_BASE + 0x10_0000;
    let mut raw = [0u8; 16];
    raw[..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
    raw[8..].copy_from_slice(&3u64.to_le_bytes());
    rig.mem.write(hdr, &raw[..6]).unwrap();
    rig.mem.write(hdr + 0x100, &raw[6..]).unwrap();
    d.add_chain(&[Buf::readable(hdr, 6), Buf::readable(hdr + 0x100, 10), Buf::writable(DATA_BASE, 513)]);
    d.notify();
    assert_eq!(d.pop_used(), Some((0, 513)));
    assert_eq!(rig.guest(DATA_BASE + 512, 1), [OK]);
    assert_eq!(rig.guest(DATA_BASE, 512), (0..512).map(|i| pattern(3, i)).collect::<Vec<_>>());
}

#[test]
fn writes_reach_the_image_and_flush_and_get_id_answer() {
    let rig = Rig::new(8);
    let mut d = rig.driver(false);
    let data: Vec<u8> = (0..1024).map(|i| (i * 7) as u8).collect();
    rig.mem.write(DATA_BASE, &data[..300]).unwrap();
    rig.mem.write(DATA_BASE + 0x1000, &data[300..]).unwrap();
    let bufs = [Buf::readable(DATA_BASE, 300), Buf::readable(DATA_BASE + 0x1000, 724)];
    assert_eq!(d.blk_request(VIRTIO_BLK_T_OUT, 5, &bufs), Some((OK, 1)));
    assert_eq!(d.blk_request(VIRTIO_BLK_T_FLUSH, 0, &[]), Some((OK, 1)));
    let image = rig.image_bytes();
    assert_eq!(&image[5 * 512..7 * 512], &data[..]);
    assert_eq!(image.len(), 8 * 512);

    assert_eq!(d.blk_request(VIRTIO_BLK_T_GET_ID, 0, &[Buf::writable(DATA_BASE, 20)]), Some((OK, 21)));
    assert_eq!(rig.guest(DATA_BASE, 20), d.transport.device().disk().id().to_vec());
    assert!(rig.guest(DATA_BASE, 4) == b"moat");
    rig.mem.write(DATA_BASE, &[0; 20]).unwrap();
    assert_eq!(d.blk_request(VIRTIO_BLK_T_GET_ID, 0, &[Buf::writable(DATA_BASE, 3)]), Some((OK, 4)));
    assert_eq!(rig.guest(DATA_BASE, 4), b"moa\0", "a short buffer gets a prefix");
}

#[test]
fn a_read_only_disk_refuses_every_change() {
    let rig = Rig::new(8);
    let before = rig.image_bytes();
    let mut d = rig.driver(true);
    rig.mem.write(DATA_BASE, &[0xee; 512]).unwrap();
    assert_eq!(d.blk_request(VIRTIO_BLK_T_OUT, 1, &[Buf::readable(DATA_BASE, 512)]), Some((IOERR, 1)));
    let seg = range_seg(0, 1, 0);
    rig.mem.write(DATA_BASE, &seg).unwrap();
    for kind in [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES] {
        assert_eq!(d.blk_request(kind, 0, &[Buf::readable(DATA_BASE, 16)]), Some((IOERR, 1)));
    }
    assert_eq!(d.blk_request(VIRTIO_BLK_T_FLUSH, 0, &[]), Some((OK, 1)));
    assert_eq!(rig.image_bytes(), before);
    assert_eq!(stats(&d), BlockStats { ok: 1, ioerr: 3, ..BlockStats::default() });
}

fn range_seg(sector: u64, sectors: u32, flags: u32) -> [u8; 16] {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&sector.to_le_bytes());
    raw[8..12].copy_from_slice(&sectors.to_le_bytes());
    raw[12..].copy_from_slice(&flags.to_le_bytes());
    raw
}

#[test]
fn discard_and_write_zeroes_clear_sectors_and_check_every_segment() {
    let rig = Rig::new(16);
    let mut d = rig.driver(false);
    let segs = [range_seg(1, 1, 0), range_seg(4, 2, 0)].concat();
    rig.mem.write(DATA_BASE, &segs).unwrap();
    assert_eq!(d.blk_request(VIRTIO_BLK_T_DISCARD, 0, &[Buf::readable(DATA_BASE, 32)]), Some((OK, 1)));
    let segs = [range_seg(8, 1, 0), range_seg(10, 1, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)].concat();
    rig.mem.write(DATA_BASE, &segs).unwrap();
    assert_eq!(d.blk_request(VIRTIO_BLK_T_WRITE_ZEROES, 0, &[Buf::readable(DATA_BASE, 32)]), Some((OK, 1)));
    let image = rig.image_bytes();
    for s in 0..16u64 {
        let sector = &image[s as usize * 512..][..512];
        let cleared = [1, 4, 5, 8, 10].contains(&s);
        let want: Vec<u8> = (0..512).map(|i| if cleared { 0 } else { pattern(s, i) }).collect();
        assert_eq!(sector, &want[..], "sector {s}");
    }

    let before = rig.image_bytes();
    for (kind, segs, want) in [
        // One good segment then one past the end: nothing is done.
        (VIRTIO_BLK_T_DISCARD, [range_seg(0, 1, 0), range_seg(15, 2, 0)].concat(), IOERR),
        (VIRTIO_BLK_T_DISCARD, [range_seg(u64::MAX, 1, 0)].concat(), IOERR),
        (VIRTIO_BLK_T_DISCARD, [range_seg(0, 1, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)].concat(), UNSUPP),
        (VIRTIO_BLK_T_WRITE_ZEROES, [range_seg(0, 1, 0x80)].concat(), UNSUPP),
        (VIRTIO_BLK_T_WRITE_ZEROES, [range_seg(0, MAX_WRITE_ZEROES + 1, 0)].concat(), IOERR),
        (VIRTIO_BLK_T_DISCARD, [range_seg(0, 1, 0); 9].concat(), IOERR),
        (VIRTIO_BLK_T_DISCARD, vec![0; 15], IOERR),
        (VIRTIO_BLK_T_DISCARD, vec![], IOERR),
    ] {
        rig.mem.write(DATA_BASE, &segs).unwrap();
        let bufs: &[Buf] = if segs.is_empty() { &[] } else { &[Buf::readable(DATA_BASE, segs.len() as u32)] };
        assert_eq!(d.blk_request(kind, 0, bufs), Some((want, 1)), "{kind} {segs:?}");
    }
    assert_eq!(rig.image_bytes(), before);
}

const MAX_WRITE_ZEROES: u32 = super::request::MAX_WRITE_ZEROES_SECTORS;

#[test]
fn requests_outside_the_disk_or_the_rules_get_ioerr_or_unsupp() {
    let rig = Rig::new(8);
    let before = rig.image_bytes();
    let mut d = rig.driver(false);
    let sector = Buf::writable(DATA_BASE, 512);
    let cases: Vec<(u32, u64, Vec<Buf>, u8)> = vec![
        (VIRTIO_BLK_T_IN, 8, vec![sector], IOERR), // one past the end
        (VIRTIO_BLK_T_IN, 7, vec![Buf::writable(DATA_BASE, 1024)], IOERR), // straddles the end
        (VIRTIO_BLK_T_IN, u64::MAX, vec![sector], IOERR), // sector * 512 overflows
        (VIRTIO_BLK_T_IN, u64::MAX / 512, vec![sector], IOERR),
        (VIRTIO_BLK_T_IN, 0, vec![Buf::writable(DATA_BASE, 100)], IOERR), // not whole sectors
        (VIRTIO_BLK_T_OUT, 0, vec![Buf::readable(DATA_BASE, 513)], IOERR),
        (VIRTIO_BLK_T_OUT, 8, vec![Buf::readable(DATA_BASE, 512)], IOERR),
        (VIRTIO_BLK_T_IN, 0, vec![Buf::readable(DATA_BASE, 512)], IOERR), // read with device-readable data
        (VIRTIO_BLK_T_OUT, 0, vec![Buf::writable(DATA_BASE, 512)], IOERR), // write into a writable buffer
        (VIRTIO_BLK_T_SCSI_CMD, 0, vec![], UNSUPP),
        (99, 0, vec![sector], UNSUPP),
        (VIRTIO_BLK_T_ZONE_REPORT, 0, vec![sector], UNSUPP),
    ];
    for (kind, sector, data, want) in cases {
        assert_eq!(d.blk_request(kind, sector, &data), Some((want, 1)), "{kind} @ {sector} {data:?}");
    }
    assert_eq!(rig.image_bytes(), before);
    assert_eq!(stats(&d).ioerr, 9);
    assert_eq!(stats(&d).unsupported, 3);
}

#[test]
fn an_oversize_request_is_refused_before_any_io() {
    let rig = Rig::new(20 << 11); // 20 MiB image, sparse-ish
    let mut d = rig.driver(false);
    // One byte-valid descriptor covering more than MAX_DATA of guest RAM.
    let len = MAX_DATA as u32 + 512;
    assert!(u64::from(len) < RAM_END - DATA_BASE);
    assert_eq!(d.blk_request(VIRTIO_BLK_T_IN, 0, &[Buf::writable(DATA_BASE, len)]), Some((IOERR, 1)));
    assert_eq!(d.blk_request(VIRTIO_BLK_T_OUT, 0, &[Buf::readable(DATA_BASE, len)]), Some((IOERR, 1)));
    // Exactly MAX_DATA is fine.
    assert_eq!(
        d.blk_request(VIRTIO_BLK_T_IN, 0, &[Buf::writable(DATA_BASE, MAX_DATA as u32)]),
        Some((OK, MAX_DATA as u32 + 1))
    );
}

#[test]
fn buffers_outside_guest_ram_fail_the_request_not_the_vmm() {
    let rig = Rig::new(8);
    let before = rig.image_bytes();
    let mut d = rig.driver(false);
    for addr in [RAM_END, RAM_END - 256, u64::MAX - 100, 0xfee0_0000] {
        assert_eq!(d.blk_request(VIRTIO_BLK_T_IN, 0, &[Buf::writable(addr, 512)]), Some((IOERR, 1)), "{addr:#x}");
        assert_eq!(d.blk_request(VIRTIO_BLK_T_OUT, 0, &[Buf::readable(addr, 512)]), Some((IOERR, 1)), "{addr:#x}");
    }
    assert_eq!(rig.image_bytes(), before);

    // A header outside RAM: still an answer.
    let head = d.add_chain(&[Buf::readable(RAM_END + 0x1000, 16), Buf::writable(DATA_BASE, 1)]);
    d.notify();
    assert_eq!(d.pop_used(), Some((u32::from(head), 1)));
    assert_eq!(rig.guest(DATA_BASE, 1), [IOERR]);

    // Nowhere to put the status: returned unanswered.
    let dropped = stats(&d).dropped;
    d.blk_chain(1, VIRTIO_BLK_T_IN, 0, &[]);
    d.add_chain(&[Buf::readable(DATA_BASE, 16), Buf::writable(RAM_END + 7, 1)]);
    d.add_chain(&[Buf::readable(DATA_BASE, 16)]);
    d.add_chain(&[Buf::readable(DATA_BASE, 16), Buf::writable(DATA_BASE + 64, 0)]);
    d.notify();
    assert_eq!(d.pop_used().map(|(_, len)| len), Some(1), "the honest one (no data) was fine");
    for _ in 0..3 {
        assert_eq!(d.pop_used().map(|(_, len)| len), Some(0));
    }
    assert_eq!(stats(&d).dropped, dropped + 3);
}

#[test]
fn loops_long_chains_and_bad_orders_end_in_an_answer() {
    let rig = Rig::new(8);
    let mut d = rig.driver(false);
    let hdr = DATA_BASE;
    let mut raw = [0u8; 16];
    raw[..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
    rig.mem.write(hdr, &raw).unwrap();

    // 0 → 1 → 0 → …, all readable: cut at the queue size, no status: dropped.
    d.write_desc(0, hdr, 16, NEXT, 1);
    d.write_desc(1, hdr, 16, NEXT, 0);
    d.publish(0);
    // 2 → 3 → 2 …: header, then a writable byte, then the header again.
    d.write_desc(2, hdr, 16, NEXT, 3);
    d.write_desc(3, DATA_BASE + 0x100, 1, NEXT | WRITE, 2);
    d.publish(2);
    d.notify();
    assert_eq!(d.pop_used(), Some((0, 0)));
    assert_eq!(d.pop_used(), Some((2, 1)));
    assert_eq!(rig.guest(DATA_BASE + 0x100, 1), [IOERR], "readable after writable");
}

#[test]
fn too_many_descriptors_is_ioerr() {
    let rig = Rig::new(256);
    let mut d = rig.driver(false);
    let data = |n: u64| -> Vec<Buf> { (0..n).map(|i| Buf::writable(DATA_BASE + i * 512, 512)).collect() };
    let most = MAX_DESCS as u64 - 2;
    assert_eq!(d.blk_request(VIRTIO_BLK_T_IN, 0, &data(most)), Some((OK, most as u32 * 512 + 1)));
    assert_eq!(d.blk_request(VIRTIO_BLK_T_IN, 0, &data(most + 1)), Some((IOERR, 1)));
}

#[test]
fn lengths_that_overflow_and_rings_that_lie_are_survived() {
    let rig = Rig::new(8);
    let before = rig.image_bytes();
    let mut d = rig.driver(false);
    // Two descriptors of 4 GiB - 1: the chain's length overflows u32.
    d.blk_chain(0, VIRTIO_BLK_T_OUT, 0, &[Buf::readable(DATA_BASE, u32::MAX), Buf::readable(DATA_BASE, u32::MAX)]);
    d.notify();
    let (_, len) = d.pop_used().expect("answered");
    assert!(len <= 1);

    // A head index past the table can't even be returned; the next chain
    // is still served.
    let before_stats = stats(&d);
    d.publish(QUEUE_SIZE + 3);
    d.blk_chain(1, VIRTIO_BLK_T_FLUSH, 0, &[]);
    d.notify();
    assert_eq!(d.pop_used().map(|(_, len)| len), Some(1));
    assert_eq!(d.pop_used(), None);
    assert_eq!(stats(&d).dropped, before_stats.dropped + 1);
    assert_eq!(stats(&d).unreturned, before_stats.unreturned + 1);
    // An available index more than a queue ahead.
    d.set_avail_idx(9000);
    d.notify();
    assert_eq!(d.pop_used(), None, "an index more than a queue ahead is refused");
    assert_eq!(rig.image_bytes(), before);
}

#[test]
fn indirect_tables_work_but_nest_nowhere() {
    let rig = Rig::new(8);
    let mut d = rig.driver(true);
    let table = DATA_BASE + 0x8000;
    let hdr = DATA_BASE + 0x9000;
    let mut raw = [0u8; 16];
    raw[..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
    raw[8..].copy_from_slice(&6u64.to_le_bytes());
    rig.mem.write(hdr, &raw).unwrap();
    let put =
        |i: u64, addr: u64, len: u32, flags: u16, next: u16| put_desc(&rig.mem, table + 16 * i, addr, len, flags, next);
    put(0, hdr, 16, NEXT, 1);
    put(1, DATA_BASE, 512, NEXT | WRITE, 2);
    put(2, hdr + 16, 1, WRITE, 0);
    d.write_desc(0, table, 48, VRING_DESC_F_INDIRECT as u16, 0);
    d.publish(0);
    d.notify();
    assert_eq!(d.pop_used(), Some((0, 513)));
    assert_eq!(rig.guest(hdr + 16, 1), [OK]);
    assert_eq!(rig.guest(DATA_BASE, 512), (0..512).map(|i| pattern(6, i)).collect::<Vec<_>>());

    // An indirect table inside an indirect table ends the chain at once.
    put(0, table, 48, VRING_DESC_F_INDIRECT as u16, 0);
    d.write_desc(1, table, 48, VRING_DESC_F_INDIRECT as u16, 0);
    d.publish(1);
    d.notify();
    assert_eq!(d.pop_used(), Some((1, 0)));

    // A 4,096-entry table, all one chain ending in a status byte: the walk
    // stops long before its end, and the chain is returned unanswered.
    let big = DATA_BASE + 0x20_0000;
    let entries = 4096u64;
    let put_big =
        |i: u64, addr: u64, len: u32, flags: u16, next: u16| put_desc(&rig.mem, big + 16 * i, addr, len, flags, next);
    put_big(0, hdr, 16, NEXT, 1);
    for i in 1..entries - 1 {
        put_big(i, DATA_BASE, 512, NEXT | WRITE, i as u16 + 1);
    }
    put_big(entries - 1, hdr + 16, 1, WRITE, 0);
    rig.mem.write(hdr + 16, &[0xff]).unwrap();
    d.write_desc(2, big, 16 * entries as u32, VRING_DESC_F_INDIRECT as u16, 0);
    d.publish(2);
    d.notify();
    assert_eq!(d.pop_used(), Some((2, 0)));
    assert_eq!(rig.guest(hdr + 16, 1), [0xff], "no status written");
}

/// Writes one descriptor at `at` (an indirect table entry).
fn put_desc(mem: &GuestMemory, at: u64, addr: u64, len: u32, flags: u16, next: u16) {
    let mut e = [0u8; 16];
    e[..8].copy_from_slice(&addr.to_le_bytes());
    e[8..12].copy_from_slice(&len.to_le_bytes());
    e[12..14].copy_from_slice(&flags.to_le_bytes());
    e[14..].copy_from_slice(&next.to_le_bytes());
    mem.write(at, &e).unwrap();
}

#[test]
fn a_reset_device_forgets_its_queue() {
    let rig = Rig::new(8);
    let mut d = rig.driver(true);
    d.set_reg(regs::STATUS, 0);
    d.blk_chain(0, VIRTIO_BLK_T_IN, 0, &[Buf::writable(DATA_BASE, 512)]);
    d.notify();
    assert_eq!(d.pop_used(), None);
    assert_eq!(d.transport.stats().ignored_notifies, 1);
    assert_eq!(d.reg(regs::STATUS) & status::DRIVER_OK, 0);
}

/// xorshift64*: deterministic, dependency-free randomness.
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
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Random descriptor tables, headers, lengths, flags and ring indices, from
/// a fixed seed. Whatever the guest writes, the VMM must not panic, must
/// write nothing outside the disk, and must answer or drop every chain.
#[test]
fn random_chains_from_a_seed_never_hurt_the_vmm() {
    let rig = Rig::new(64);
    let size = 16u16;
    let disk = DiskImage::open(rig.image.path(), false).unwrap();
    let mut d = Driver::new(MmioTransport::new(Block::new(disk), &rig.mem).unwrap(), &rig.mem);
    let features = d.device_features();
    d.negotiate(features);
    d.setup_queue(size);
    d.start();

    let mut rng = Rng(0x6d6f_6174_b10c);
    // Headers sit at a few known spots so that many chains are plausible
    // enough to reach the request code; the rest of the chain is noise.
    let header_at = |k: u64| DATA_BASE + 64 * k;
    let addr = |rng: &mut Rng| -> u64 {
        match rng.below(10) {
            0 => RAM_END - rng.below(2048),
            1 => u64::MAX - rng.below(4096),
            2 => rng.next(),
            3..=5 => header_at(rng.below(4)),
            _ => DATA_BASE + 0x1000 * (1 + rng.below(64)),
        }
    };
    let kinds = [
        VIRTIO_BLK_T_IN,
        VIRTIO_BLK_T_OUT,
        VIRTIO_BLK_T_FLUSH,
        VIRTIO_BLK_T_GET_ID,
        VIRTIO_BLK_T_DISCARD,
        VIRTIO_BLK_T_WRITE_ZEROES,
        7,
        u32::MAX,
    ];
    let (mut returned, mut executed) = (0u64, 0u64);
    for round in 0..3000 {
        for k in 0..4 {
            let mut raw = [0u8; 32];
            raw[..4].copy_from_slice(&rng.pick(&kinds).to_le_bytes());
            let sector = if rng.below(4) == 0 { rng.next() } else { rng.below(80) };
            raw[8..16].copy_from_slice(&sector.to_le_bytes());
            raw[16..].copy_from_slice(&range_seg(rng.below(70), rng.below(9) as u32, rng.below(3) as u32)[..]);
            rig.mem.write(header_at(k), &raw).unwrap();
        }
        for i in 0..size {
            // Mostly header → data → status shaped, with noise everywhere.
            let (flags, len) = match (i % 3, rng.below(4)) {
                (_, 0) => {
                    let any = rng.next() as u32;
                    let flags = rng.pick(&[0, NEXT, WRITE, NEXT | WRITE, VRING_DESC_F_INDIRECT as u16, 0xffff]);
                    (flags, rng.pick(&[0, 1, 17, 513, 1 << 20, u32::MAX, any]))
                }
                (0, _) => (NEXT, rng.pick(&[16, 32, 48])),
                (1, _) => (NEXT | rng.pick(&[0, WRITE]), rng.pick(&[0, 16, 512, 1024, 4096, 20])),
                _ => (WRITE, 1),
            };
            let next = if rng.below(8) == 0 { rng.next() as u16 } else { (i + 1) % size };
            d.write_desc(i, addr(&mut rng), len, flags, next);
        }
        for _ in 0..=rng.below(3) {
            let head = if rng.below(8) == 0 { rng.below(u64::from(size) + 2) } else { 3 * rng.below(5) };
            d.publish(head as u16);
            executed += 1;
        }
        if round % 97 == 0 {
            d.set_avail_idx(rng.next() as u16);
        }
        d.notify();
        while d.pop_used().is_some() {
            returned += 1;
        }
    }
    let s = stats(&d);
    eprintln!("random chains: {executed} published, {returned} returned, {s:?}, {:?}", d.transport.stats());
    // Every chain the device took was answered or dropped, and returned
    // unless its head index was past the queue.
    assert_eq!(s.ok + s.ioerr + s.unsupported + s.dropped, returned + s.unreturned);
    assert!(returned > executed / 2, "most published chains come back");
    assert!(s.ok > 100 && s.ioerr > 100 && s.unsupported > 10 && s.dropped > 100, "the storm reaches every outcome");
    assert_eq!(rig.image_bytes().len(), 64 * 512, "nothing written past the disk");
}
