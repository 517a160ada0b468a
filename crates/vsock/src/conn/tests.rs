//! The connection state machine alone, over a socket pair.

use super::*;
use crate::packet::MAX_PAYLOAD;

fn guest_hdr(op: Op) -> Header {
    Header {
        src_cid: 3,
        dst_cid: HOST_CID,
        src_port: 7,
        dst_port: 9,
        kind: TYPE_STREAM,
        op: op as u16,
        buf_alloc: 1000,
        ..Header::default()
    }
}

fn established() -> (Conn, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut c = Conn::guest_initiated(ours, ConnKey { host_port: 9, guest_port: 7 }, 3, &guest_hdr(Op::Request));
    let mut scratch = vec![0u8; MAX_PAYLOAD];
    let Next::Packet(h) = c.next_packet(&mut scratch, 4096) else { panic!("a RESPONSE is owed") };
    assert_eq!(h.op(), Some(Op::Response));
    (c, theirs)
}

#[test]
fn credit_survives_the_u32_wrap_and_a_lying_guest_gets_none() {
    let (mut c, _peer) = established();
    c.sent = Wrapping(u32::MAX - 10);
    c.guest_fwd_cnt = Wrapping(u32::MAX - 10);
    assert_eq!(c.credit(), 1000);
    c.sent += Wrapping(50);
    assert_eq!(c.credit(), 950, "50 bytes in flight across the wrap");
    c.guest_fwd_cnt = c.sent + Wrapping(1);
    assert_eq!(c.credit(), 0, "consumed more than was sent: no credit, not 4 GiB");
}

#[test]
fn data_is_read_only_up_to_the_credit_and_then_credit_is_asked_for_once() {
    let (mut c, mut peer) = established();
    peer.write_all(&[5u8; 3000]).unwrap();
    c.on_readable();
    let mut scratch = vec![0u8; MAX_PAYLOAD];
    let Next::Packet(h) = c.next_packet(&mut scratch, 4096) else { panic!() };
    assert_eq!((h.op(), h.len), (Some(Op::Rw), 1000));
    let Next::Packet(h) = c.next_packet(&mut scratch, 4096) else { panic!() };
    assert_eq!(h.op(), Some(Op::CreditRequest));
    assert_eq!(c.next_packet(&mut scratch, 4096), Next::Idle);
    assert!(!c.has_rx_work());
    let mut update = guest_hdr(Op::CreditUpdate);
    update.fwd_cnt = 1000;
    assert_eq!(c.on_guest_packet(&update, &[]), Verdict::Keep);
    assert!(c.has_rx_work(), "credit back: data is due again");
}

#[test]
fn the_guest_hears_about_freed_space_once_its_view_runs_low() {
    let (mut c, mut peer) = established();
    let rw = |len| Header { len, ..guest_hdr(Op::Rw) };
    // The host reads everything at once: fwd_cnt keeps up, but the guest doesn't know.
    let chunk = vec![1u8; 32 * 1024];
    for _ in 0..2 {
        assert_eq!(c.on_guest_packet(&rw(chunk.len() as u32), &chunk), Verdict::Keep);
    }
    assert!(!c.owed.credit_update, "64 KiB of 128 KiB used: the guest still has room");
    assert_eq!(c.on_guest_packet(&rw(chunk.len() as u32), &chunk), Verdict::Keep);
    assert!(c.owed.credit_update, "below half: tell the guest");
    let mut scratch = vec![0u8; MAX_PAYLOAD];
    let Next::Packet(h) = c.next_packet(&mut scratch, 4096) else { panic!() };
    assert_eq!((h.op(), h.fwd_cnt), (Some(Op::CreditUpdate), 3 * 32 * 1024));
    let mut sink = vec![0u8; 3 * 32 * 1024];
    peer.read_exact(&mut sink).unwrap();
}

#[test]
fn ops_out_of_order_reset_the_connection() {
    let (ours, _peer) = UnixStream::pair().unwrap();
    let mut c = Conn::host_initiated(ours, ConnKey { host_port: 9, guest_port: 7 }, 3);
    assert_eq!(c.on_guest_packet(&guest_hdr(Op::Rw), b"early"), Verdict::Violation);
    let mut scratch = vec![0u8; 16];
    let Next::Packet(h) = c.next_packet(&mut scratch, 0) else { panic!() };
    assert_eq!(h.op(), Some(Op::Rst), "the RST goes before the unsent REQUEST");
    assert!(c.is_closed());
}
