//! `moat-netproxy` embedded on its own, as the `proxy` example does it: a
//! real listener, a real upstream on loopback, allow and deny by rule, and a
//! record of each decision. No VM, no sandbox-core.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use moat_examples::standalone_proxy::{self, Options};
use moat_netproxy::log::{ConnectionRecord, ConnectionSink, LogVerdict};
use moat_netproxy::Preset;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Records(Mutex<Vec<ConnectionRecord>>);

impl ConnectionSink for Records {
    fn record(&self, record: ConnectionRecord) {
        self.0.lock().unwrap().push(record);
    }
}

/// Answers every request with `hi` and closes.
async fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && tcp.read(&mut byte).await.unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi").await;
            });
        }
    });
    port
}

async fn get(proxy: u16, url: &str, host: &str) -> String {
    let mut tcp = TcpStream::connect(("127.0.0.1", proxy)).await.unwrap();
    let request = format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut out)).await.unwrap().unwrap();
    out
}

#[tokio::test]
async fn the_proxy_alone_allows_by_rule_denies_the_rest_and_records_both() {
    let port = upstream().await;
    let options = Options {
        preset: Preset::DenyAll,
        rules: vec![format!("allow network up.test:{port}").parse().unwrap()],
        hosts: "127.0.0.1 up.test other.test\n".into(),
    };
    let records = Arc::new(Records::default());
    let policy = standalone_proxy::policy(&options);
    let proxy = standalone_proxy::proxy(Arc::clone(&policy), &options, records.clone()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    tokio::spawn(standalone_proxy::serve(listener, proxy, "tool"));

    let allowed = get(proxy_port, &format!("http://up.test:{port}/"), &format!("up.test:{port}")).await;
    assert!(allowed.starts_with("HTTP/1.1 200") && allowed.ends_with("hi"), "{allowed}");
    let denied = get(proxy_port, &format!("http://other.test:{port}/"), &format!("other.test:{port}")).await;
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    assert!(denied.contains("moat policy allow network other.test"), "the 403 says how to allow it: {denied}");

    // The policy is live: an embedder changes it without restarting anything.
    let rules = [format!("allow network up.test:{port}"), format!("allow network other.test:{port}")];
    policy.update(Preset::DenyAll, &rules.map(|r| r.parse().unwrap()));
    let now = get(proxy_port, &format!("http://other.test:{port}/"), &format!("other.test:{port}")).await;
    assert!(now.starts_with("HTTP/1.1 200"), "{now}");

    let seen: Vec<(LogVerdict, String)> =
        records.0.lock().unwrap().iter().map(|r| (r.verdict, r.host.clone())).collect();
    assert_eq!(
        seen,
        [
            (LogVerdict::Allowed, "up.test".to_string()),
            (LogVerdict::Denied, "other.test".to_string()),
            (LogVerdict::Allowed, "other.test".to_string())
        ]
    );
    assert!(records.0.lock().unwrap().iter().all(|r| r.sandbox == "tool"));
}
