use super::*;

fn all_frames() -> Vec<Frame> {
    vec![
        Frame::Request(Request {
            v: VERSION,
            op: Op::Exec(ExecRequest {
                argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
                env: vec![("A".into(), "b=c".into())],
                cwd: Some("/work/a b".into()),
                user: Some("agent".into()),
                tty: Some(WinSize { rows: 24, cols: 80 }),
                stdin: true,
            }),
        }),
        Frame::Request(Request { v: VERSION, op: Op::Ping }),
        Frame::Request(Request { v: VERSION, op: Op::Shutdown }),
        Frame::Started { pid: 42 },
        Frame::Stdin(vec![0, 255, 10, 13]),
        Frame::StdinEof,
        Frame::Stdout(vec![1; MAX_PAYLOAD]),
        Frame::Stderr(Vec::new()),
        Frame::Resize(WinSize { rows: 50, cols: 132 }),
        Frame::Signal(2),
        Frame::Exit(ExitStatus::Code(3)),
        Frame::Exit(ExitStatus::Signal(9)),
        Frame::Error(RemoteError { kind: "not_found".into(), message: "no such program".into() }),
        Frame::Pong(Pong { version: 1, agent: "x".into(), uptime_ms: 5 }),
        Frame::StdinAck(32 * 1024),
    ]
}

#[test]
fn every_frame_round_trips_through_a_stream() {
    let mut wire = Vec::new();
    for f in all_frames() {
        f.encode(&mut wire).unwrap();
    }
    let mut r = FrameReader::new(&wire[..]);
    for f in all_frames() {
        assert_eq!(r.next_frame().unwrap(), Some(f));
    }
    assert_eq!(r.next_frame().unwrap(), None);
}

#[test]
fn no_frame_exceeds_the_vsock_write_limit() {
    let mut buf = Vec::new();
    Frame::Stdout(vec![0; MAX_PAYLOAD]).encode(&mut buf).unwrap();
    assert_eq!(buf.len(), 32 * 1024);
    let err = Frame::Stdout(vec![0; MAX_PAYLOAD + 1]).encode(&mut Vec::new()).unwrap_err();
    assert!(matches!(err, FrameError::PayloadTooLarge(n) if n == MAX_PAYLOAD + 1));
}

#[test]
fn write_data_splits_large_payloads_into_bounded_frames() {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut wire = Vec::new();
    write_data(&mut wire, &data, Frame::Stdout).unwrap();
    let mut r = FrameReader::new(&wire[..]);
    let mut got = Vec::new();
    while let Some(f) = r.next_frame().unwrap() {
        match f {
            Frame::Stdout(b) => {
                assert!(b.len() <= MAX_PAYLOAD);
                got.extend(b);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, data);
}

#[test]
fn oversize_length_is_rejected_before_the_payload_arrives() {
    let header = [0xff, 0xff, 0xff, 0xff, kind::STDOUT];
    assert!(matches!(Frame::decode(&header), Err(DecodeError::TooLong(_))));
    let mut r = FrameReader::new(&header[..]);
    assert!(matches!(r.next_frame(), Err(FrameError::Decode(DecodeError::TooLong(_)))));
}

#[test]
fn partial_frames_wait_for_more_bytes() {
    let mut buf = Vec::new();
    Frame::Signal(15).encode(&mut buf).unwrap();
    for cut in 0..buf.len() {
        assert!(Frame::decode(&buf[..cut]).unwrap().is_none(), "cut at {cut}");
    }
    assert_eq!(Frame::decode(&buf).unwrap(), Some((Frame::Signal(15), buf.len())));
}

#[test]
fn stream_ending_inside_a_frame_is_an_error_not_a_clean_end() {
    let mut buf = Vec::new();
    Frame::Stdout(b"hello".to_vec()).encode(&mut buf).unwrap();
    let mut r = FrameReader::new(&buf[..buf.len() - 1]);
    assert!(matches!(r.next_frame(), Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof));
}

#[test]
fn malformed_control_frames_are_errors() {
    let cases: Vec<(u8, &[u8])> = vec![
        (kind::REQUEST, b"{not json"),
        (kind::REQUEST, br#"{"v":1,"op":"format_disk"}"#),
        (kind::EXIT, br#"{"code":"x"}"#),
        (kind::RESIZE, &[0, 1, 2]),
        (kind::SIGNAL, &[0; 5]),
        (kind::STDIN_EOF, &[1]),
        (99, b""),
    ];
    for (k, payload) in cases {
        let mut buf = (payload.len() as u32).to_be_bytes().to_vec();
        buf.push(k);
        buf.extend_from_slice(payload);
        assert!(Frame::decode(&buf).is_err(), "kind {k} payload {payload:?} accepted");
    }
}

#[test]
fn arbitrary_bytes_never_panic_the_decoder() {
    // A small deterministic generator (xorshift) mixing valid headers with noise.
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for _ in 0..20_000 {
        let len = (next() % 64) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if len >= 5 && next() % 2 == 0 {
            let plen = (len - 5) as u32;
            buf[..4].copy_from_slice(&plen.to_be_bytes());
            buf[4] = (next() % 14) as u8;
        }
        let _ = Frame::decode(&buf);
        let mut r = FrameReader::new(&buf[..]);
        while let Ok(Some(_)) = r.next_frame() {}
    }
}

#[test]
fn exit_status_maps_to_shell_codes() {
    assert_eq!(ExitStatus::Code(7).shell_code(), 7);
    assert_eq!(ExitStatus::Signal(9).shell_code(), 137);
}
