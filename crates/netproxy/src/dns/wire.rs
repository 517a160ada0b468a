//! The DNS wire format (RFC 1035), as much as a stub resolver's queries and
//! our answers need: parsing one query, encoding one reply.
//!
//! Everything here reads guest bytes, so every read is bounds-checked and
//! every loop is bounded: names are at most 255 bytes on the wire, labels at
//! most 63, and a compression pointer must point strictly before the label
//! sequence that contains it, so following pointers always terminates.
//! Nothing panics on any input.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The largest message accepted over the stream transport. A stub
/// resolver's query is one question (at most 4 + 255 bytes) plus an EDNS OPT
/// record, even with RFC 8467 padding well under 1 KiB; 4096 leaves room for
/// cookies and other options while keeping each stream's buffer small.
pub const MAX_MESSAGE: usize = 4096;

/// The longest name on the wire, length octets and the root included.
const MAX_NAME_WIRE: usize = 255;
const MAX_LABEL: usize = 63;
const HEADER_LEN: usize = 12;

/// Record types this module treats specially.
pub(super) mod rtype {
    pub const A: u16 = 1;
    pub const PTR: u16 = 12;
    pub const AAAA: u16 = 28;
    pub const OPT: u16 = 41;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
}

/// The Internet class.
pub(super) const CLASS_IN: u16 = 1;

/// Response codes; values above 15 travel partly in the OPT record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rcode {
    NoError = 0,
    FormErr = 1,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
    BadVers = 16,
}

/// A domain name in uncompressed wire form, case preserved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Name {
    wire: Vec<u8>,
}

impl Name {
    /// The labels, root excluded.
    pub(super) fn labels(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = &self.wire[..];
        std::iter::from_fn(move || {
            let (&len, tail) = rest.split_first()?;
            let label = tail.get(..usize::from(len)).filter(|_| len > 0)?;
            rest = &tail[label.len()..];
            Some(label)
        })
    }

    /// The name as a lowercase host name without trailing dot, if every
    /// label holds only letters, digits, `-` and `_` (so no label can hide a
    /// dot); `None` for the root and for anything else.
    pub(super) fn host(&self) -> Option<String> {
        let mut host = String::with_capacity(self.wire.len());
        for label in self.labels() {
            if !label.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_') {
                return None;
            }
            if !host.is_empty() {
                host.push('.');
            }
            host.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
        }
        (!host.is_empty()).then_some(host)
    }

    /// The name for logs: presentation format, lowercase, with anything but
    /// letters, digits, `-` and `_` escaped as `\DDD`; `.` for the root.
    pub(super) fn display(&self) -> String {
        let mut out = String::new();
        for label in self.labels() {
            if !out.is_empty() {
                out.push('.');
            }
            for &b in label {
                match b {
                    b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => out.push(char::from(b)),
                    b'A'..=b'Z' => out.push(char::from(b.to_ascii_lowercase())),
                    _ => {
                        let _ = write!(out, "\\{b:03}");
                    }
                }
            }
        }
        if out.is_empty() {
            out.push('.');
        }
        out
    }

    /// Encodes a dotted host name (trailing dot optional); `None` if a label
    /// is empty or too long, or the whole is too long.
    pub(super) fn from_host(host: &str) -> Option<Name> {
        let host = host.strip_suffix('.').unwrap_or(host);
        let mut wire = Vec::with_capacity(host.len() + 2);
        for label in host.split('.').filter(|_| !host.is_empty()) {
            if label.is_empty() || label.len() > MAX_LABEL {
                return None;
            }
            wire.push(label.len() as u8);
            wire.extend_from_slice(label.as_bytes());
        }
        wire.push(0);
        (wire.len() <= MAX_NAME_WIRE).then_some(Name { wire })
    }
}

/// The one question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Question {
    pub(super) name: Name,
    pub(super) qtype: u16,
    pub(super) qclass: u16,
}

/// A query that parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Query {
    pub(super) id: u16,
    /// The header flags as received; the reply echoes RD, CD and the opcode.
    pub(super) flags: u16,
    pub(super) question: Question,
    /// The EDNS version, if the query carried an OPT record.
    pub(super) edns: Option<u8>,
}

/// A message that could not be answered normally, with what to reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rejection {
    pub(super) id: u16,
    pub(super) flags: u16,
    pub(super) rcode: Rcode,
    /// Why, for the log.
    pub(super) why: &'static str,
}

const QR: u16 = 0x8000;
const OPCODE_MASK: u16 = 0x7800;
const RD: u16 = 0x0100;
const RA: u16 = 0x0080;
const CD: u16 = 0x0010;

/// A cursor over guest bytes; every read is checked.
struct Reader<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let b = *self.msg.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from(self.u16()?) << 16 | u32::from(self.u16()?))
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.msg.len())?;
        self.pos = end;
        Some(())
    }

    /// Reads a possibly compressed name and moves past it.
    fn name(&mut self) -> Option<Name> {
        let mut wire = Vec::with_capacity(64);
        let mut pos = self.pos;
        // Pointers must land before this; it only decreases, so loops end.
        let mut bound = self.pos;
        let mut resume = None;
        loop {
            let len = *self.msg.get(pos)?;
            match len & 0xC0 {
                0x00 if len == 0 => {
                    wire.push(0);
                    self.pos = resume.unwrap_or(pos + 1);
                    return Some(Name { wire });
                }
                0x00 => {
                    let label = self.msg.get(pos + 1..pos + 1 + usize::from(len))?;
                    // Leave room for the root octet.
                    if wire.len() + 1 + label.len() + 1 > MAX_NAME_WIRE {
                        return None;
                    }
                    wire.push(len);
                    wire.extend_from_slice(label);
                    pos += 1 + label.len();
                }
                0xC0 => {
                    let target = usize::from(len & 0x3F) << 8 | usize::from(*self.msg.get(pos + 1)?);
                    if target >= bound {
                        return None;
                    }
                    resume.get_or_insert(pos + 2);
                    bound = target;
                    pos = target;
                }
                // 0x40 (extended label types, RFC 6891 obsoleted them) and 0x80 are reserved.
                _ => return None,
            }
        }
    }
}

/// Parses a query: one question, optionally an EDNS OPT record.
pub(super) fn parse_query(msg: &[u8]) -> Result<Query, Rejection> {
    let id = match msg {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 0,
    };
    let flags = match msg {
        [_, _, a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 0,
    };
    let reject = |rcode, why| Rejection { id, flags, rcode, why };
    if msg.len() < HEADER_LEN {
        return Err(reject(Rcode::FormErr, "shorter than a DNS header"));
    }
    if msg.len() > MAX_MESSAGE {
        return Err(reject(Rcode::FormErr, "longer than any query needs"));
    }
    if flags & QR != 0 {
        return Err(reject(Rcode::FormErr, "a response, not a query"));
    }
    if flags & OPCODE_MASK != 0 {
        return Err(reject(Rcode::NotImp, "not a standard query (opcode)"));
    }
    let mut r = Reader { msg, pos: 4 };
    let counts = [r.u16(), r.u16(), r.u16(), r.u16()];
    let [Some(qd), Some(an), Some(ns), Some(ar)] = counts else {
        return Err(reject(Rcode::FormErr, "shorter than a DNS header"));
    };
    if qd != 1 {
        return Err(reject(Rcode::FormErr, "not exactly one question"));
    }
    let question = (|| Some(Question { name: r.name()?, qtype: r.u16()?, qclass: r.u16()? }))()
        .ok_or_else(|| reject(Rcode::FormErr, "malformed question"))?;
    let mut edns = None;
    for i in 0..u32::from(an) + u32::from(ns) + u32::from(ar) {
        let additional = i >= u32::from(an) + u32::from(ns);
        let rr = (|| {
            let name = r.name()?;
            let (rtype, _class, ttl, rdlen) = (r.u16()?, r.u16()?, r.u32()?, r.u16()?);
            r.skip(usize::from(rdlen))?;
            Some((name, rtype, ttl))
        })()
        .ok_or_else(|| reject(Rcode::FormErr, "malformed record after the question"))?;
        if let (true, (name, rtype::OPT, ttl)) = (additional, rr) {
            if edns.is_some() || name.wire != [0] {
                return Err(reject(Rcode::FormErr, "malformed or repeated EDNS OPT record"));
            }
            edns = Some((ttl >> 16) as u8);
        }
    }
    Ok(Query { id, flags, question, edns })
}

/// What goes in the answer section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    A(Ipv4Addr),
    Ptr(Name),
}

/// A reply to encode.
#[derive(Debug)]
pub(super) struct Reply<'a> {
    pub(super) id: u16,
    /// The query's flags, for RD, CD and the opcode.
    pub(super) query_flags: u16,
    pub(super) rcode: Rcode,
    pub(super) question: Option<&'a Question>,
    pub(super) answer: Option<Answer>,
    /// Add an OPT record (the query had one).
    pub(super) edns: bool,
    pub(super) ttl: u32,
}

/// The UDP payload size our OPT record advertises; meaningless over a
/// stream, but RFC 6891 asks for a value.
const EDNS_PAYLOAD: u16 = 1232;

/// Encodes `reply`. At most 12 + 259 + 267 + 11 bytes, so it always fits a
/// stream frame.
pub(super) fn encode(reply: &Reply<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let rcode = reply.rcode as u16;
    let flags = QR | (reply.query_flags & (OPCODE_MASK | RD | CD)) | RA | (rcode & 0xF);
    let answers = u16::from(reply.answer.is_some());
    for field in [reply.id, flags, u16::from(reply.question.is_some()), answers, 0, u16::from(reply.edns)] {
        out.extend_from_slice(&field.to_be_bytes());
    }
    if let Some(q) = reply.question {
        out.extend_from_slice(&q.name.wire);
        out.extend_from_slice(&q.qtype.to_be_bytes());
        out.extend_from_slice(&q.qclass.to_be_bytes());
    }
    if let Some(answer) = &reply.answer {
        // The owner is the question's name: a pointer to offset 12.
        out.extend_from_slice(&[0xC0, HEADER_LEN as u8]);
        let (rtype, rdata): (u16, &[u8]) = match answer {
            Answer::A(ip) => (rtype::A, &ip.octets()),
            Answer::Ptr(name) => (rtype::PTR, &name.wire),
        };
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&reply.ttl.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(rdata);
    }
    if reply.edns {
        out.push(0); // root owner
        out.extend_from_slice(&rtype::OPT.to_be_bytes());
        out.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
        // TTL field: extended rcode, version 0, no flags.
        out.extend_from_slice(&[(rcode >> 4) as u8, 0, 0, 0]);
        out.extend_from_slice(&0u16.to_be_bytes());
    }
    out
}
