//! Tests of the DNS responder: the parser against hostile input, the
//! answers under policy, logging, and the stream transport over loopback.
//!
//! Queries are built and replies decoded here by hand, independently of
//! `wire`, so the two sides check each other.

mod answers;
mod hostile;
mod stream;

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use super::{FakeIps, Responder};
use crate::log::{ConnectionRecord, ConnectionSink};
use crate::policy::{Policy, Preset, Rule};

pub(super) const A: u16 = 1;
pub(super) const PTR: u16 = 12;
pub(super) const TXT: u16 = 16;
pub(super) const AAAA: u16 = 28;
pub(super) const OPT: u16 = 41;

/// A query as a stub resolver sends it.
#[derive(Debug, Clone)]
pub(super) struct Query<'a> {
    pub(super) id: u16,
    pub(super) flags: u16,
    pub(super) name: &'a str,
    pub(super) qtype: u16,
    pub(super) qclass: u16,
    /// An OPT record with this EDNS version.
    pub(super) edns: Option<u8>,
}

impl<'a> Query<'a> {
    /// A recursive query (RD set) of class IN without EDNS.
    pub(super) fn new(name: &'a str, qtype: u16) -> Query<'a> {
        Query { id: 0xbeef, flags: 0x0100, name, qtype, qclass: 1, edns: None }
    }

    pub(super) fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let arcount = u16::from(self.edns.is_some());
        for field in [self.id, self.flags, 1, 0, 0, arcount] {
            out.extend_from_slice(&field.to_be_bytes());
        }
        out.extend_from_slice(&encode_name(self.name));
        out.extend_from_slice(&self.qtype.to_be_bytes());
        out.extend_from_slice(&self.qclass.to_be_bytes());
        if let Some(version) = self.edns {
            out.push(0);
            out.extend_from_slice(&OPT.to_be_bytes());
            out.extend_from_slice(&1232u16.to_be_bytes());
            out.extend_from_slice(&[0, version, 0x80, 0]); // DO bit set
            out.extend_from_slice(&0u16.to_be_bytes());
        }
        out
    }
}

/// Dotted name → wire labels; `\.` in a label stands for a literal dot byte.
pub(super) fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut label = Vec::new();
    let mut chars = name.bytes().peekable();
    while let Some(b) = chars.next() {
        match b {
            b'\\' if chars.peek().is_some() => label.push(chars.next().unwrap_or(b'.')),
            b'.' => {
                out.push(label.len() as u8);
                out.append(&mut label);
            }
            _ => label.push(b),
        }
    }
    if !label.is_empty() {
        out.push(label.len() as u8);
        out.append(&mut label);
    }
    out.push(0);
    out
}

/// A decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Decoded {
    pub(super) id: u16,
    pub(super) flags: u16,
    /// Header RCODE plus the OPT record's extended bits.
    pub(super) rcode: u16,
    pub(super) question: Option<(Vec<u8>, u16, u16)>,
    /// `(type, ttl, rdata)`, owner checked to be the question's name.
    pub(super) answers: Vec<(u16, u32, Vec<u8>)>,
    /// The OPT record's TTL field, if present.
    pub(super) opt: Option<u32>,
}

impl Decoded {
    pub(super) fn a(&self) -> Option<Ipv4Addr> {
        match self.answers.as_slice() {
            [(A, _, rdata)] => <[u8; 4]>::try_from(rdata.as_slice()).ok().map(Ipv4Addr::from),
            _ => None,
        }
    }
}

pub(super) const NOERROR: u16 = 0;
pub(super) const FORMERR: u16 = 1;
pub(super) const NXDOMAIN: u16 = 3;
pub(super) const NOTIMP: u16 = 4;
pub(super) const REFUSED: u16 = 5;
pub(super) const BADVERS: u16 = 16;

/// Decodes a reply this module produced; panics on anything unexpected.
pub(super) fn decode(msg: &[u8]) -> Decoded {
    let u16_at = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]);
    let u32_at = |i: usize| u32::from(u16_at(i)) << 16 | u32::from(u16_at(i + 2));
    let (id, flags) = (u16_at(0), u16_at(2));
    let (qd, an, ns, ar) = (u16_at(4), u16_at(6), u16_at(8), u16_at(10));
    assert_eq!(ns, 0);
    let mut pos = 12;
    let question = (qd == 1).then(|| {
        let start = pos;
        while msg[pos] != 0 {
            assert!(msg[pos] < 64, "no compression in our echoed question");
            pos += 1 + usize::from(msg[pos]);
        }
        pos += 1;
        let q = (msg[start..pos].to_vec(), u16_at(pos), u16_at(pos + 2));
        pos += 4;
        q
    });
    let mut answers = Vec::new();
    for _ in 0..an {
        assert_eq!(&msg[pos..pos + 2], [0xC0, 12], "owner points at the question");
        let (rtype, class, ttl, len) = (u16_at(pos + 2), u16_at(pos + 4), u32_at(pos + 6), u16_at(pos + 10));
        assert_eq!(class, 1);
        pos += 12;
        answers.push((rtype, ttl, msg[pos..pos + usize::from(len)].to_vec()));
        pos += usize::from(len);
    }
    let mut rcode = flags & 0xF;
    let mut opt = None;
    for _ in 0..ar {
        assert_eq!((msg[pos], u16_at(pos + 1)), (0, OPT));
        let ttl = u32_at(pos + 5);
        rcode |= ((ttl >> 24) as u16) << 4;
        opt = Some(ttl);
        pos += 11;
    }
    assert_eq!(pos, msg.len(), "no trailing bytes");
    Decoded { id, flags, rcode, question, answers, opt }
}

/// A sink that keeps what it is given.
#[derive(Debug, Default)]
pub(super) struct Collect(pub(super) Mutex<Vec<ConnectionRecord>>);

impl ConnectionSink for Collect {
    fn record(&self, record: ConnectionRecord) {
        self.0.lock().unwrap().push(record);
    }
}

impl Collect {
    pub(super) fn take(&self) -> Vec<ConnectionRecord> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// A responder for sandbox `web` over `rules` on `preset`, and its parts.
pub(super) struct Setup {
    pub(super) responder: Responder,
    pub(super) policy: Arc<Policy>,
    pub(super) fake: Arc<FakeIps>,
    pub(super) log: Arc<Collect>,
}

pub(super) fn setup(preset: Preset, rules: &[&str]) -> Setup {
    let rules: Vec<Rule> = rules.iter().map(|r| r.parse().unwrap()).collect();
    let policy = Arc::new(Policy::new(preset, &rules));
    let fake = Arc::new(FakeIps::default());
    let log = Arc::new(Collect::default());
    let sink: Arc<dyn ConnectionSink> = log.clone();
    let responder = Responder::new(Arc::clone(&policy), Arc::clone(&fake), Some(sink), "web".to_string());
    Setup { responder, policy, fake, log }
}

impl Setup {
    pub(super) fn ask(&self, q: &Query<'_>) -> Decoded {
        let reply = decode(&self.responder.answer(&q.bytes()));
        assert_eq!(reply.id, q.id);
        reply
    }
}
