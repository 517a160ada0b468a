//! The daemon API answers bad requests with 4xx and a message.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use crate::harness::moat_without_guest;

/// Sends raw HTTP to the daemon; returns (status, body).
fn raw(sock: &std::path::Path, request: &[u8]) -> (u16, String) {
    let mut s = UnixStream::connect(sock).unwrap();
    s.write_all(request).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

fn req(method: &str, path: &str, body: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        .into_bytes()
}

#[test]
fn bad_api_requests_get_4xx_with_a_message() {
    let m = moat_without_guest();
    m.ok(&["daemon", "start"]);
    let sock = m.home().join("daemon.sock");
    let ws = m.workspace("api");
    let cwd = serde_json::to_string(ws.to_str().unwrap()).unwrap();

    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (req("GET", "/v1/nothing", ""), 404, "no API route"),
        (req("GET", "/v1/sandboxes/ghost", ""), 404, "no sandbox named"),
        (req("PUT", "/v1/sandboxes", ""), 405, "not allowed"),
        (req("POST", "/v1/sandboxes", "{not json"), 400, "invalid JSON"),
        (req("POST", "/v1/sandboxes", r#"{"agent":"shell"}"#), 400, "invalid JSON"),
        (req("POST", "/v1/sandboxes", r#"{"agent":"shell","workspace":".","cwd":"relative"}"#), 400, "absolute"),
        (
            req(
                "POST",
                "/v1/sandboxes",
                &format!(r#"{{"agent":"shell","workspace":".","cwd":{cwd},"name":"Bad Name"}}"#),
            ),
            422,
            "invalid sandbox name",
        ),
        (
            req("POST", "/v1/sandboxes", &format!(r#"{{"agent":"robot","workspace":".","cwd":{cwd}}}"#)),
            422,
            "unknown agent",
        ),
        (
            req("POST", "/v1/sandboxes", &format!(r#"{{"agent":"shell","workspace":"/nonexistent/x","cwd":{cwd}}}"#)),
            422,
            "cannot share",
        ),
        (
            req(
                "POST",
                "/v1/sandboxes",
                &format!(r#"{{"agent":"shell","workspace":".","cwd":{cwd},"memory":"lots"}}"#),
            ),
            422,
            "invalid memory",
        ),
        (
            req("POST", "/v1/sandboxes", &format!(r#"{{"agent":"shell","workspace":".","cwd":{cwd},"extra":1}}"#)),
            400,
            "unknown field",
        ),
        (req("POST", "/v1/sandboxes", &"x".repeat(100_000)), 413, "over"),
        (req("POST", "/v1/sandboxes/ghost/start", ""), 404, "no sandbox named"),
    ];
    for (request, want, needle) in cases {
        let (status, body) = raw(&sock, &request);
        assert_eq!(status, want, "{} -> {body}", String::from_utf8_lossy(&request[..request.len().min(120)]));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
        assert!(v["error"]["code"].is_string());
    }
    // Garbage that isn't HTTP at all doesn't take the daemon down.
    let _ = raw(&sock, b"\x00\x01\x02 nonsense\r\n\r\n");
    assert!(m.ok(&["version"]).contains("daemon"));
    let (status, body) = raw(&sock, &req("GET", "/v1/version", ""));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_daemon_from_another_build_is_replaced_on_first_use() {
    let m = moat_without_guest();
    // The "old" build: the same program at another path, as after an upgrade.
    let old = m.scratch.path().join("moat-old");
    std::fs::copy(crate::harness::moat_bin(), &old).unwrap();
    // A thread of this test binary forking at the moment of the copy can hold the
    // new file open for writing until its exec: running it then fails with
    // ETXTBSY for an instant. Retry that, and only that.
    let started = (0..50)
        .find_map(|_| {
            match std::process::Command::new(&old)
                .args(["daemon", "start"])
                .env("MOAT_HOME", m.home())
                .stdin(std::process::Stdio::null())
                .output()
            {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    None
                }
                other => Some(other.unwrap()),
            }
        })
        .expect("the copied binary stayed busy for a second");
    assert!(started.status.success());
    let client = moat_sandbox_core::daemon::DaemonClient::new(m.home().join("daemon.sock"));
    let before = client.version().unwrap();
    assert!(before.build.contains("moat-old"), "{}", before.build);

    m.ok(&["ls"]);
    let after = client.version().unwrap();
    assert_ne!(after.pid, before.pid, "the old daemon was replaced");
    assert!(after.build.contains(crate::harness::moat_bin()), "{}", after.build);
}
