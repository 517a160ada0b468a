//! Non-terminal execs: exit statuses, streams, stdin, users, env, concurrency.

use std::time::{Duration, Instant};

use moat_proto::exec::{write_data, ExecRequest, ExitStatus, Frame};

use crate::harness::{eventually, is_dead, run, sh, Client};

#[test]
fn exit_code_is_reported() {
    let out = run(sh("exit 3"));
    out.assert_well_formed();
    assert_eq!(out.exit, Some(ExitStatus::Code(3)));
}

#[test]
fn death_by_signal_is_reported() {
    let out = run(sh("kill -TERM $$"));
    out.assert_well_formed();
    assert_eq!(out.exit, Some(ExitStatus::Signal(15)));
}

#[test]
fn stdout_and_stderr_stay_separate() {
    let out = run(sh("echo out; echo err >&2; echo more"));
    out.assert_well_formed();
    assert_eq!(out.stdout_str(), "out\nmore\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
}

#[test]
fn large_output_arrives_before_exit() {
    // 3 MB, more than any pipe buffer, all of it before Exit.
    let out = run(sh("head -c 3000000 /dev/zero"));
    out.assert_well_formed();
    assert_eq!(out.stdout.len(), 3_000_000);
}

#[test]
fn stdin_round_trips_through_cat_binary_safe() {
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 256) as u8 ^ (i / 7919) as u8).collect();
    assert!((0..=255u8).all(|b| data.contains(&b)));
    let mut client = Client::exec(ExecRequest { argv: vec!["cat".into()], stdin: true, ..Default::default() });
    let mut writer = client.writer.try_clone().unwrap();
    let input = data.clone();
    let feeder = std::thread::spawn(move || {
        write_data(&mut writer, &input, Frame::Stdin).unwrap();
        moat_proto::exec::write_frame(&mut writer, &Frame::StdinEof).unwrap();
    });
    client.started();
    let mut stdout = Vec::new();
    let exit = loop {
        match client.recv() {
            Some(Frame::Stdout(b)) => stdout.extend(b),
            Some(Frame::Exit(s)) => break s,
            other => panic!("unexpected {other:?}"),
        }
    };
    feeder.join().unwrap();
    assert_eq!(exit, ExitStatus::Code(0));
    assert!(stdout == data, "cat returned {} bytes, sent {}", stdout.len(), data.len());
    assert_eq!(client.acked, data.len() as u64, "every stdin byte read is acknowledged");
}

#[test]
fn stdin_is_dev_null_unless_asked_for() {
    let out = run(sh("cat; echo done"));
    out.assert_well_formed();
    assert_eq!(out.stdout_str(), "done\n");
}

#[test]
fn signal_frame_interrupts_the_process() {
    let mut client = Client::exec(ExecRequest { argv: vec!["sleep".into(), "100".into()], ..Default::default() });
    client.started();
    client.send(&Frame::Signal(2));
    let out = client.finish();
    assert_eq!(out.exit, Some(ExitStatus::Signal(2)));
}

#[test]
fn bad_signal_is_an_error_but_the_session_goes_on() {
    let mut client = Client::exec(ExecRequest { argv: vec!["sleep".into(), "100".into()], ..Default::default() });
    client.started();
    client.send(&Frame::Signal(0));
    match client.recv() {
        Some(Frame::Error(e)) => assert_eq!(e.kind, "bad_request"),
        other => panic!("expected an Error frame, got {other:?}"),
    }
    client.send(&Frame::Signal(9));
    assert_eq!(client.finish().exit, Some(ExitStatus::Signal(9)));
}

#[test]
fn background_grandchild_does_not_hold_up_exit() {
    let start = Instant::now();
    let out = run(sh("sleep 1000 & echo $!"));
    let elapsed = start.elapsed();
    out.assert_well_formed();
    assert_eq!(out.exit, Some(ExitStatus::Code(0)));
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    let sleeper: i32 = out.stdout_str().trim().parse().unwrap();
    // SAFETY: kill(2) with plain integers; cleaning up the test's own grandchild.
    unsafe { libc::kill(sleeper, libc::SIGKILL) };
}

#[test]
fn eight_concurrent_execs() {
    let start = Instant::now();
    let handles: Vec<_> = (0..8).map(|i| std::thread::spawn(move || run(sh(&format!("sleep 1; echo {i}"))))).collect();
    for (i, h) in handles.into_iter().enumerate() {
        let out = h.join().unwrap();
        out.assert_well_formed();
        assert_eq!(out.stdout_str(), format!("{i}\n"));
    }
    // Serially this would take 8 s.
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
}

#[test]
fn unknown_program_is_a_not_found_error() {
    let out = run(ExecRequest { argv: vec!["no-such-program-moat".into()], ..Default::default() });
    assert_eq!(out.frames, vec!["error"]);
    let err = out.error.unwrap();
    assert_eq!(err.kind, "not_found");
    assert!(err.message.contains("no-such-program-moat"), "{}", err.message);
}

#[test]
fn exec_failure_in_the_child_is_an_error_frame() {
    // Exists but is not executable by anyone: found by path, refused by execve.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let out = run(ExecRequest { argv: vec![script.display().to_string()], ..Default::default() });
    assert_eq!(out.frames, vec!["error"]);
    assert_eq!(out.error.unwrap().kind, "permission_denied");
}

#[test]
fn unknown_user_and_bad_cwd_are_errors() {
    let out = run(ExecRequest { user: Some("no-such-user-moat".into()), ..sh("true") });
    assert_eq!(out.error.map(|e| e.kind), Some("not_found".into()));
    let out = run(ExecRequest { cwd: Some("/no/such/dir".into()), ..sh("true") });
    assert_eq!(out.error.map(|e| e.kind), Some("not_found".into()));
    let out = run(ExecRequest::default());
    assert_eq!(out.error.map(|e| e.kind), Some("bad_request".into()));
}

#[test]
fn runs_as_the_requested_user() {
    for user in ["nobody", "65534"] {
        let out = run(ExecRequest { user: Some(user.into()), ..sh("id -u; id -g; echo $USER $HOME") });
        out.assert_well_formed();
        let text = out.stdout_str();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "65534", "user {user}: {text}");
        assert_eq!(lines[1], "65534", "user {user}: {text}");
        assert!(lines[2].starts_with("nobody "), "user {user}: {text}");
    }
    let out = run(sh("id -u"));
    assert_eq!(out.stdout_str(), "0\n");
}

#[test]
fn env_and_cwd_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().canonicalize().unwrap().display().to_string();
    let req = ExecRequest {
        env: vec![("FOO".into(), "bar baz".into()), ("LANG".into(), "xx".into())],
        cwd: Some(cwd.clone()),
        ..sh("echo \"$FOO\"; echo $LANG; pwd; echo $PATH; echo ${TERM:-none}")
    };
    let out = run(req);
    out.assert_well_formed();
    let expected = format!("bar baz\nxx\n{cwd}\n{}\nnone\n", moat_guest_agent::server::DEFAULT_PATH);
    assert_eq!(out.stdout_str(), expected);
}

#[test]
fn client_disconnect_kills_the_process_group() {
    let mut client = Client::exec(sh("sleep 100 & echo $!; wait"));
    let leader = client.started();
    let sleeper: u32 = match client.recv() {
        Some(Frame::Stdout(b)) => String::from_utf8_lossy(&b).trim().parse().unwrap(),
        other => panic!("expected the sleeper's pid, got {other:?}"),
    };
    assert!(!is_dead(leader) && !is_dead(sleeper));
    drop(client);
    assert!(eventually(5, || is_dead(leader) && is_dead(sleeper)), "processes survived the disconnect");
}

#[test]
fn an_idle_stdin_stream_is_nudged_with_empty_acks_that_back_off() {
    // The nudges work around a vsock backend that may sit on host data until the
    // guest sends something; they must come while stdin is open, and slow down.
    let mut client =
        Client::exec(ExecRequest { argv: vec!["sleep".into(), "2".into()], stdin: true, ..Default::default() });
    client.started();
    let begin = std::time::Instant::now();
    let mut nudges = Vec::new();
    loop {
        match client.recv_raw() {
            Some(Frame::StdinAck(0)) => nudges.push(begin.elapsed()),
            Some(Frame::Exit(_)) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(nudges.len() >= 3, "nudged {} times in 2 s", nudges.len());
    assert!(nudges[0] < std::time::Duration::from_millis(500), "first nudge after {:?}", nudges[0]);
    let gaps: Vec<_> = nudges.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.last() > gaps.first(), "the interval grows: {gaps:?}");
    assert!(nudges.len() < 10, "backing off keeps them few: {}", nudges.len());

    // Without stdin, nothing to nudge for.
    let mut client = Client::exec(ExecRequest { argv: vec!["sleep".into(), "1".into()], ..Default::default() });
    client.started();
    assert!(matches!(client.recv_raw(), Some(Frame::Exit(_))));
}
