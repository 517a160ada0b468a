//! Requests other than exec, and clients that misbehave.

use std::io::Write;
use std::sync::atomic::Ordering;

use moat_proto::exec::{ExitStatus, Frame, Op, Request, VERSION};

use crate::harness::{Client, SHUTDOWNS};

#[test]
fn ping_answers_pong() {
    let mut client = Client::connect();
    client.send(&Frame::Request(Request { v: VERSION, op: Op::Ping }));
    match client.recv() {
        Some(Frame::Pong(p)) => {
            assert_eq!(p.version, VERSION);
            assert!(p.agent.starts_with("moat-guest-agent "), "{}", p.agent);
            assert!(p.uptime_ms > 0);
        }
        other => panic!("expected Pong, got {other:?}"),
    }
    assert!(client.recv().is_none());
}

#[test]
fn shutdown_calls_the_hook() {
    let before = SHUTDOWNS.load(Ordering::SeqCst);
    let mut client = Client::connect();
    client.send(&Frame::Request(Request { v: VERSION, op: Op::Shutdown }));
    assert_eq!(client.recv(), Some(Frame::Exit(ExitStatus::Code(0))));
    client.join_server();
    assert_eq!(SHUTDOWNS.load(Ordering::SeqCst), before + 1);
}

#[test]
fn wrong_version_is_refused() {
    let mut client = Client::connect();
    client.send(&Frame::Request(Request { v: VERSION + 1, op: Op::Ping }));
    let out = client.finish();
    assert_eq!(out.error.map(|e| e.kind), Some("version".into()));
}

#[test]
fn malformed_first_frames_get_an_error_and_no_panic() {
    let garbage: [&[u8]; 4] = [
        &[0, 0, 0, 2, 99, 1, 2],      // unknown kind
        &[0xff, 0xff, 0xff, 0xff, 1], // oversize length
        b"\0\0\0\x05\x01{nope",       // bad JSON request
        &[0, 0, 0, 1, 3, b'x'],       // a valid frame, but not a request
    ];
    for bytes in garbage {
        let mut client = Client::connect();
        client.writer.write_all(bytes).unwrap();
        let out = client.finish();
        assert_eq!(out.frames, vec!["error"], "for {bytes:?}");
        assert_eq!(out.error.unwrap().kind, "bad_request");
    }
}

#[test]
fn disconnect_before_request_is_quiet() {
    let mut client = Client::connect();
    client.writer.write_all(&[0, 0]).unwrap();
    client.writer.shutdown(std::net::Shutdown::Both).unwrap();
    client.join_server();
}

#[test]
fn malformed_frame_mid_exec_ends_the_session() {
    let mut client =
        Client::exec(moat_proto::exec::ExecRequest { argv: vec!["sleep".into(), "100".into()], ..Default::default() });
    let pid = client.started();
    client.writer.write_all(&[0, 0, 0, 0, 200]).unwrap();
    match client.recv() {
        Some(Frame::Error(e)) => assert_eq!(e.kind, "bad_request"),
        other => panic!("expected Error, got {other:?}"),
    }
    client.join_server();
    assert!(crate::harness::eventually(5, || crate::harness::is_dead(pid)));
}
