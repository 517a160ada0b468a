//! The tar stream of a template export, both ways: GNU format, regular files
//! and GNU sparse files (type `S`, the "old GNU" sparse map) only, so GNU
//! `tar` lists and extracts what Moat writes, and Moat reads what `tar
//! --sparse` writes.
//!
//! The reader is for hostile input: it never allocates from a size in a
//! header beyond fixed bounds, checks every header's checksum, and refuses
//! anything but a regular or sparse file with a plain relative name before
//! its caller sees it — links, devices, folders, FIFOs, long-name and pax
//! headers, absolute names and `..` included. It creates no file itself.

use std::io::{self, Read, Write};

const BLOCK: usize = 512;
/// Sparse map entries in the main header, and in each extension block.
const MAIN_ENTRIES: usize = 4;
const EXT_ENTRIES: usize = 21;
/// Most sparse map entries one member may have (each is 24 bytes of archive).
pub(crate) const MAX_MAP_ENTRIES: usize = 1 << 20;

/// A member the archive may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// Its relative name.
    pub name: String,
    /// The file's size once extracted.
    pub size: u64,
    /// The regions that hold data, in order, as (offset, length); the rest is
    /// holes. A regular file is one region over the whole file.
    pub map: Vec<(u64, u64)>,
}

impl Member {
    /// Bytes the archive stores for it.
    pub fn stored(&self) -> u64 {
        self.map.iter().map(|(_, len)| len).sum()
    }
}

/// Why an export file was refused: its tar stream, or what it holds.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// `zstd` could not decompress it.
    #[error("it is not zstd-compressed data Moat can read: {0}")]
    Compression(String),
    /// The manifest is missing or not the first member.
    #[error("its first member is {0:?}, not manifest.json")]
    NoManifest(String),
    /// The manifest is not valid.
    #[error(transparent)]
    Manifest(#[from] super::manifest::ManifestError),
    /// A member the manifest does not call for, or out of order.
    #[error("member {name:?} is not expected here (expected {expected})")]
    Unexpected { name: String, expected: String },
    /// A member larger than the manifest says or than any template may be.
    #[error("member {name:?} is {size} bytes; it may be {max}")]
    Size { name: String, size: u64, max: u64 },
    /// A member with an absolute name.
    #[error("member {0:?} has an absolute path")]
    Absolute(String),
    /// A member whose name climbs out with `..`.
    #[error("member {0:?} has a `..` in its path")]
    DotDot(String),
    /// A symbolic or hard link.
    #[error("member {name:?} is a {kind} to {target:?}; a template holds regular files only")]
    Link { name: String, kind: &'static str, target: String },
    /// Anything else that isn't a regular file.
    #[error("member {name:?} is a {kind}; a template holds regular files only")]
    NotAFile { name: String, kind: String },
    /// A name that is not UTF-8, empty, or has control characters.
    #[error("member name {0:?} is not a plain file name")]
    BadName(String),
    /// A header that is not tar, or fields out of range.
    #[error("not a valid tar header at byte {offset}: {why}")]
    BadHeader { offset: u64, why: &'static str },
    /// The stream ended inside a member or before the end marker.
    #[error("the archive is truncated")]
    Truncated,
    /// Reading the stream failed.
    #[error("reading the archive")]
    Read(#[source] io::Error),
    /// A member's data could not be handed on.
    #[error("writing {name}")]
    Sink {
        name: String,
        #[source]
        source: io::Error,
    },
}

/// Writes a GNU tar stream.
pub(crate) struct TarWriter<W: Write> {
    out: W,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter { out }
    }

    /// A regular file from memory.
    pub fn regular(&mut self, name: &str, data: &[u8], mtime: i64) -> io::Result<()> {
        let member = Member { name: name.into(), size: data.len() as u64, map: vec![(0, data.len() as u64)] };
        self.header(&member, b'0', mtime)?;
        self.out.write_all(data)?;
        self.pad(data.len() as u64)
    }

    /// A sparse file of `size` bytes whose data regions are `map`, read through
    /// `read_at(offset, buffer)`.
    pub fn sparse(
        &mut self,
        name: &str,
        size: u64,
        map: &[(u64, u64)],
        mtime: i64,
        read_at: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        // GNU tar ends every map with an empty region at the end of the file.
        let mut entries = map.to_vec();
        entries.push((size, 0));
        let member = Member { name: name.into(), size, map: entries };
        self.header(&member, b'S', mtime)?;
        let mut buf = vec![0u8; 1 << 20];
        for &(offset, len) in map {
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(buf.len() as u64) as usize;
                read_at(offset + done, &mut buf[..n])?;
                self.out.write_all(&buf[..n])?;
                done += n as u64;
            }
        }
        self.pad(member.stored())
    }

    /// The end-of-archive marker; returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn header(&mut self, m: &Member, kind: u8, mtime: i64) -> io::Result<()> {
        let mut h = [0u8; BLOCK];
        let name = m.name.as_bytes();
        assert!(name.len() < 100, "member names Moat writes are short");
        h[..name.len()].copy_from_slice(name);
        put_number(&mut h[100..108], 0o444);
        put_number(&mut h[108..116], 0);
        put_number(&mut h[116..124], 0);
        put_number(&mut h[124..136], m.stored());
        put_number(&mut h[136..148], u64::try_from(mtime).unwrap_or(0));
        h[156] = kind;
        h[257..265].copy_from_slice(b"ustar  \0");
        let mut extension = Vec::new();
        if kind == b'S' {
            let (main, rest) = m.map.split_at(m.map.len().min(MAIN_ENTRIES));
            for (i, &(offset, len)) in main.iter().enumerate() {
                put_number(&mut h[386 + i * 24..398 + i * 24], offset);
                put_number(&mut h[398 + i * 24..410 + i * 24], len);
            }
            h[482] = u8::from(!rest.is_empty());
            put_number(&mut h[483..495], m.size);
            let chunks: Vec<_> = rest.chunks(EXT_ENTRIES).collect();
            for (c, chunk) in chunks.iter().enumerate() {
                let mut e = [0u8; BLOCK];
                for (i, &(offset, len)) in chunk.iter().enumerate() {
                    put_number(&mut e[i * 24..i * 24 + 12], offset);
                    put_number(&mut e[i * 24 + 12..i * 24 + 24], len);
                }
                e[504] = u8::from(c + 1 < chunks.len());
                extension.push(e);
            }
        }
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.out.write_all(&h)?;
        for e in extension {
            self.out.write_all(&e)?;
        }
        Ok(())
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rest = (BLOCK - (len % BLOCK as u64) as usize) % BLOCK;
        self.out.write_all(&[0u8; BLOCK][..rest])
    }
}

/// A number field: octal when it fits, else GNU's base-256.
fn put_number(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    if value < 1u64.checked_shl(3 * digits as u32).unwrap_or(u64::MAX) {
        let text = format!("{value:0digits$o}");
        field[..digits].copy_from_slice(text.as_bytes());
        field[digits] = 0;
    } else {
        field.fill(0);
        field[0] = 0x80;
        let bytes = value.to_be_bytes();
        let n = field.len();
        field[n - 8..].copy_from_slice(&bytes);
    }
}

/// Reads a tar stream, member by member.
pub(crate) struct TarReader<R: Read> {
    input: R,
    offset: u64,
    /// Data of the current member not yet read, then its padding.
    pending: u64,
}

impl<R: Read> TarReader<R> {
    pub fn new(input: R) -> Self {
        TarReader { input, offset: 0, pending: 0 }
    }

    /// The next member's header, or `None` at the end marker. Refuses every
    /// member that is not a regular or sparse file with a plain relative name.
    /// The previous member's data must have been read or skipped.
    pub fn next_member(&mut self) -> Result<Option<Member>, ArchiveError> {
        debug_assert_eq!(self.pending, 0, "read or skip the data first");
        let header_at = self.offset;
        let h = self.block()?;
        if h.iter().all(|&b| b == 0) {
            // Two zero blocks end the archive; accept one (some writers stop there).
            return Ok(None);
        }
        let bad = |why| ArchiveError::BadHeader { offset: header_at, why };
        if &h[257..262] != b"ustar" {
            return Err(bad("no ustar magic"));
        }
        let stored_sum = number(&h[148..156]).ok_or(bad("bad checksum field"))?;
        let mut copy = h;
        copy[148..156].copy_from_slice(b"        ");
        let sum: u64 = copy.iter().map(|&b| u64::from(b)).sum();
        if sum != stored_sum {
            return Err(bad("checksum mismatch"));
        }
        let kind = h[156];
        if matches!(kind, b'L' | b'K' | b'x' | b'g') {
            // Headers about the next member: their own names mean nothing.
            return Err(ArchiveError::NotAFile { name: lossy(&h[..100]), kind: kind_name(kind) });
        }
        let name = text(&h[..100]).ok_or_else(|| ArchiveError::BadName(lossy(&h[..100])))?;
        let name = match text(&h[345..500]) {
            // POSIX ustar: a prefix folder (in GNU format these bytes are times and the sparse map).
            Some(prefix) if &h[257..263] == b"ustar\0" && !prefix.is_empty() => format!("{prefix}/{name}"),
            _ => name,
        };
        check_name(&name)?;
        let size = number(&h[124..136]).ok_or(bad("bad size field"))?;
        let member = match kind {
            b'0' | 0 | b'7' => Member { name, size, map: vec![(0, size)] },
            b'S' => self.sparse_member(name, size, &h, header_at)?,
            b'1' | b'2' => {
                let kind = if kind == b'1' { "hard link" } else { "symbolic link" };
                return Err(ArchiveError::Link { name, kind, target: lossy(&h[157..257]) });
            }
            other => return Err(ArchiveError::NotAFile { name, kind: kind_name(other) }),
        };
        self.pending = member.stored().div_ceil(BLOCK as u64) * BLOCK as u64;
        Ok(Some(member))
    }

    /// Hands `member`'s data to `sink(offset in the file, bytes)`, in order.
    pub fn read_data(
        &mut self,
        member: &Member,
        sink: &mut dyn FnMut(u64, &[u8]) -> io::Result<()>,
    ) -> Result<(), ArchiveError> {
        let mut buf = vec![0u8; 1 << 20];
        for &(offset, len) in &member.map {
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(buf.len() as u64) as usize;
                self.read_exact(&mut buf[..n])?;
                sink(offset + done, &buf[..n])
                    .map_err(|source| ArchiveError::Sink { name: member.name.clone(), source })?;
                done += n as u64;
            }
        }
        self.pending -= member.stored();
        self.skip_pending()
    }

    /// Skips the current member's data.
    pub fn skip_data(&mut self) -> Result<(), ArchiveError> {
        self.skip_pending()
    }

    fn skip_pending(&mut self) -> Result<(), ArchiveError> {
        let mut buf = [0u8; 64 * 1024];
        while self.pending > 0 {
            let n = self.pending.min(buf.len() as u64) as usize;
            self.read_exact(&mut buf[..n])?;
            self.pending -= n as u64;
        }
        Ok(())
    }

    fn sparse_member(
        &mut self,
        name: String,
        stored: u64,
        h: &[u8; BLOCK],
        header_at: u64,
    ) -> Result<Member, ArchiveError> {
        let bad = |why| ArchiveError::BadHeader { offset: header_at, why };
        let size = number(&h[483..495]).ok_or(bad("bad sparse size field"))?;
        let mut map = Vec::new();
        let mut push = |entry: &[u8]| -> Result<bool, ArchiveError> {
            if entry.iter().all(|&b| b == 0) {
                return Ok(false);
            }
            let offset = number(&entry[..12]).ok_or(bad("bad sparse offset"))?;
            let len = number(&entry[12..24]).ok_or(bad("bad sparse length"))?;
            if map.len() >= MAX_MAP_ENTRIES {
                return Err(bad("too many sparse regions"));
            }
            map.push((offset, len));
            Ok(true)
        };
        for i in 0..MAIN_ENTRIES {
            push(&h[386 + i * 24..410 + i * 24])?;
        }
        let mut extended = h[482] != 0;
        while extended {
            let e = self.block()?;
            for i in 0..EXT_ENTRIES {
                push(&e[i * 24..i * 24 + 24])?;
            }
            extended = e[504] != 0;
        }
        // In order, inside the file, not overlapping, and adding up to what is stored.
        let mut end = 0u64;
        let mut total = 0u64;
        for &(offset, len) in &map {
            let stop = offset.checked_add(len).ok_or(bad("sparse region overflows"))?;
            if offset < end || stop > size {
                return Err(bad("sparse regions out of order or past the end"));
            }
            end = stop;
            total += len;
        }
        if total != stored {
            return Err(bad("sparse regions don't add up to the stored size"));
        }
        map.retain(|&(_, len)| len > 0);
        Ok(Member { name, size, map })
    }

    fn block(&mut self) -> Result<[u8; BLOCK], ArchiveError> {
        let mut b = [0u8; BLOCK];
        self.read_exact(&mut b)?;
        Ok(b)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ArchiveError> {
        self.input.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => ArchiveError::Truncated,
            _ => ArchiveError::Read(e),
        })?;
        self.offset += buf.len() as u64;
        Ok(())
    }
}

/// A plain relative name: no leading `/`, no `..`, no empty or `.` parts,
/// printable characters only.
fn check_name(name: &str) -> Result<(), ArchiveError> {
    if name.starts_with('/') {
        return Err(ArchiveError::Absolute(name.into()));
    }
    let parts: Vec<&str> = name.trim_end_matches('/').split('/').collect();
    if parts.contains(&"..") {
        return Err(ArchiveError::DotDot(name.into()));
    }
    if name.is_empty() || parts.iter().any(|p| p.is_empty() || *p == ".") || name.chars().any(char::is_control) {
        return Err(ArchiveError::BadName(name.into()));
    }
    Ok(())
}

/// An octal or base-256 number field.
fn number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // Base-256, positive only (0x80 marker; 0xff would be negative).
        if field[0] != 0x80 {
            return None;
        }
        let tail = &field[1..];
        let (high, low) = tail.split_at(tail.len().saturating_sub(8));
        if high.iter().any(|&b| b != 0) {
            return None;
        }
        return Some(low.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b)));
    }
    let digits: &[u8] = field.split(|&b| b == 0 || b == b' ').find(|s| !s.is_empty()).unwrap_or(&[]);
    if digits.is_empty() {
        return field.iter().all(|&b| b == 0 || b == b' ').then_some(0);
    }
    let start = field.iter().position(|&b| b != b' ').unwrap_or(0);
    if !field[start..].starts_with(digits) {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| match d {
        b'0'..=b'7' => acc.checked_mul(8)?.checked_add(u64::from(d - b'0')),
        _ => None,
    })
}

/// A NUL-terminated UTF-8 field.
fn text(field: &[u8]) -> Option<String> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    std::str::from_utf8(&field[..end]).ok().map(String::from)
}

fn lossy(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn kind_name(kind: u8) -> String {
    match kind {
        b'3' => "character device".into(),
        b'4' => "block device".into(),
        b'5' => "folder".into(),
        b'6' => "FIFO".into(),
        b'L' | b'K' => "GNU long-name header".into(),
        b'x' | b'g' => "pax extended header".into(),
        b'D' => "GNU folder listing".into(),
        b'M' => "multi-volume continuation".into(),
        b'V' => "volume label".into(),
        other => format!("member of type {:?}", char::from(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_in_octal_and_base_256() {
        for value in [0, 1, 0o7777, (1 << 33) - 1, 1 << 33, 10 << 30, 1 << 40] {
            let mut field = [0u8; 12];
            put_number(&mut field, value);
            assert_eq!(number(&field), Some(value), "{value}");
        }
        assert_eq!(number(b"0000644\0"), Some(0o644));
        assert_eq!(number(b" 17 \0"), Some(0o17), "GNU pads with spaces");
        assert_eq!(number(b"0009\0\0\0\0"), None, "not octal");
        assert_eq!(number(&[0xff; 12]), None, "negative base-256");
        assert_eq!(number(&[0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), None, "over 64 bits");
    }

    #[test]
    fn names_must_be_plain_and_relative() {
        assert!(check_name("layer-0.ext4").is_ok());
        assert!(matches!(check_name("/etc/passwd"), Err(ArchiveError::Absolute(_))));
        assert!(matches!(check_name("a/../../x"), Err(ArchiveError::DotDot(_))));
        assert!(matches!(check_name(".."), Err(ArchiveError::DotDot(_))));
        for bad in ["", "a//b", "./a", "a\nb", "a\u{1b}[2J"] {
            assert!(matches!(check_name(bad), Err(ArchiveError::BadName(_))), "{bad:?}");
        }
    }

    #[test]
    fn what_the_writer_writes_the_reader_reads() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = TarWriter::new(Vec::new());
        w.regular("manifest.json", b"{}", 1).unwrap();
        // 30 regions: the map spills into two extension blocks.
        let map: Vec<(u64, u64)> = (0..30u64).map(|i| (i * (3 << 30), 1000 + i)).collect();
        let size = 100 << 30;
        w.sparse("layer-0.ext4", size, &map, 1, &mut |off, buf| {
            buf.iter_mut().enumerate().for_each(|(i, b)| *b = data[(off as usize + i) % data.len()]);
            Ok(())
        })
        .unwrap();
        let bytes = w.finish().unwrap();

        let mut r = TarReader::new(&bytes[..]);
        let m = r.next_member().unwrap().unwrap();
        assert_eq!((m.name.as_str(), m.size, m.map.clone()), ("manifest.json", 2, vec![(0, 2)]));
        let mut got = Vec::new();
        r.read_data(&m, &mut |_, b| {
            got.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, b"{}");
        let m = r.next_member().unwrap().unwrap();
        assert_eq!((m.size, m.map.clone()), (size, map.clone()));
        let mut regions = Vec::new();
        r.read_data(&m, &mut |off, b| {
            assert!(b.iter().enumerate().all(|(i, &x)| x == data[(off as usize + i) % data.len()]));
            regions.push((off, b.len() as u64));
            Ok(())
        })
        .unwrap();
        assert_eq!(regions, map);
        assert!(r.next_member().unwrap().is_none());
    }

    #[test]
    fn a_corrupt_header_is_refused_not_trusted() {
        let mut w = TarWriter::new(Vec::new());
        w.regular("manifest.json", b"{}", 1).unwrap();
        let mut bytes = w.finish().unwrap();
        bytes[124] = b'7'; // the size, without fixing the checksum
        let err = TarReader::new(&bytes[..]).next_member().unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        let err = TarReader::new(&bytes[..100]).next_member().unwrap_err();
        assert!(matches!(err, ArchiveError::Truncated), "{err}");
        let err = TarReader::new(&[1u8; 512][..]).next_member().unwrap_err();
        assert!(err.to_string().contains("no ustar magic"), "{err}");
    }
}
