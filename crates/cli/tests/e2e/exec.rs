//! The exec path: codes, signals, bytes, terminals.

use std::io::Write;
use std::process::Stdio;

use moat_sandbox_core::agent::{AgentConn, ExecRequest, ExitStatus, WinSize};

use crate::harness::{moat, stderr, stdout};

#[test]
fn exit_codes_and_signals_propagate() {
    let Some(m) = moat() else { return };
    let ws = m.workspace("codes");
    // `run … -- CMD` creates, boots, runs CMD and exits with its code.
    let out = m
        .cmd()
        .current_dir(&ws)
        .args(["run", "--name", "codes", "-m", "1g", "shell", ".", "--", "sh", "-c", "echo out; echo err >&2; exit 7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "out\n");
    assert!(stderr(&out).contains("err\n"));

    let out = m.run(&["exec", "codes", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.status.code(), Some(128 + 15), "death by SIGTERM reads as 143");
    let out = m.run(&["exec", "codes", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(out.status.code(), Some(128 + 9));

    // A missing program is Moat's error, with a message, not a silent 127.
    let out = m.run(&["exec", "codes", "no-such-program-xyz"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no-such-program-xyz"), "{}", stderr(&out));

    // Ctrl-C on `moat exec` reaches the guest process as SIGINT.
    let child = m.cmd().args(["exec", "codes", "sleep", "60"]).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(128 + 2), "sleep should die of SIGINT");

    // User, env and workdir are honoured; the default user is `agent` (uid 1000) with sudo.
    assert_eq!(m.sh("codes", "id -un; id -u"), "agent\n1000\n");
    assert_eq!(m.ok(&["exec", "-u", "root", "codes", "id", "-u"]), "0\n");
    assert_eq!(m.ok(&["exec", "codes", "sudo", "-n", "id", "-u"]), "0\n");
    assert_eq!(
        m.ok(&["exec", "-e", "GREETING=hi there", "-w", "/tmp", "codes", "sh", "-c", "echo $GREETING; pwd"]),
        "hi there\n/tmp\n"
    );
    assert_eq!(m.sh("codes", "pwd"), format!("{}\n", ws.display()), "exec starts in the workspace");
    assert_eq!(m.sh("codes", "hostname"), "codes\n", "hostname is the sandbox name");
}

#[test]
fn stdin_and_stdout_are_binary_safe_and_large_streams_arrive_intact() {
    let Some(m) = moat() else { return };
    let ws = m.workspace("bytes");
    m.sandbox("bytes", &ws, &[]);

    // Every byte value, many times, through `cat` and back.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).chain(0..=255).collect();
    let mut child =
        m.cmd().args(["exec", "-i", "bytes", "cat"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feed = data.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&feed));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    assert!(out.stdout == data, "cat returned {} bytes, sent {}", out.stdout.len(), data.len());

    // 100 MB from the guest: the bytes the host receives hash like the ones the guest sent.
    let out = m.run(&[
        "exec",
        "bytes",
        "sh",
        "-c",
        "head -c 100000000 /dev/urandom | tee /tmp/big | sha256sum > /tmp/big.sum",
    ]);
    assert!(out.status.success());
    let out = m.run(&["exec", "bytes", "cat", "/tmp/big"]);
    assert_eq!(out.stdout.len(), 100_000_000);
    let host_sum = sha256_hex(&out.stdout);
    let guest_sum = m.sh("bytes", "cut -d' ' -f1 /tmp/big.sum");
    assert_eq!(guest_sum.trim(), host_sum);

    // 100 MB into the guest.
    let big: Vec<u8> = (0..100_000_000u32).map(|i| (i.wrapping_mul(2_246_822_519) >> 7) as u8).collect();
    let want = sha256_hex(&big);
    let mut child = m
        .cmd()
        .args(["exec", "-i", "bytes", "sha256sum"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&big));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(stdout(&out).split_whitespace().next(), Some(want.as_str()));
}

#[test]
fn a_guest_write_of_exactly_32_kib_plus_one_does_not_wedge_the_channel() {
    // The vsock backend wedges on single guest writes over 32 KiB; the agent must split.
    let Some(m) = moat() else { return };
    let ws = m.workspace("edge");
    m.sandbox("edge", &ws, &[]);
    for n in [32 * 1024, 32 * 1024 + 1, 1 << 20] {
        let out = m.run(&["exec", "edge", "python3", "-c", &format!("import os; os.write(1, b'x' * {n})")]);
        assert_eq!(out.stdout.len(), n, "{}", stderr(&out));
    }
    assert_eq!(m.sh("edge", "echo still-alive"), "still-alive\n");
}

#[test]
fn terminals_have_the_requested_size_and_follow_resizes() {
    let Some(m) = moat() else { return };
    let ws = m.workspace("tty");
    m.sandbox("tty", &ws, &[]);
    let info: serde_json::Value = m.status("tty");
    let vsock = info["vsock_socket"].as_str().unwrap().to_string();

    let req = ExecRequest {
        argv: vec!["sh".into(), "-c".into(), "stty size; read line; stty size; tty".into()],
        tty: Some(WinSize { rows: 24, cols: 80 }),
        stdin: true,
        ..Default::default()
    };
    let session = AgentConn::connect(vsock.as_ref()).unwrap().exec(&req).unwrap();
    let input = session.input();
    let mut out = Vec::new();
    let mut resized = false;
    let status = session
        .wait(
            |b| {
                out.extend_from_slice(b);
                if !resized && String::from_utf8_lossy(&out).contains("24 80") {
                    resized = true;
                    input.resize(WinSize { rows: 50, cols: 132 }).unwrap();
                    input.stdin(b"go\r").unwrap();
                }
            },
            |_| {},
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(status, ExitStatus::Code(0), "{text}");
    assert!(text.contains("24 80") && text.contains("50 132"), "{text}");
    assert!(text.contains("/dev/pts/"), "{text}");

    // Ctrl-C typed into the terminal interrupts the foreground process.
    let req = ExecRequest {
        argv: vec!["sleep".into(), "60".into()],
        tty: Some(WinSize { rows: 24, cols: 80 }),
        stdin: true,
        ..Default::default()
    };
    let session = AgentConn::connect(vsock.as_ref()).unwrap().exec(&req).unwrap();
    let input = session.input();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let _ = input.stdin(&[0x03]);
    });
    assert_eq!(session.wait(|_| {}, |_| {}).unwrap(), ExitStatus::Signal(2));
}

#[test]
fn many_execs_run_concurrently() {
    let Some(m) = moat() else { return };
    let ws = m.workspace("many");
    m.sandbox("many", &ws, &[]);
    let children: Vec<_> = (0..8)
        .map(|i| {
            m.cmd()
                .args(["exec", "many", "sh", "-c", &format!("sleep 1; echo {i}")])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert_eq!(stdout(&out), format!("{i}\n"));
    }

    // `exec -d` returns at once and the command lives on after the exec connection closes.
    let begin = std::time::Instant::now();
    m.ok(&["exec", "-d", "many", "sh", "-c", "sleep 2; echo detached > /tmp/d"]);
    assert!(begin.elapsed() < std::time::Duration::from_secs(2), "exec -d waited for the command");
    assert!(!m.run(&["exec", "many", "test", "-e", "/tmp/d"]).status.success(), "not finished yet");
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(m.sh("many", "cat /tmp/d"), "detached\n");
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}
