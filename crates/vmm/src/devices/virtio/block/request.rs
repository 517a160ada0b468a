//! One virtio-blk request: reading it out of a descriptor chain and carrying
//! it out against the image.
//!
//! Layout (virtio 1.2, 5.2.6, with `VIRTIO_F_ANY_LAYOUT` semantics since
//! we're a 1.x device): the device-readable bytes are a 16-byte header
//! (type, reserved, sector) followed by the data of a write or the segments
//! of a discard; the device-writable bytes are the data of a read, then one
//! status byte, the very last writable byte. Descriptor boundaries mean
//! nothing, so every access goes through a byte-stream view of the chain.
//!
//! Everything here is guest input. Bounds, all checked before any I/O:
//! at most [`MAX_DESCS`] descriptors, each inside guest RAM; readable before
//! writable; at most [`MAX_DATA`] bytes of data; whole sectors inside the
//! disk. Data moves through a fixed bounce buffer, so no request, however
//! large it claims to be, allocates host memory.

use std::io;

use virtio_bindings::virtio_blk::*;
use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

use super::disk::{DiskImage, ID_BYTES, SECTOR};

/// Most data segments in one request (offered as `seg_max`).
pub const SEG_MAX: u32 = 126;
/// Most bytes in one data segment (offered as `size_max`).
pub const SIZE_MAX: u32 = 64 << 10;
/// Most data bytes in one request: what a driver keeping to `seg_max` and
/// `size_max` can send.
pub const MAX_DATA: u64 = SEG_MAX as u64 * SIZE_MAX as u64;
/// Most descriptors in one request: data segments, header and status.
pub const MAX_DESCS: usize = SEG_MAX as usize + 2;
/// Most descriptors looked at in one chain. A direct chain ends at the
/// queue size anyway; an indirect table could hold 65,535.
pub const MAX_WALK: usize = 4 * MAX_DESCS;
/// Most segments in one discard or write-zeroes request.
pub const MAX_RANGE_SEGS: u32 = 8;
/// Most sectors one discard segment may cover (1 GiB).
pub const MAX_DISCARD_SECTORS: u32 = 1 << 21;
/// Most sectors one write-zeroes segment may cover (32 MiB: without
/// `FALLOC_FL_ZERO_RANGE` they are written out, on the vCPU thread).
pub const MAX_WRITE_ZEROES_SECTORS: u32 = 1 << 16;

const HEADER_LEN: u64 = 16;
const RANGE_SEG_LEN: u64 = 16;

/// A contiguous piece of guest RAM a descriptor names.
#[derive(Debug, Clone, Copy)]
pub struct Seg {
    addr: u64,
    len: u32,
}

/// Why a chain is not a well-formed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    TooManyDescriptors,
    OutsideGuestMemory,
    ReadableAfterWritable,
}

/// A chain's shape: its readable and writable segments and where the status
/// byte goes. Segments past [`MAX_DESCS`] are not kept.
#[derive(Debug, Default)]
pub struct Layout {
    readable: Vec<Seg>,
    writable: Vec<Seg>,
    read_len: u64,
    write_len: u64,
    status: Option<GuestAddress>,
    malformed: Option<Malformed>,
}

impl Layout {
    /// Room for the largest well-formed chain, allocated once.
    pub fn with_capacity() -> Self {
        Self { readable: Vec::with_capacity(MAX_DESCS), writable: Vec::with_capacity(MAX_DESCS), ..Self::default() }
    }

    /// Walks `chain` and records its shape. Bounded: virtio-queue ends loops
    /// at the queue size (or indirect table size) and chains past 4 GiB; we
    /// stop after [`MAX_WALK`] descriptors.
    pub fn read_chain(&mut self, chain: DescriptorChain<&GuestMemoryMmap>, mem: &GuestMemoryMmap) {
        self.readable.clear();
        self.writable.clear();
        (self.read_len, self.write_len, self.status, self.malformed) = (0, 0, None, None);
        let mut last_writable = None;
        let mut walked = 0;
        for desc in chain {
            walked += 1;
            if walked > MAX_WALK {
                // Too long to even find the status byte: unanswerable.
                self.malformed = Some(Malformed::TooManyDescriptors);
                self.status = None;
                return;
            }
            let seg = Seg { addr: desc.addr().0, len: desc.len() };
            let in_ram = seg.len == 0 || mem.check_range(desc.addr(), seg.len as usize, Permissions::ReadWrite);
            if !in_ram {
                self.malformed.get_or_insert(Malformed::OutsideGuestMemory);
            }
            let kept = self.readable.len() + self.writable.len() < MAX_DESCS;
            if !kept {
                self.malformed.get_or_insert(Malformed::TooManyDescriptors);
            }
            if desc.is_write_only() {
                self.write_len += u64::from(seg.len);
                if kept {
                    self.writable.push(seg);
                }
                if seg.len > 0 {
                    last_writable = Some((seg, in_ram));
                }
            } else {
                if self.write_len > 0 || !self.writable.is_empty() {
                    self.malformed.get_or_insert(Malformed::ReadableAfterWritable);
                }
                self.read_len += u64::from(seg.len);
                if kept {
                    self.readable.push(seg);
                }
            }
        }
        self.status = match last_writable {
            Some((seg, true)) => Some(GuestAddress(seg.addr + u64::from(seg.len) - 1)),
            _ => None,
        };
    }

    /// Where the status byte goes; `None` if the chain has nowhere for it.
    pub fn status(&self) -> Option<GuestAddress> {
        self.status
    }
}

/// What the request came to: the status byte and the bytes the device
/// wrote into the chain (data plus the status byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub status: u8,
    pub written: u32,
}

impl Outcome {
    fn ok(data: u64) -> Self {
        // data ≤ MAX_DATA or ID_BYTES, far below u32::MAX.
        Self { status: VIRTIO_BLK_S_OK as u8, written: data as u32 + 1 }
    }
    fn ioerr() -> Self {
        Self { status: VIRTIO_BLK_S_IOERR as u8, written: 1 }
    }
    fn unsupported() -> Self {
        Self { status: VIRTIO_BLK_S_UNSUPP as u8, written: 1 }
    }
}

/// Carries out the request `layout` describes. The caller writes the status.
pub fn execute(layout: &Layout, disk: &DiskImage, mem: &GuestMemoryMmap, bounce: &mut [u8]) -> Outcome {
    if layout.malformed.is_some() || layout.read_len < HEADER_LEN {
        return Outcome::ioerr();
    }
    let mut header = [0u8; HEADER_LEN as usize];
    if gather(mem, &layout.readable, 0, &mut header).is_err() {
        return Outcome::ioerr();
    }
    let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
    // The writable bytes before the status byte, and the readable ones after the header.
    let in_len = layout.write_len.saturating_sub(1);
    let out_len = layout.read_len - HEADER_LEN;
    let result = match kind {
        VIRTIO_BLK_T_IN if out_len == 0 => {
            read(disk, mem, layout, sector, in_len, bounce).map(|()| Outcome::ok(in_len))
        }
        VIRTIO_BLK_T_OUT if in_len == 0 => write(disk, mem, layout, sector, out_len, bounce).map(|()| Outcome::ok(0)),
        VIRTIO_BLK_T_FLUSH if disk.read_only() => Ok(Outcome::ok(0)),
        VIRTIO_BLK_T_FLUSH => disk.flush().map(|()| Outcome::ok(0)).map_err(Refused::from),
        VIRTIO_BLK_T_GET_ID => get_id(disk, mem, layout, in_len),
        VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => ranges(disk, mem, layout, kind, out_len, bounce),
        VIRTIO_BLK_T_IN | VIRTIO_BLK_T_OUT => Err(Refused),
        _ => return Outcome::unsupported(),
    };
    result.unwrap_or_else(|Refused| Outcome::ioerr())
}

/// The request can't be honoured: IOERR.
#[derive(Debug)]
struct Refused;

impl From<io::Error> for Refused {
    fn from(_: io::Error) -> Self {
        Refused
    }
}

/// Checks a data transfer of `len` bytes at `sector`.
fn data_range(disk: &DiskImage, sector: u64, len: u64) -> Result<u64, Refused> {
    let whole = len % SECTOR == 0 && len <= MAX_DATA;
    if !whole || !disk.contains(sector, len / SECTOR) {
        return Err(Refused);
    }
    Ok(sector * SECTOR)
}

fn read(
    disk: &DiskImage,
    mem: &GuestMemoryMmap,
    layout: &Layout,
    sector: u64,
    len: u64,
    bounce: &mut [u8],
) -> Result<(), Refused> {
    let mut offset = data_range(disk, sector, len)?;
    for_each_range(&layout.writable, 0, len, |addr, n| {
        for (at, chunk) in chunks(addr, n, bounce.len()) {
            disk.read_at(&mut bounce[..chunk], offset)?;
            mem.write_slice(&bounce[..chunk], at).map_err(|_| Refused)?;
            offset += chunk as u64;
        }
        Ok(())
    })
}

fn write(
    disk: &DiskImage,
    mem: &GuestMemoryMmap,
    layout: &Layout,
    sector: u64,
    len: u64,
    bounce: &mut [u8],
) -> Result<(), Refused> {
    if disk.read_only() {
        return Err(Refused);
    }
    let mut offset = data_range(disk, sector, len)?;
    for_each_range(&layout.readable, HEADER_LEN, len, |addr, n| {
        for (at, chunk) in chunks(addr, n, bounce.len()) {
            mem.read_slice(&mut bounce[..chunk], at).map_err(|_| Refused)?;
            disk.write_at(&bounce[..chunk], offset)?;
            offset += chunk as u64;
        }
        Ok(())
    })
}

fn get_id(disk: &DiskImage, mem: &GuestMemoryMmap, layout: &Layout, room: u64) -> Result<Outcome, Refused> {
    let n = room.min(ID_BYTES as u64);
    scatter(mem, &layout.writable, 0, &disk.id()[..n as usize])?;
    Ok(Outcome::ok(n))
}

/// DISCARD and WRITE_ZEROES: a list of (sector, count, flags) segments.
fn ranges(
    disk: &DiskImage,
    mem: &GuestMemoryMmap,
    layout: &Layout,
    kind: u32,
    len: u64,
    bounce: &mut [u8],
) -> Result<Outcome, Refused> {
    let count = len / RANGE_SEG_LEN;
    if disk.read_only() || len % RANGE_SEG_LEN != 0 || count == 0 || count > u64::from(MAX_RANGE_SEGS) {
        return Err(Refused);
    }
    let (max_sectors, allowed_flags) = match kind {
        VIRTIO_BLK_T_DISCARD => (MAX_DISCARD_SECTORS, 0),
        _ => (MAX_WRITE_ZEROES_SECTORS, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP),
    };
    let mut segs = [(0u64, 0u32, 0u32); MAX_RANGE_SEGS as usize];
    for (i, seg) in segs.iter_mut().take(count as usize).enumerate() {
        let mut raw = [0u8; RANGE_SEG_LEN as usize];
        gather(mem, &layout.readable, HEADER_LEN + i as u64 * RANGE_SEG_LEN, &mut raw)?;
        let le32 = |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
        *seg = (u64::from_le_bytes(raw[..8].try_into().unwrap_or_default()), le32(8), le32(12));
    }
    let segs = &segs[..count as usize];
    // Check every segment before touching the disk.
    for &(sector, sectors, flags) in segs {
        if flags & !allowed_flags != 0 {
            return Ok(Outcome::unsupported());
        }
        if sectors > max_sectors || !disk.contains(sector, u64::from(sectors)) {
            return Err(Refused);
        }
    }
    for &(sector, sectors, flags) in segs {
        let (offset, len) = (sector * SECTOR, u64::from(sectors) * SECTOR);
        match kind {
            VIRTIO_BLK_T_DISCARD => disk.discard(offset, len)?,
            _ => disk.write_zeroes(offset, len, flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0, bounce)?,
        }
    }
    Ok(Outcome::ok(0))
}

/// Calls `f(addr, len)` for the guest ranges holding bytes `[start, start +
/// len)` of the stream `segs` forms. The caller has checked the stream is
/// long enough and every segment is in guest RAM.
fn for_each_range(
    segs: &[Seg],
    start: u64,
    len: u64,
    mut f: impl FnMut(GuestAddress, usize) -> Result<(), Refused>,
) -> Result<(), Refused> {
    let (mut skip, mut left) = (start, len);
    for seg in segs {
        if left == 0 {
            break;
        }
        let seg_len = u64::from(seg.len);
        if skip >= seg_len {
            skip -= seg_len;
            continue;
        }
        let n = (seg_len - skip).min(left);
        f(GuestAddress(seg.addr + skip), n as usize)?;
        left -= n;
        skip = 0;
    }
    if left == 0 {
        Ok(())
    } else {
        Err(Refused)
    }
}

/// Splits `[addr, addr + len)` into pieces of at most `max` bytes.
fn chunks(addr: GuestAddress, len: usize, max: usize) -> impl Iterator<Item = (GuestAddress, usize)> {
    (0..len).step_by(max.max(1)).map(move |done| (GuestAddress(addr.0 + done as u64), (len - done).min(max)))
}

fn gather(mem: &GuestMemoryMmap, segs: &[Seg], start: u64, out: &mut [u8]) -> Result<(), Refused> {
    let mut at = 0;
    for_each_range(segs, start, out.len() as u64, |addr, n| {
        mem.read_slice(&mut out[at..at + n], addr).map_err(|_| Refused)?;
        at += n;
        Ok(())
    })
}

fn scatter(mem: &GuestMemoryMmap, segs: &[Seg], start: u64, data: &[u8]) -> Result<(), Refused> {
    let mut at = 0;
    for_each_range(segs, start, data.len() as u64, |addr, n| {
        mem.write_slice(&data[at..at + n], addr).map_err(|_| Refused)?;
        at += n;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(lens: &[u32]) -> Vec<Seg> {
        let mut addr = 0x1000;
        lens.iter()
            .map(|&len| {
                let s = Seg { addr, len };
                addr += 0x1000;
                s
            })
            .collect()
    }

    fn ranges_of(segs: &[Seg], start: u64, len: u64) -> Result<Vec<(u64, usize)>, Refused> {
        let mut out = Vec::new();
        for_each_range(segs, start, len, |a, n| {
            out.push((a.0, n));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn the_byte_stream_ignores_descriptor_boundaries() {
        let s = segs(&[10, 0, 6, 512]);
        assert_eq!(ranges_of(&s, 0, 16).unwrap(), vec![(0x1000, 10), (0x3000, 6)]);
        assert_eq!(ranges_of(&s, 12, 100).unwrap(), vec![(0x3002, 4), (0x4000, 96)]);
        assert_eq!(ranges_of(&s, 16, 512).unwrap(), vec![(0x4000, 512)]);
        assert!(ranges_of(&s, 16, 513).is_err(), "past the end");
    }

    #[test]
    fn chunks_cover_a_range_exactly() {
        let c: Vec<_> = chunks(GuestAddress(100), 10, 4).map(|(a, n)| (a.0, n)).collect();
        assert_eq!(c, vec![(100, 4), (104, 4), (108, 2)]);
        assert_eq!(chunks(GuestAddress(0), 0, 4).count(), 0);
    }
}
