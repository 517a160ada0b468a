//! Terminal execs: size, resize, Ctrl-C, signals to the foreground group.

use moat_proto::exec::{ExecRequest, ExitStatus, Frame, WinSize};

use crate::harness::{run, Client};

fn tty_sh(script: &str, rows: u16, cols: u16) -> ExecRequest {
    ExecRequest {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        tty: Some(WinSize { rows, cols }),
        ..Default::default()
    }
}

/// Reads Stdout frames until the accumulated text contains `needle`.
fn read_until(client: &mut Client, text: &mut String, needle: &str) {
    while !text.contains(needle) {
        match client.recv() {
            Some(Frame::Stdout(b)) => text.push_str(&String::from_utf8_lossy(&b)),
            other => panic!("waiting for {needle:?} after {text:?}, got {other:?}"),
        }
    }
}

#[test]
fn terminal_has_the_requested_size_and_term() {
    let out = run(tty_sh("stty size; echo $TERM; [ -t 0 ] && [ -t 2 ] && echo tty", 33, 101));
    out.assert_well_formed();
    assert_eq!(out.exit, Some(ExitStatus::Code(0)));
    assert!(out.stderr.is_empty());
    assert_eq!(out.stdout_str(), "33 101\r\nxterm-256color\r\ntty\r\n");
}

#[test]
fn resize_changes_the_size() {
    let mut client = Client::exec(tty_sh("stty size; read line; stty size", 24, 80));
    client.started();
    let mut text = String::new();
    read_until(&mut client, &mut text, "24 80");
    client.send(&Frame::Resize(WinSize { rows: 50, cols: 132 }));
    client.send(&Frame::Stdin(b"\n".to_vec()));
    let out = client.finish();
    assert_eq!(out.exit, Some(ExitStatus::Code(0)));
    assert!(out.stdout_str().contains("50 132"), "{:?}", out.stdout_str());
}

#[test]
fn ctrl_c_byte_interrupts_through_the_terminal() {
    let mut client = Client::exec(ExecRequest {
        argv: vec!["sleep".into(), "100".into()],
        tty: Some(WinSize { rows: 24, cols: 80 }),
        ..Default::default()
    });
    client.started();
    client.send(&Frame::Stdin(vec![0x03]));
    assert_eq!(client.finish().exit, Some(ExitStatus::Signal(2)));
}

#[test]
fn signal_goes_to_the_foreground_group() {
    // The shell stays in the background process group? No: with job control off,
    // everything runs in the session leader's group; SIGINT ends `sleep`, and sh
    // (non-interactive) dies of it too.
    let mut client = Client::exec(tty_sh("sleep 100; echo after", 24, 80));
    client.started();
    std::thread::sleep(std::time::Duration::from_millis(200));
    client.send(&Frame::Signal(2));
    let out = client.finish();
    assert_eq!(out.exit, Some(ExitStatus::Signal(2)));
    assert!(!out.stdout_str().contains("after"));
}

#[test]
fn stdin_eof_is_ignored_with_a_terminal() {
    let mut client = Client::exec(tty_sh("read line; echo got:$line", 24, 80));
    client.started();
    client.send(&Frame::StdinEof);
    client.send(&Frame::Stdin(b"hello\n".to_vec()));
    let out = client.finish();
    assert_eq!(out.exit, Some(ExitStatus::Code(0)));
    assert!(out.stdout_str().contains("got:hello"), "{:?}", out.stdout_str());
}
