//! What is already open stays under the live policy: tunnels, WebSockets and
//! intercepted connections are cut within a second of a deny, a kept
//! upstream connection is not reused after one, idle tunnels end, and one
//! proxy serves a bounded number of connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use moat_netproxy::log::{ConnectionRecord, LogMode, LogVerdict};
use moat_netproxy::policy::Preset;
use moat_netproxy::proxy::{Headers, Intercept};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::util::{connect, read_n, read_one, read_response, tls, Fixture, ADDRESS_RULES, API, RAW};

/// How soon an open connection must be cut after a deny.
const CUT_WITHIN: Duration = Duration::from_secs(1);

/// Sends `ping` through an echoing connection and expects it back.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    stream.write_all(b"ping").await.expect("write");
    assert_eq!(read_n(stream, 4).await, b"ping");
}

/// Asserts that the proxy closes `stream` within [`CUT_WITHIN`].
async fn assert_cut<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(CUT_WITHIN, stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection is still open {CUT_WITHIN:?} after the deny");
}

/// Waits for the record whose note says it was cut.
async fn cut_record(fx: &Fixture) -> ConnectionRecord {
    for n in 1..=8 {
        let records = fx.sink.wait_for(n).await;
        if let Some(r) = records.iter().find(|r| r.note.as_deref().unwrap_or_default().contains("cut: ")) {
            return r.clone();
        }
    }
    panic!("no record says the connection was cut: {:#?}", fx.sink.wait_for(0).await);
}

/// The raw server's rules: its port named (it speaks no TLS), and its address.
fn raw_rules(fx: &Fixture) -> String {
    format!("allow network {RAW}:{}\n{ADDRESS_RULES}", fx.raw.port())
}

/// A CONNECT tunnel to the raw echo server, echoing.
async fn raw_tunnel(fx: &Fixture) -> UnixStream {
    let mut client = fx.client();
    assert_eq!(connect(&mut client, &format!("{RAW}:{}", fx.raw.port())).await.status, 200);
    echo(&mut client).await;
    client
}

#[tokio::test]
async fn an_open_tunnel_is_cut_when_the_policy_denies_its_name() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, &raw_rules(&fx));
    let mut client = raw_tunnel(&fx).await;
    // An update that still allows it changes nothing.
    fx.rules(Preset::DenyAll, &format!("{}\nallow network example.org", raw_rules(&fx)));
    echo(&mut client).await;

    fx.rules(Preset::DenyAll, &format!("{}\ndeny network {RAW}", raw_rules(&fx)));
    assert_cut(&mut client).await;
    let record = cut_record(&fx).await;
    assert_eq!((record.verdict, record.mode, record.host.as_str()), (LogVerdict::Denied, LogMode::Tunnel, RAW));
    let note = record.note.unwrap_or_default();
    assert!(note.contains(&format!("cut: the policy now denies it (rule 'deny network {RAW}')")), "{note}");
    assert!(record.bytes_up >= 8 && record.bytes_down >= 8, "the bytes before the cut are counted: {note}");
}

#[tokio::test]
async fn an_open_tunnel_is_cut_when_the_policy_denies_the_address_it_reached() {
    let fx = Fixture::start().await;
    let wildcard = format!("allow network *.example.test:{}", fx.raw.port());
    fx.rules(Preset::DenyAll, &format!("{wildcard}\n{ADDRESS_RULES}"));
    let mut client = raw_tunnel(&fx).await;
    // The name is still allowed; the loopback address it resolved to no longer
    // is (a wildcard never opens a special address, only a rule naming it).
    fx.rules(Preset::DenyAll, &wildcard);
    assert_cut(&mut client).await;
    let record = cut_record(&fx).await;
    assert_eq!(record.verdict, LogVerdict::Denied);
    assert!(record.rule.as_deref().unwrap_or_default().contains("127.0.0.4 is a loopback address"), "{record:?}");
}

#[tokio::test]
async fn a_transparent_tunnel_is_cut_when_the_policy_denies_it() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, &raw_rules(&fx));
    let fake = SocketAddr::from(([127, 0, 0, 200], fx.raw.port()));
    let mut client = fx.transparent(fake, Some(RAW));
    echo(&mut client).await;
    fx.rules(Preset::DenyAll, ADDRESS_RULES);
    assert_cut(&mut client).await;
    let record = cut_record(&fx).await;
    assert_eq!((record.verdict, record.mode), (LogVerdict::Denied, LogMode::Transparent));
}

#[tokio::test]
async fn an_open_websocket_is_cut_when_the_policy_denies_it() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, &format!("allow network {API}:*\n{ADDRESS_RULES}"));
    let host = format!("{API}:{}", fx.ws.port());
    let mut client = fx.client();
    let upgrade = format!(
        "GET http://{host}/chat HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    client.write_all(upgrade.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.extend(read_n(&mut client, 1).await);
    }
    assert!(head.starts_with(b"HTTP/1.1 101 "), "{}", String::from_utf8_lossy(&head));
    echo(&mut client).await;

    fx.rules(Preset::DenyAll, ADDRESS_RULES);
    assert_cut(&mut client).await;
    let record = cut_record(&fx).await;
    assert_eq!((record.verdict, record.host.as_str()), (LogVerdict::Denied, API));
}

/// Intercepts every connection to the API, rewriting nothing.
struct InterceptApi;

impl Intercept for InterceptApi {
    fn wants(&self, _sandbox: &str, host: &str, _port: u16) -> bool {
        host == API
    }

    fn rewrite(&self, _sandbox: &str, _host: &str, _headers: &mut Headers) -> Option<String> {
        None
    }
}

#[tokio::test]
async fn an_intercepted_connection_is_cut_when_the_policy_denies_it() {
    let fx = Fixture::with_intercept(Some(Arc::new(InterceptApi))).await;
    fx.rules(Preset::DenyAll, &format!("allow network {API}:*\n{ADDRESS_RULES}"));
    let mut client = fx.client();
    let target = format!("{API}:{}", fx.api_tls.port());
    assert_eq!(connect(&mut client, &target).await.status, 200);
    let mut stream = tls(client, API, fx.proxy.ca_certificate_pem()).await.expect("our certificate");
    let request = format!("GET /kept HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    assert_eq!(read_one(&mut stream).await.body, "echo GET /kept 0");

    fx.rules(Preset::DenyAll, ADDRESS_RULES);
    assert_cut(&mut stream).await;
    let record = cut_record(&fx).await;
    assert_eq!((record.verdict, record.mode), (LogVerdict::Denied, LogMode::Intercept));
}

#[tokio::test]
async fn a_kept_upstream_connection_is_not_reused_after_its_address_is_denied() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, &format!("allow network *.example.test:*\n{ADDRESS_RULES}"));
    let host = format!("{API}:{}", fx.api_http.port());
    let mut client = fx.client();
    let request = |path: &str| format!("GET http://{host}{path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    client.write_all(request("/one").as_bytes()).await.expect("write");
    assert_eq!(read_one(&mut client).await.body, "echo GET /one 0");

    // The name stays allowed; the address the kept connection reached does not.
    fx.rules(Preset::DenyAll, "allow network *.example.test:*");
    client.write_all(request("/two").as_bytes()).await.expect("write");
    let res = read_response(&mut client).await;
    assert_eq!(res.status, 403, "{res:?}");
    assert!(res.body.contains("127.0.0.2 is a loopback address"), "{}", res.body);
    assert_eq!(fx.api_http.requests().len(), 1, "the second request went out over the kept connection");
}

#[tokio::test]
async fn an_idle_tunnel_times_out_and_a_busy_one_does_not() {
    let idle = Duration::from_millis(400);
    let fx = Fixture::with(None, |limits| limits.tunnel_idle_timeout = idle).await;
    fx.rules(Preset::DenyAll, &raw_rules(&fx));
    let mut client = raw_tunnel(&fx).await;
    for _ in 0..6 {
        tokio::time::sleep(idle / 4).await;
        echo(&mut client).await;
    }
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(idle * 5, client.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle tunnel is still open");
    let record = cut_record(&fx).await;
    assert_eq!(record.verdict, LogVerdict::Allowed);
    assert!(record.note.unwrap_or_default().contains("cut: idle for"));
}

#[tokio::test]
async fn connections_past_the_limit_are_refused_and_logged_once() {
    let fx = Fixture::with(None, |limits| limits.max_connections = 2).await;
    fx.rules(Preset::DenyAll, &raw_rules(&fx));
    let first = raw_tunnel(&fx).await;
    let _second = raw_tunnel(&fx).await;

    let mut explicit = fx.client();
    let res = read_response(&mut explicit).await;
    assert_eq!(res.status, 503, "{res:?}");
    assert!(res.body.contains("2 connections open"), "{}", res.body);
    let fake = SocketAddr::from(([127, 0, 0, 200], fx.raw.port()));
    let mut transparent = fx.transparent(fake, Some(RAW));
    let _ = transparent.write_all(b"ping").await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), transparent.read_to_end(&mut rest)).await.expect("closed");
    assert!(rest.is_empty(), "a refused transparent connection is closed unanswered");
    let refusals = |records: &[ConnectionRecord]| {
        records.iter().filter(|r| r.note.as_deref().unwrap_or_default().contains("refused")).count()
    };
    assert_eq!(refusals(&fx.sink.wait_for(1).await), 1, "two refusals, one record");

    // A slot frees when a connection ends.
    drop(first);
    fx.sink.wait_for(2).await;
    raw_tunnel(&fx).await;
    assert_eq!(fx.raw.connections(), 3);
}

#[tokio::test]
async fn a_reserved_slot_counts_before_anything_is_read() {
    let fx = Fixture::with(None, |limits| limits.max_connections = 1).await;
    // As the supervisor does for a redirected connection, before reading the line naming its destination.
    let held = fx.proxy.reserve(crate::util::SANDBOX).expect("a slot");
    assert!(fx.proxy.reserve(crate::util::SANDBOX).is_none(), "the only slot is taken though nothing was read");
    assert_eq!(read_response(&mut fx.client()).await.status, 503);
    drop(held);
    assert!(fx.proxy.reserve(crate::util::SANDBOX).is_some(), "freed when dropped");
}
