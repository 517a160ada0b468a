//! The way out: every connection from a real guest goes through the host's
//! policy proxy, whatever the guest does with its proxy settings.
//!
//! The "internet" here is a server on the host's loopback. The proxy's
//! resolver maps test names to 127.0.0.1 through `$MOAT_HOME/hosts`, and a
//! loopback address is only reachable because a rule names the host
//! explicitly. Nothing is ever sent to a public or private-range address.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::{moat, stderr, stdout};

/// A tiny HTTP server on the host's loopback that records the request lines it got.
pub struct Upstream {
    pub port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    pub fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut first = String::new();
                    let _ = reader.read_line(&mut first);
                    let mut host = String::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        if line.to_ascii_lowercase().starts_with("host:") {
                            host = line[5..].trim().to_string();
                        }
                    }
                    log.lock().unwrap().push(format!("{} {host}", first.trim()));
                    let body = "hello from upstream\n";
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        Upstream { port, seen }
    }

    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

#[test]
fn every_connection_is_policed_whatever_the_guest_does() {
    let Some(m) = moat() else { return };
    let up = Upstream::start();
    let port = up.port.to_string();
    std::fs::write(m.home().join("hosts"), "127.0.0.1 upstream.test denied.test\n").unwrap();
    m.ok(&["policy", "preset", "balanced"]);
    m.ok(&["policy", "allow", "network", &format!("upstream.test:{port}")]);
    let ws = m.workspace("net");
    m.sandbox("net", &ws, &[]);

    // Through the proxy the environment names, and around it: both are policed and allowed.
    let url = format!("http://upstream.test:{port}");
    assert_eq!(m.sh("net", &format!("curl -sS {url}/explicit")), "hello from upstream\n");
    assert_eq!(m.sh("net", &format!("curl -sS --noproxy '*' {url}/noproxy")), "hello from upstream\n");
    let unset = format!("env -u http_proxy -u HTTP_PROXY -u https_proxy -u HTTPS_PROXY curl -sS {url}/unset");
    assert_eq!(m.sh("net", &unset), "hello from upstream\n");
    let seen = up.seen();
    for path in ["/explicit", "/noproxy", "/unset"] {
        assert!(
            seen.iter()
                .any(|l| l.starts_with(&format!("GET {path} ")) && l.ends_with(&format!("upstream.test:{port}"))),
            "{path} missing from {seen:?}"
        );
    }

    // A name no rule allows: 403 from the proxy naming the host and the fix; NXDOMAIN from DNS.
    let denied = format!("http://denied.test:{port}/");
    let out = m.sh("net", &format!("curl -s -w '\\n%{{http_code}}' {denied}"));
    assert!(out.ends_with("\n403"), "{out}");
    assert!(out.contains("denied.test") && out.contains("moat policy allow network"), "{out}");
    let out = m.run(&["exec", "net", "getent", "hosts", "denied.test"]);
    assert_eq!(out.status.code(), Some(2), "denied names don't resolve: {}", stdout(&out));
    let out = m.run(&["exec", "net", "curl", "-sS", "--noproxy", "*", &denied]);
    assert_eq!(out.status.code(), Some(6), "curl: could not resolve host: {}", stderr(&out));

    // The host's own localhost is not reachable, by name or through the gateway.
    let out = m.sh("net", &format!("curl -s -o /dev/null -w '%{{http_code}}' --noproxy '' -x http://gateway.moat.internal:3128 http://localhost:{port}/"));
    assert_eq!(out, "403");
    let out = m.run(&["exec", "net", "curl", "-sS", "--noproxy", "*", &format!("http://127.0.0.1:{port}/")]);
    assert_eq!(out.status.code(), Some(7), "127.0.0.1 is the guest's own loopback: {}", stderr(&out));

    // ...until the user exposes one host service: `localhost:PORT` is `host.moat.internal` inside.
    let hostsvc = format!("http://host.moat.internal:{port}");
    let code = m.sh("net", &format!("curl -s -o /dev/null -w '%{{http_code}}' {hostsvc}/before"));
    assert_eq!(code, "403");
    m.ok(&["policy", "allow", "network", &format!("localhost:{port}"), "--sandbox", "net"]);
    assert_eq!(m.sh("net", &format!("sleep 1; curl -sS {hostsvc}/hostsvc")), "hello from upstream\n");
    assert_eq!(m.sh("net", &format!("curl -sS --noproxy '*' {hostsvc}/hostsvc-direct")), "hello from upstream\n");
    m.ok(&["policy", "rm", "allow", "network", &format!("localhost:{port}"), "--sandbox", "net"]);

    // Raw TCP to an address no name maps to: accepted by the redirect, refused by the proxy.
    let raw = "exec 3<>/dev/tcp/198.18.255.254/9; echo hi >&3; timeout 5 cat <&3; echo \"read:$?\"";
    assert_eq!(m.ok(&["exec", "net", "bash", "-c", raw]), "read:0\n", "nothing comes back");

    // UDP and ICMP go nowhere, even towards an allowed name.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let script = format!(
        "import socket\n\
         ip = socket.gethostbyname('upstream.test')\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for h in (ip, '198.18.0.1'):\n    s.sendto(b'udp-escape', (h, {udp_port}))\n\
         icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\n\
         icmp.settimeout(1.5)\n\
         icmp.sendto(bytes([8, 0, 0xf7, 0xff, 0, 0, 0, 0]), (ip, 0))\n\
         try:\n    icmp.recv(64)\n    print('icmp-reply')\n\
         except socket.timeout:\n    print('no-icmp-reply')\n"
    );
    let out = m.ok(&["exec", "-u", "root", "net", "python3", "-c", &script]);
    assert_eq!(out, "no-icmp-reply\n");
    assert!(udp.recv(&mut [0u8; 64]).is_err(), "a UDP datagram reached the host");

    // Rules change for the running sandbox at once, without a restart.
    m.ok(&["policy", "deny", "network", "upstream.test", "--sandbox", "net"]);
    let code = m.sh("net", &format!("sleep 1; curl -s -o /dev/null -w '%{{http_code}}' {url}/after-deny"));
    assert_eq!(code, "403");
    m.ok(&["policy", "rm", "deny", "network", "upstream.test", "--sandbox", "net"]);
    // Meanwhile a dashboard follows the log live.
    let mut follow = m
        .cmd()
        .args(["policy", "log", "net", "--follow", "--json", "-n", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let body = m.sh("net", &format!("sleep 1; curl -sS {url}/after-rm"));
    assert_eq!(body, "hello from upstream\n");
    let live = rx.recv_timeout(Duration::from_secs(10)).expect("--follow printed the new connection");
    let _ = follow.kill();
    let _ = follow.wait();
    let live: serde_json::Value = serde_json::from_str(&live).unwrap();
    assert_eq!((live["host"].as_str(), live["verdict"].as_str()), (Some("upstream.test"), Some("allowed")), "{live}");
    assert!(!up.seen().iter().any(|l| l.contains("/after-deny")), "a denied request reached the upstream");

    // The log has both sides, with the deciding rule.
    let log = m.ok(&["policy", "log", "net", "--json", "-n", "200"]);
    let records: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(records.iter().any(|r| r["host"] == "upstream.test" && r["verdict"] == "allowed"), "{log}");
    assert!(records.iter().any(|r| r["host"] == "denied.test" && r["verdict"] == "denied"), "{log}");
    assert!(records.iter().any(|r| r["method"] == "DNS" && r["verdict"] == "denied"), "{log}");
}

/// A TCP echo server on the host's loopback; counts what it echoed.
fn echo_server() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let echoed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&echoed);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let count = Arc::clone(&count);
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = std::io::Read::read(&mut conn, &mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    count.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    (port, echoed)
}

#[test]
fn an_open_connection_is_cut_when_the_policy_denies_it() {
    let Some(m) = moat() else { return };
    let (port, echoed) = echo_server();
    std::fs::write(m.home().join("hosts"), "127.0.0.1 stream.test\n").unwrap();
    m.ok(&["policy", "preset", "deny-all"]);
    // Naming the port lets a protocol other than TLS through.
    m.ok(&["policy", "allow", "network", &format!("stream.test:{port}")]);
    let ws = m.workspace("live");
    m.sandbox("live", &ws, &[]);

    // The guest holds one connection open, echoing every 100 ms, and says how it ended.
    let script = format!(
        "import socket, sys, time\n\
         s = socket.create_connection(('stream.test', {port}), timeout=30)\n\
         n, start = 0, time.time()\n\
         while time.time() - start < 60:\n\
         \x20   try:\n\
         \x20       s.sendall(b'ping')\n\
         \x20       data = s.recv(4)\n\
         \x20   except OSError as e:\n\
         \x20       data = b''\n\
         \x20   if not data:\n\
         \x20       print(f'cut after {{n}} echoes'); sys.exit(0)\n\
         \x20   n += 1\n\
         \x20   time.sleep(0.1)\n\
         print(f'still open after {{n}} echoes')\n"
    );
    let guest = m
        .cmd()
        .args(["exec", "live", "python3", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while echoed.load(std::sync::atomic::Ordering::SeqCst) < 12 {
        assert!(std::time::Instant::now() < deadline, "the guest's connection never echoed");
        std::thread::sleep(Duration::from_millis(50));
    }
    m.ok(&["policy", "deny", "network", "stream.test", "--sandbox", "live"]);
    let out = guest.wait_with_output().unwrap();
    let said = stdout(&out);
    assert!(said.starts_with("cut after "), "the connection was not cut: {said}{}", stderr(&out));
    let after_cut = echoed.load(std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(echoed.load(std::sync::atomic::Ordering::SeqCst), after_cut, "bytes still reach the upstream");

    let log = m.ok(&["policy", "log", "live", "--json", "-n", "50"]);
    let records: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let cut = records
        .iter()
        .find(|r| r["note"].as_str().unwrap_or_default().contains("cut: the policy now denies it"))
        .unwrap_or_else(|| panic!("no record of the cut: {log}"));
    assert_eq!((cut["host"].as_str(), cut["verdict"].as_str()), (Some("stream.test"), Some("denied")), "{cut}");
}
