//! The device driven through its virtqueues by the strict test driver in
//! `crate::guest`, against real Unix sockets on the host side.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::conn::BUF_ALLOC;
use crate::guest::{pkt, Bench, WithFlags, GUEST_CID};
use crate::packet::{Header, Op, HDR_LEN, HOST_CID, MAX_PAYLOAD, SHUTDOWN_RCV, SHUTDOWN_SEND};

fn op(h: &Header) -> Op {
    h.op().expect("the device sent an unknown op")
}

/// A host client that said `CONNECT <port>`, and the guest's view: the REQUEST it got.
fn host_connects(b: &mut Bench, port: u32) -> (UnixStream, Header) {
    let mut s = UnixStream::connect(b.uds()).unwrap();
    s.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
    b.pump();
    let got = b.take();
    assert_eq!(got.len(), 1, "{got:?}");
    let req = got[0].0;
    assert_eq!((op(&req), req.dst_port, req.src_cid, req.dst_cid), (Op::Request, port, HOST_CID, GUEST_CID));
    (s, req)
}

/// An established host-initiated connection: (host stream, host port, guest port).
fn connected(b: &mut Bench, guest_port: u32) -> (UnixStream, u32, u32) {
    let (mut s, req) = host_connects(b, guest_port);
    b.send(&pkt(Op::Response, guest_port, req.src_port), &[]);
    b.pump();
    let mut line = [0u8; 64];
    let n = s.read(&mut line).unwrap();
    assert_eq!(&line[..n], format!("OK {}\n", req.src_port).as_bytes());
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (s, req.src_port, guest_port)
}

/// Data the guest received on a connection, in order; other packets are returned.
fn data_of(got: &[(Header, Vec<u8>)]) -> Vec<u8> {
    got.iter().filter(|(h, _)| op(h) == Op::Rw).flat_map(|(_, d)| d.clone()).collect()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn a_host_client_gets_ok_once_the_guest_accepts_and_then_bytes_flow_both_ways() {
    let mut b = Bench::new(true);
    let (mut s, req) = host_connects(&mut b, 1024);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The client may write before the OK; nothing it sends is lost.
    s.write_all(b"early").unwrap();
    b.send(&pkt(Op::Response, 1024, req.src_port), &[]);
    b.send(&pkt(Op::Rw, 1024, req.src_port), b"from guest");
    b.pump();
    let mut buf = vec![0u8; 64];
    let mut got = Vec::new();
    while got.len() < format!("OK {}\nfrom guest", req.src_port).len() {
        let n = s.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, format!("OK {}\nfrom guest", req.src_port).as_bytes());
    assert_eq!(data_of(&b.take()), b"early");
}

#[test]
fn a_guest_refusal_closes_the_host_client_without_ok() {
    let mut b = Bench::new(false);
    let (mut s, req) = host_connects(&mut b, 1024);
    b.send(&pkt(Op::Rst, 1024, req.src_port), &[]);
    b.pump();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap(), 0, "EOF, no OK line");
    assert_eq!(b.dev.connections(), (0, 0));
}

#[test]
fn a_malformed_connect_line_closes_the_client() {
    let mut b = Bench::new(false);
    let mut s = UnixStream::connect(b.uds()).unwrap();
    s.write_all(b"HELLO\n").unwrap();
    b.pump();
    assert_eq!(s.read(&mut [0u8; 8]).unwrap(), 0);
    assert!(b.take().is_empty());
    assert_eq!(b.dev.connections(), (0, 0));
}

#[test]
fn a_guest_connecting_to_a_port_nobody_serves_gets_an_immediate_rst() {
    let mut b = Bench::new(true);
    b.send(&pkt(Op::Request, 40000, 5000), &[]);
    b.pump_for(0);
    let got = b.take();
    assert_eq!(got.len(), 1);
    let h = got[0].0;
    assert_eq!((op(&h), h.src_port, h.dst_port, h.dst_cid), (Op::Rst, 5000, 40000, GUEST_CID));
}

#[test]
fn a_guest_connection_reaches_the_port_socket() {
    let mut b = Bench::new(true);
    let l = b.listen(5000);
    b.send(&pkt(Op::Request, 40000, 5000), &[]);
    b.pump();
    let got = b.take();
    assert_eq!(op(&got[0].0), Op::Response);
    let (mut s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    b.send(&pkt(Op::Rw, 40000, 5000), b"ping");
    b.pump();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    s.write_all(b"pong").unwrap();
    b.pump();
    assert_eq!(data_of(&b.take()), b"pong");
}

#[test]
fn a_packet_cut_into_many_descriptors_anywhere_arrives_whole() {
    let mut b = Bench::new(false);
    let (mut s, hp, gp) = connected(&mut b, 1024);
    let data = pattern(1000);
    let mut h = pkt(Op::Rw, gp, hp);
    h.len = 1000;
    // The header itself split in three, header and payload sharing a descriptor, odd cuts.
    b.send_split(&h, &data, &[10, 1, 40, 3, 500, 1, 1, 200, 0]);
    b.pump();
    let mut got = vec![0u8; 1000];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, data);
}

/// Writes `data` from the guest the way Linux does: packets of at most 64 KiB,
/// header in its own descriptor and payload in page-sized ones, within credit.
fn guest_write(b: &mut Bench, gp: u32, hp: u32, data: &[u8]) {
    let (mut sent, mut fwd) = (0usize, 0u32);
    let deadline = Instant::now() + Duration::from_secs(20);
    while sent < data.len() {
        for (h, _) in b.take() {
            fwd = h.fwd_cnt;
        }
        let credit = BUF_ALLOC as usize - (sent as u32).wrapping_sub(fwd) as usize;
        let n = credit.min(MAX_PAYLOAD).min(data.len() - sent);
        if n == 0 {
            assert!(Instant::now() < deadline, "the guest never got credit back at {sent} bytes");
            b.pump_for(5);
            continue;
        }
        let mut h = pkt(Op::Rw, gp, hp);
        h.len = n as u32;
        let mut split = vec![HDR_LEN];
        split.extend(std::iter::repeat_n(4096, n.div_ceil(4096)));
        b.send_split(&h, &data[sent..sent + n], &split);
        sent += n;
        b.pump_for(0);
    }
    b.pump();
}

#[test]
fn guest_writes_of_32_kib_plus_one_and_of_1_mib_arrive_intact() {
    for len in [32 * 1024 + 1, 1 << 20] {
        let mut b = Bench::new(true);
        let (s, hp, gp) = connected(&mut b, 1024);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut s = s;
            s.read_to_end(&mut got).unwrap();
            got
        });
        let data = pattern(len);
        guest_write(&mut b, gp, hp, &data);
        b.send(&pkt(Op::Shutdown, gp, hp).with_flags(SHUTDOWN_SEND), &[]);
        b.pump();
        assert_eq!(reader.join().unwrap(), data, "{len} bytes");
    }
}

#[test]
fn rx_buffers_spread_over_several_descriptors_are_filled_in_order() {
    let mut b = Bench::new(false);
    b.rx_split = vec![10, 30, 4, 100, 3000];
    b.add_rx_buffers(32);
    let (mut s, _, _) = connected(&mut b, 1024);
    let data = pattern(20_000);
    s.write_all(&data).unwrap();
    b.pump();
    assert_eq!(data_of(&b.take()), data);
}

#[test]
fn host_data_stops_at_the_guests_credit_and_resumes_at_once_on_a_credit_update() {
    let mut b = Bench::new(true);
    let (mut s, hp, gp) = connected(&mut b, 1024);
    let mut h = pkt(Op::CreditUpdate, gp, hp);
    h.buf_alloc = 8192;
    b.send(&h, &[]);
    b.pump();
    let data = pattern(100_000);
    let writer = std::thread::spawn(move || s.write_all(&data).map(|()| s));
    let mut got = Vec::new();
    while got.len() < 100_000 {
        b.pump();
        let chunk = data_of(&b.take());
        assert!(chunk.len() <= 8192, "sent {} bytes on 8192 of credit", chunk.len());
        assert!(!chunk.is_empty(), "stalled at {} bytes", got.len());
        got.extend(chunk);
        // The guest's application reads it all: tell the device.
        h.fwd_cnt = got.len() as u32;
        b.send(&h, &[]);
    }
    assert_eq!(got, pattern(100_000));
    drop(writer.join().unwrap());
}

#[test]
fn a_guest_out_of_credit_is_asked_for_an_update_once() {
    let mut b = Bench::new(false);
    let (mut s, hp, gp) = connected(&mut b, 1024);
    let mut h = pkt(Op::CreditUpdate, gp, hp);
    h.buf_alloc = 100;
    b.send(&h, &[]);
    b.pump();
    s.write_all(&[7u8; 1000]).unwrap();
    b.pump();
    let got = b.take();
    let ops: Vec<Op> = got.iter().map(|(h, _)| op(h)).collect();
    assert_eq!(ops, [Op::Rw, Op::CreditRequest]);
    assert_eq!(got[0].1.len(), 100);
}

/// With RX buffers handed out a few at a time, host data must resume on each
/// RX kick; the strict driver only kicks when the device asked for it.
fn host_data_resumes_when_the_guest_adds_rx_buffers(event_idx: bool) {
    let mut b = Bench::new(event_idx);
    let (mut s, _, _) = connected(&mut b, 1024);
    b.refill = false;
    let data = pattern(300_000);
    let sent = data.clone();
    let writer = std::thread::spawn(move || s.write_all(&sent).map(|()| s));
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < data.len() {
        assert!(Instant::now() < deadline, "stalled at {} bytes", got.len());
        b.pump_for(5);
        let packets = b.take();
        got.extend(data_of(&packets));
        // The guest consumed everything: tell the device (as Linux does), give 3 buffers.
        if !packets.is_empty() {
            let mut h = pkt(Op::CreditUpdate, 1024, packets[0].0.src_port);
            h.fwd_cnt = got.len() as u32;
            b.send(&h, &[]);
        }
        b.add_rx_buffers(3);
    }
    assert_eq!(got, data);
    drop(writer.join().unwrap());
}

#[test]
fn host_data_resumes_on_rx_kicks_with_event_idx() {
    host_data_resumes_when_the_guest_adds_rx_buffers(true);
}

#[test]
fn host_data_resumes_on_rx_kicks_without_event_idx() {
    host_data_resumes_when_the_guest_adds_rx_buffers(false);
}

#[test]
fn a_guest_half_close_gives_the_host_eof_and_data_still_flows_back() {
    let mut b = Bench::new(true);
    let (mut s, hp, gp) = connected(&mut b, 1024);
    b.send(&pkt(Op::Rw, gp, hp), b"request");
    b.send(&pkt(Op::Shutdown, gp, hp).with_flags(SHUTDOWN_SEND), &[]);
    b.pump();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"request", "then EOF");
    s.write_all(b"reply").unwrap();
    b.pump();
    assert_eq!(data_of(&b.take()), b"reply");
    assert_eq!(b.dev.connections(), (1, 0), "the host may still write");
    s.shutdown(Shutdown::Write).unwrap();
    b.pump();
    let ops: Vec<Op> = b.take().iter().map(|(h, _)| op(h)).collect();
    assert_eq!(ops, [Op::Shutdown, Op::Rst], "both sides done: the connection is closed");
    assert_eq!(b.dev.connections(), (0, 0));
}

#[test]
fn a_host_half_close_tells_the_guest_and_the_guest_can_still_write() {
    let mut b = Bench::new(false);
    let (mut s, hp, gp) = connected(&mut b, 1024);
    s.write_all(b"last words").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    b.pump();
    let got = b.take();
    assert_eq!(data_of(&got), b"last words");
    let last = got.last().unwrap().0;
    assert_eq!((op(&last), last.flags), (Op::Shutdown, SHUTDOWN_SEND));
    b.send(&pkt(Op::Rw, gp, hp), b"answer");
    b.pump();
    let mut buf = [0u8; 6];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"answer");
}

#[test]
fn a_guest_close_flushes_buffered_data_before_the_rst() {
    let mut b = Bench::new(true);
    let (mut s, hp, gp) = connected(&mut b, 1024);
    // Fill the host socket so later data has to wait in the device's buffer.
    let big = pattern(400_000);
    let mut sent = 0;
    let (mut credit_base, mut packets) = (0u32, 0);
    while sent < big.len() && packets < 200 {
        let mut fwd = credit_base;
        for (h, _) in b.take() {
            fwd = h.fwd_cnt;
        }
        credit_base = fwd;
        let credit = BUF_ALLOC as usize - (sent as u32).wrapping_sub(fwd) as usize;
        let n = credit.min(MAX_PAYLOAD).min(big.len() - sent);
        if n == 0 {
            break;
        }
        let mut h = pkt(Op::Rw, gp, hp);
        h.len = n as u32;
        b.send(&h, &big[sent..sent + n]);
        sent += n;
        packets += 1;
        b.pump_for(0);
    }
    assert!(b.dev.buffered_bytes() > 0, "the host socket should be full by now");
    b.send(&pkt(Op::Shutdown, gp, hp).with_flags(SHUTDOWN_RCV | SHUTDOWN_SEND), &[]);
    b.pump_for(0);
    assert!(b.take().iter().all(|(h, _)| op(h) != Op::Rst), "no RST while data is buffered");
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.dev.connections() != (0, 0) {
        assert!(Instant::now() < deadline, "the connection never closed");
        b.pump_for(5);
    }
    assert_eq!(reader.join().unwrap(), &big[..sent]);
    assert_eq!(b.take().last().map(|(h, _)| op(h)), Some(Op::Rst));
}

#[test]
fn a_guest_ignoring_credit_is_reset_and_buffering_stays_bounded() {
    let mut b = Bench::new(true);
    let (s, hp, gp) = connected(&mut b, 1024);
    let chunk = vec![1u8; MAX_PAYLOAD];
    let mut reset = false;
    for _ in 0..64 {
        let mut h = pkt(Op::Rw, gp, hp);
        h.len = chunk.len() as u32;
        b.send(&h, &chunk);
        b.pump_for(0);
        assert!(b.dev.buffered_bytes() <= BUF_ALLOC as usize);
        if b.take().iter().any(|(h, _)| op(h) == Op::Rst) {
            reset = true;
            break;
        }
    }
    assert!(reset, "a guest writing 4 MiB into a host that reads nothing must be reset");
    assert!(b.dev.stats().violations.count() >= 1);
    assert_eq!(b.dev.connections(), (0, 0));
    drop(s);
}

#[test]
fn stray_packets_get_rst_and_foreign_cids_are_dropped() {
    let mut b = Bench::new(false);
    b.send(&pkt(Op::Rw, 1, 2), b"nobody");
    let mut unknown = pkt(Op::Rw, 1, 3);
    unknown.op = 99;
    b.send(&unknown, &[]);
    b.send(&pkt(Op::Rst, 1, 4), &[]);
    let mut foreign = pkt(Op::Request, 1, 5);
    foreign.src_cid = 7;
    b.send(&foreign, &[]);
    let mut to_guest = pkt(Op::Request, 1, 6);
    to_guest.dst_cid = 4;
    b.send(&to_guest, &[]);
    b.pump();
    let rsts: Vec<u32> = b
        .take()
        .iter()
        .map(|(h, _)| {
            assert_eq!(op(h), Op::Rst);
            h.src_port
        })
        .collect();
    assert_eq!(rsts, [2, 3], "RST answers no RST, and foreign CIDs get nothing");
    assert_eq!(b.dev.stats().wrong_cid.count(), 2);
}

#[test]
fn a_len_beyond_the_chain_or_the_packet_limit_resets_the_connection() {
    for bad_len in [100u32, MAX_PAYLOAD as u32 + 1, u32::MAX] {
        let mut b = Bench::new(true);
        let (mut s, hp, gp) = connected(&mut b, 1024);
        let mut h = pkt(Op::Rw, gp, hp);
        h.len = bad_len;
        b.send_split(&h, &[0u8; 10], &[HDR_LEN, 10]);
        b.pump();
        assert_eq!(b.take().last().map(|(h, _)| op(h)), Some(Op::Rst), "len {bad_len}");
        assert_eq!(s.read(&mut [0u8; 8]).unwrap(), 0, "the host client sees EOF");
    }
}

#[test]
fn connections_are_capped() {
    let mut b = Bench::with_limit(true, 4);
    let _l = b.listen(5000);
    for port in 0..5 {
        b.send(&pkt(Op::Request, 100 + port, 5000), &[]);
    }
    b.pump();
    let ops: Vec<Op> = b.take().iter().map(|(h, _)| op(h)).collect();
    assert_eq!(ops.iter().filter(|&&o| o == Op::Response).count(), 4);
    assert_eq!(ops.iter().filter(|&&o| o == Op::Rst).count(), 1);
    let mut extra = UnixStream::connect(b.uds()).unwrap();
    b.pump();
    extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    match extra.read(&mut [0u8; 1]) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("a client over the cap must be closed: {other:?}"),
    }
}
