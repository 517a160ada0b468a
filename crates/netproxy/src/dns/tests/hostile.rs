//! The parser against malformed and hostile messages: FORMERR, never a panic.

use super::*;
use crate::dns::MAX_MESSAGE;
use crate::policy::reference::SplitMix64;

fn header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    for field in [id, flags, counts[0], counts[1], counts[2], counts[3]] {
        out.extend_from_slice(&field.to_be_bytes());
    }
    out
}

fn answer(msg: &[u8]) -> Decoded {
    let s = setup(Preset::AllowAll, &[]);
    decode(&s.responder.answer(msg))
}

fn rcode(msg: &[u8]) -> u16 {
    answer(msg).rcode
}

#[test]
fn short_messages_get_formerr_with_what_id_there_is() {
    assert_eq!(answer(&[]).id, 0);
    assert_eq!(answer(&[0xab]).id, 0);
    let reply = answer(&[0xab, 0xcd, 0x01]);
    assert_eq!((reply.id, reply.rcode, reply.question), (0xabcd, FORMERR, None));
    assert_eq!(rcode(&header(1, 0, [1, 0, 0, 0])), FORMERR, "question missing");
}

#[test]
fn every_truncation_of_a_query_is_formerr() {
    let full = Query { edns: Some(0), ..Query::new("www.example.com", A) }.bytes();
    assert_eq!(rcode(&full), NOERROR);
    for len in 0..full.len() {
        assert_eq!(rcode(&full[..len]), FORMERR, "length {len}");
    }
}

#[test]
fn question_counts_other_than_one_are_formerr() {
    let one = Query::new("example.com", A).bytes();
    for qd in [0u16, 2, 0xffff] {
        let mut msg = one.clone();
        msg[4..6].copy_from_slice(&qd.to_be_bytes());
        assert_eq!(rcode(&msg), FORMERR, "qdcount {qd}");
    }
    // Two well-formed questions are still two.
    let mut two = one.clone();
    two[4..6].copy_from_slice(&2u16.to_be_bytes());
    two.extend_from_slice(&one[12..]);
    assert_eq!(rcode(&two), FORMERR);
}

#[test]
fn responses_are_not_answered_as_queries() {
    let reply = answer(&Query { flags: 0x8100, ..Query::new("example.com", A) }.bytes());
    assert_eq!((reply.rcode, reply.question), (FORMERR, None));
}

#[test]
fn names_are_bounded() {
    // 4 labels of 63 + root = 4 * 64 + 1 = 257 bytes: too long.
    let l63 = "a".repeat(63);
    let long = format!("{l63}.{l63}.{l63}.{l63}");
    assert_eq!(rcode(&Query::new(&long, A).bytes()), FORMERR);
    // 3 * 64 + 62 + 1 = 255 bytes, the longest name: 253 characters, still a host name.
    let l61 = "b".repeat(61);
    let longest = format!("{l63}.{l63}.{l63}.{l61}");
    assert_eq!((encode_name(&longest).len(), longest.len()), (255, 253));
    assert_eq!(rcode(&Query::new(&longest, A).bytes()), NOERROR);
}

#[test]
fn reserved_label_types_are_formerr() {
    for first in [0x40u8, 0x80, 0x7f, 0xbf] {
        let mut msg = header(7, 0, [1, 0, 0, 0]);
        msg.extend_from_slice(&[first, 0, 0, 0, 1, 0, 1]);
        assert_eq!(rcode(&msg), FORMERR, "{first:#x}");
    }
}

#[test]
fn compression_pointers() {
    // A question pointing at itself, or forward, is a loop or garbage.
    for target in [12u8, 13, 40] {
        let mut msg = header(7, 0, [1, 0, 0, 0]);
        msg.extend_from_slice(&[0xC0, target, 0, 1, 0, 1]);
        assert_eq!(rcode(&msg), FORMERR, "pointer to {target}");
    }
    // "foo" then a pointer back into the header, where offset 10 holds
    // ARCOUNT's high byte 0: the root. Legal, if odd: the name is "foo".
    let mut msg = header(7, 0x0100, [1, 0, 0, 0]);
    msg.extend_from_slice(&[3, b'f', b'o', b'o', 0xC0, 10, 0, 1, 0, 1]);
    let reply = answer(&msg);
    assert_eq!(reply.rcode, NOERROR);
    assert_eq!(reply.question.unwrap().0, encode_name("foo"), "echoed uncompressed");

    // An additional record whose owner points back at the question.
    let mut msg = Query::new("example.com", A).bytes();
    msg[11] = 1; // ARCOUNT
    msg.extend_from_slice(&[0xC0, 12, 0, 16, 0, 1, 0, 0, 0, 0, 0, 2, 1, b'x']);
    assert_eq!(rcode(&msg), NOERROR);

    // Two additional records pointing at each other: rejected.
    let mut msg = Query::new("example.com", A).bytes();
    msg[11] = 2;
    let first = msg.len();
    let second = first + 12;
    msg.extend_from_slice(&[0xC0, second as u8, 0, 16, 0, 1, 0, 0, 0, 0, 0, 0]);
    msg.extend_from_slice(&[0xC0, first as u8, 0, 16, 0, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(rcode(&msg), FORMERR);

    // A chain of 1000 pointers, each one step back, ending at the question.
    let mut msg = Query::new("example.com", A).bytes();
    msg[11] = 2;
    let rdata_start = msg.len() + 11;
    let mut chain = vec![0xC0, 12];
    for i in 1..1000usize {
        let prev = rdata_start + (i - 1) * 2;
        chain.extend_from_slice(&[0xC0 | (prev >> 8) as u8, prev as u8]);
    }
    msg.extend_from_slice(&[0, 0, 16, 0, 1, 0, 0, 0, 0]);
    msg.extend_from_slice(&(chain.len() as u16).to_be_bytes());
    msg.extend_from_slice(&chain);
    let last = rdata_start + 999 * 2;
    msg.extend_from_slice(&[0xC0 | (last >> 8) as u8, last as u8, 0, 16, 0, 1, 0, 0, 0, 0, 0, 0]);
    assert!(msg.len() <= MAX_MESSAGE);
    assert_eq!(rcode(&msg), NOERROR);
}

#[test]
fn opt_records_are_checked() {
    let with_opt = Query { edns: Some(0), ..Query::new("example.com", A) }.bytes();
    let opt = with_opt[with_opt.len() - 11..].to_vec();
    let mut twice = with_opt.clone();
    twice[11] = 2;
    twice.extend_from_slice(&opt);
    assert_eq!(rcode(&twice), FORMERR, "two OPT records");

    let mut named = Query::new("example.com", A).bytes();
    named[11] = 1;
    named.extend_from_slice(&[1, b'x', 0]);
    named.extend_from_slice(&opt[1..]);
    assert_eq!(rcode(&named), FORMERR, "OPT owned by a name other than the root");

    let mut bad_len = with_opt.clone();
    let n = bad_len.len();
    bad_len[n - 1] = 9; // RDLENGTH past the end
    assert_eq!(rcode(&bad_len), FORMERR);
}

#[test]
fn oversized_messages_are_formerr() {
    let mut msg = Query::new("example.com", A).bytes();
    msg.resize(MAX_MESSAGE + 1, 0);
    assert_eq!(rcode(&msg), FORMERR);
    let mut msg = Query::new("example.com", A).bytes();
    msg.resize(MAX_MESSAGE, 0);
    assert_eq!(rcode(&msg), NOERROR, "trailing bytes are ignored");
}

/// Random bytes, and random corruptions of good queries: the responder
/// always answers with a well-formed reply carrying the query's id.
#[test]
fn random_input_never_panics() {
    let s = setup(Preset::Balanced, &["allow network **.example.com"]);
    let mut rng = SplitMix64(0x05ee_dd25);
    let good: Vec<Vec<u8>> = [
        Query::new("api.example.com", A),
        Query { edns: Some(0), ..Query::new("x.example.com", AAAA) },
        Query::new("2.0.18.198.in-addr.arpa", PTR),
        Query::new("gateway.moat.internal", A),
    ]
    .iter()
    .map(Query::bytes)
    .collect();
    for round in 0..100_000 {
        let msg: Vec<u8> = match round % 3 {
            0 => (0..rng.below(600)).map(|_| rng.next_u64() as u8).collect(),
            1 => {
                let mut msg = good[rng.below(good.len())].clone();
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(msg.len());
                    msg[i] ^= 1 << rng.below(8);
                }
                msg
            }
            _ => {
                // Valid header with plausible counts, random body.
                let mut msg = header(rng.next_u64() as u16, 0, [1, rng.below(3) as u16, 0, rng.below(3) as u16]);
                msg.extend((0..rng.below(80)).map(|_| [0xC0, 12, 0, 1, 3, b'a', 41][rng.below(7)]));
                msg
            }
        };
        let reply = s.responder.answer(&msg);
        let decoded = decode(&reply);
        if msg.len() >= 2 {
            assert_eq!(decoded.id, u16::from_be_bytes([msg[0], msg[1]]));
        }
        assert_eq!(decoded.flags & 0x8000, 0x8000);
        assert!(reply.len() < 600, "replies stay small");
    }
    assert!(s.fake.len() <= 1000);
}
