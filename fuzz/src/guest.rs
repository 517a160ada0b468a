//! The guest the targets play: a small RAM in three regions with a hole,
//! addresses and lengths drawn to hit their edges, and a check that a device
//! wrote only where the guest let it.
//!
//! RAM: region A `[0, 64 KiB)` and region B `[64 KiB, 128 KiB)` are
//! adjacent but separate mappings (a buffer may run from one into the
//! other), then a hole, then region C `[192 KiB, 256 KiB)`.

use crate::input::{Input, Seed};

/// `(guest address, length)` of each RAM region.
pub const REGIONS: [(u64, u64); 3] = [(0, 0x1_0000), (0x1_0000, 0x1_0000), (0x3_0000, 0x1_0000)];
/// One past the highest RAM address.
pub const END: u64 = 0x4_0000;
/// Where RAM starts or stops: chains crossing these are the interesting ones.
const EDGES: [u64; 4] = [0x1_0000, 0x2_0000, 0x3_0000, 0x4_0000];
/// Contiguous RAM (regions A and B merged), as the guest sees it.
const SPANS: [(u64, u64); 2] = [(0, 0x2_0000), (0x3_0000, 0x1_0000)];

/// A guest-physical address: mostly in RAM, often at an edge, sometimes anything.
pub fn addr(i: &mut Input) -> u64 {
    match i.u8() % 4 {
        0 | 1 => u64::from(i.u32()) % END,
        2 => EDGES[usize::from(i.u8()) % EDGES.len()].wrapping_add_signed(i64::from(i.u8() as i8)),
        _ => i.u64(),
    }
}

/// Encodes `a` for [`addr`].
pub fn put_addr(s: &mut Seed, a: u64) {
    if a < END {
        s.u8(0).u32(a as u32);
    } else {
        s.u8(3).u64(a);
    }
}

/// A buffer length: small, page-ish, a boundary value, or anything.
pub fn len(i: &mut Input) -> u32 {
    const SPECIAL: [u32; 10] = [0, 1, 16, 44, 512, 4096, 0x1_0000, 0x1_0001, 0x8000_0000, u32::MAX];
    match i.u8() % 4 {
        0 => u32::from(i.u8()),
        1 => u32::from(i.u16()),
        2 => SPECIAL[usize::from(i.u8()) % SPECIAL.len()],
        _ => i.u32(),
    }
}

/// Encodes `l` for [`len`].
pub fn put_len(s: &mut Seed, l: u32) {
    s.u8(3).u32(l);
}

/// Descriptor flag: the buffer is device-writable.
const WRITE: u8 = 2;
/// Descriptor flag: the buffer is an indirect descriptor table.
const INDIRECT: u8 = 4;

/// A copy of guest RAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot(Vec<Vec<u8>>);

impl Snapshot {
    /// Reads all of RAM through `read(addr, buf)`.
    pub fn take(mut read: impl FnMut(u64, &mut [u8])) -> Self {
        Self(
            SPANS
                .iter()
                .map(|&(start, len)| {
                    let mut buf = vec![0u8; len as usize];
                    read(start, &mut buf);
                    buf
                })
                .collect(),
        )
    }

    /// Whether some descriptor marks bytes of `[start, end)` device-writable.
    pub fn writable_overlaps(&self, (start, end): (u64, u64)) -> bool {
        let mut r = Vec::new();
        self.ranges_flagged(WRITE, &mut r);
        r.iter().any(|&(s, e)| s < end && start < e)
    }

    /// Every guest range a descriptor anywhere in RAM (at any byte offset:
    /// indirect tables need no alignment) names with `flag` set: buffers the
    /// device may write ([`WRITE`]), indirect tables ([`INDIRECT`]).
    fn ranges_flagged(&self, flag: u8, out: &mut Vec<(u64, u64)>) {
        for bytes in &self.0 {
            // RAM is mostly zeros: skip zero words, then look at each byte
            // that could be the low byte of flags with `flag` set.
            for (w, word) in bytes.chunks_exact(8).enumerate() {
                if u64::from_ne_bytes(word.try_into().unwrap_or_default()) == 0 {
                    continue;
                }
                for (k, &b) in word.iter().enumerate() {
                    let Some(at) = (w * 8 + k).checked_sub(12) else { continue };
                    let Some(d) = bytes.get(at..at + 16).filter(|_| b & flag != 0) else { continue };
                    let len = u64::from(u32::from_le_bytes([d[8], d[9], d[10], d[11]]));
                    if len > 0 {
                        let addr = u64::from_le_bytes(d[..8].try_into().unwrap_or_default());
                        out.push((addr, addr.saturating_add(len)));
                    }
                }
            }
        }
    }
}

/// Whether the device's own writes — to `rings` (used rings) or to
/// device-writable buffers — share bytes with `tables` (descriptor tables)
/// or an indirect table. Then a descriptor can change halfway through a
/// notify, and the device may rightly write where no snapshot shows a
/// writable buffer; the guest did it to itself.
pub fn self_modifying(before: &Snapshot, after: &Snapshot, tables: &[(u64, u64)], rings: &[(u64, u64)]) -> bool {
    let mut read = tables.to_vec();
    let mut written = rings.to_vec();
    for s in [before, after] {
        s.ranges_flagged(INDIRECT, &mut read);
        s.ranges_flagged(WRITE, &mut written);
    }
    let (read, written) = (merge(read), merge(written));
    read.iter().any(|&(s, e)| written.iter().any(|&(s2, e2)| s < e2 && s2 < e))
}

/// Checks that every byte that differs between `before` and `after` lies in
/// one of `rings` (`[start, end)`, the used rings the device owns) or in a
/// buffer some descriptor, before or after, marked device-writable. Returns
/// the first stray write.
pub fn check_writes(before: &Snapshot, after: &Snapshot, rings: &[(u64, u64)]) -> Result<(), u64> {
    let mut allowed: Option<Vec<(u64, u64)>> = None;
    for ((&(start, _), b), a) in SPANS.iter().zip(&before.0).zip(&after.0) {
        if a == b {
            continue;
        }
        // Whole chunks compare with memcmp; the fuzzer's comparison hooks
        // would make a byte-by-byte loop over RAM the slowest part of a run.
        let changed = b
            .chunks(64)
            .zip(a.chunks(64))
            .enumerate()
            .filter(|(_, (x, y))| x != y)
            .flat_map(|(c, (x, y))| (0..x.len()).filter(move |&k| x[k] != y[k]).map(move |k| c * 64 + k));
        for off in changed {
            let at = start + off as u64;
            if rings.iter().any(|&(s, e)| (s..e).contains(&at)) {
                continue;
            }
            let ranges = allowed.get_or_insert_with(|| {
                let mut r = Vec::new();
                before.ranges_flagged(WRITE, &mut r);
                after.ranges_flagged(WRITE, &mut r);
                merge(r)
            });
            let i = ranges.partition_point(|&(s, _)| s <= at);
            if i == 0 || ranges[i - 1].1 <= at {
                return Err(at);
            }
        }
    }
    Ok(())
}

/// Checks the used entries a device added to the ring at `used` of `size`
/// entries, from index `from` to index `to`: each names a descriptor inside
/// the queue and a length of at most `max_len`. `read(addr, buf)` reads RAM.
pub fn check_used(
    mut read: impl FnMut(u64, &mut [u8]) -> bool,
    used: u64,
    size: u16,
    (from, to): (u16, u16),
    max_len: u32,
) -> Result<(), String> {
    if to.wrapping_sub(from) > size {
        return Err(format!("{} used entries in one go on a {size}-entry queue", to.wrapping_sub(from)));
    }
    let mut idx = from;
    while idx != to {
        let mut e = [0u8; 8];
        let Some(at) = used.checked_add(4 + 8 * u64::from(idx % size)) else { return Ok(()) };
        if read(at, &mut e) {
            let id = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            let len = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            if id >= u32::from(size) || len > max_len {
                return Err(format!("used entry (id {id}, len {len}) on a {size}-entry queue"));
            }
        }
        idx = idx.wrapping_add(1);
    }
    Ok(())
}

/// Sorted, non-overlapping cover of `r`.
fn merge(mut r: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    r.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
    for (s, e) in r {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram() -> Vec<u8> {
        vec![0u8; END as usize]
    }

    fn snap(ram: &[u8]) -> Snapshot {
        Snapshot::take(|a, buf| buf.copy_from_slice(&ram[a as usize..a as usize + buf.len()]))
    }

    #[test]
    fn writes_must_land_in_writable_buffers_or_rings() {
        let mut r = ram();
        // A writable descriptor at an odd offset: [0x5000, 0x5010).
        r[0x101..0x109].copy_from_slice(&0x5000u64.to_le_bytes());
        r[0x109..0x10d].copy_from_slice(&16u32.to_le_bytes());
        r[0x10d] = 2;
        let before = snap(&r);
        r[0x500f] = 1;
        r[0x900] = 1;
        assert_eq!(check_writes(&before, &snap(&r), &[(0x900, 0x908)]), Ok(()));
        r[0x5010] = 1;
        assert_eq!(check_writes(&before, &snap(&r), &[(0x900, 0x908)]), Err(0x5010));
    }
}
