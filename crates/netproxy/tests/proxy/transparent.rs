//! Transparently redirected connections. The original destination is an
//! address nothing listens on (as the guest's fake DNS answers would be): a
//! connection succeeds only because the proxy resolved the name itself.

use std::net::SocketAddr;

use moat_netproxy::log::{LogMode, LogVerdict};
use moat_netproxy::policy::Preset;
use tokio::io::AsyncWriteExt;

use crate::util::{exchange, get, read_n, read_rest, tls, Fixture, ADDRESS_RULES, API, EVIL, RAW};

/// A loopback address with no server, standing in for a fake DNS answer.
fn fake(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 200], port))
}

#[tokio::test]
async fn tls_goes_to_the_server_name() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, &format!("allow network {API}:*\n{ADDRESS_RULES}"));
    let port = fx.api_tls.port();
    let client = fx.transparent(fake(port), Some(API));
    let mut stream = tls(client, API, &fx.upstream_ca).await.expect("upstream's own certificate");
    let res = exchange(&mut stream, &get("/x", &format!("{API}:{port}"), "")).await;
    assert_eq!(res.body, "echo GET /x 0");
    drop(stream); // The tunnel's record is written when it ends.
    let records = fx.sink.wait_for(1).await;
    assert_eq!(
        (records[0].mode, records[0].verdict, records[0].host.as_str()),
        (LogMode::Transparent, LogVerdict::Allowed, API)
    );
}

#[tokio::test]
async fn a_server_name_that_differs_from_the_hint_is_refused() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, &format!("allow network {API}:*\nallow network {EVIL}:*\n{ADDRESS_RULES}"));
    let client = fx.transparent(fake(fx.evil_tls.port()), Some(API));
    assert!(tls(client, EVIL, &fx.upstream_ca).await.is_err());
    assert_eq!(fx.evil_tls.connections() + fx.api_tls.connections(), 0);
    let records = fx.sink.wait_for(1).await;
    assert_eq!(records[0].verdict, LogVerdict::Denied);
}

#[tokio::test]
async fn http_goes_to_the_host_header() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, &format!("allow network {API}:*\n{ADDRESS_RULES}"));
    let port = fx.api_http.port();
    let res = exchange(&mut fx.transparent(fake(port), Some(API)), &get("/p", &format!("{API}:{port}"), "")).await;
    assert_eq!(res.body, "echo GET /p 0");
    let res = exchange(&mut fx.transparent(fake(port), Some(API)), &get("/p", &format!("{EVIL}:{port}"), "")).await;
    assert_eq!(res.status, 400, "a Host that differs from the hint");
    fx.rules(Preset::DenyAll, ADDRESS_RULES);
    let res = exchange(&mut fx.transparent(fake(port), None), &get("/p", &format!("{API}:{port}"), "")).await;
    assert_eq!(res.status, 403);
    assert_eq!(fx.api_http.requests().len(), 1);
}

#[tokio::test]
async fn other_protocols_go_to_the_hint_with_a_port_rule() {
    let fx = Fixture::start().await;
    let port = fx.raw.port();
    fx.rules(Preset::DenyAll, &format!("allow network {RAW}:{port}\n{ADDRESS_RULES}"));
    let mut client = fx.transparent(fake(port), Some(RAW));
    client.write_all(b"\x00\x01binary").await.expect("write");
    assert_eq!(read_n(&mut client, 8).await, b"\x00\x01binary");
    // A wildcard port is not enough for a protocol the proxy cannot check.
    fx.rules(Preset::DenyAll, &format!("allow network {RAW}:*\n{ADDRESS_RULES}"));
    let mut client = fx.transparent(fake(port), Some(RAW));
    client.write_all(b"\x00\x01binary").await.expect("write");
    assert!(read_rest(&mut client).await.is_empty());
}

#[tokio::test]
async fn a_client_that_waits_for_the_server_gets_a_clean_tunnel() {
    let fx = Fixture::start().await;
    let port = fx.raw.port();
    fx.rules(Preset::DenyAll, &format!("allow network {RAW}:{port}\n{ADDRESS_RULES}"));
    let mut client = fx.transparent(fake(port), Some(RAW));
    // Silent past the first-byte timeout (300 ms here), as in server-first protocols.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    client.write_all(b"late").await.expect("write");
    assert_eq!(read_n(&mut client, 4).await, b"late");
    assert_eq!(fx.raw.raw(), b"late");
}

#[tokio::test]
async fn without_a_name_the_address_decides() {
    let fx = Fixture::start().await;
    let dst = fx.raw.addr;
    fx.rules(Preset::DenyAll, "allow network 127.0.0.4");
    let mut client = fx.transparent(dst, None);
    client.write_all(b"raw").await.expect("write");
    assert_eq!(read_n(&mut client, 3).await, b"raw");
    fx.rules(Preset::AllowAll, "");
    let mut client = fx.transparent(dst, None);
    client.write_all(b"raw").await.expect("write");
    assert!(read_rest(&mut client).await.is_empty(), "loopback needs a rule naming it");
}
