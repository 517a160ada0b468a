//! WebSocket upgrades over plain HTTP: decided and logged like any request,
//! then relayed both ways untouched. Other protocol switches are refused.

use moat_netproxy::log::LogVerdict;
use moat_netproxy::policy::Preset;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::{read_n, read_response, Fixture, ADDRESS_RULES, API, EVIL};

fn upgrade(target: &str, host: &str, protocol: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive, Upgrade\r\nUpgrade: {protocol}\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Reads a response head byte by byte, leaving what follows in the stream.
async fn read_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.extend(read_n(stream, 1).await);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Sends frames-to-be both ways through an upgraded connection and closes it.
async fn echo_through<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: &mut S) {
    for message in [&b"\x81\x05hello"[..], &[0x82, 0x7e, 0x10, 0x00], &[7u8; 4096][..]] {
        stream.write_all(message).await.expect("write");
        assert_eq!(read_n(stream, message.len()).await, message);
    }
    stream.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test]
async fn an_allowed_websocket_is_upgraded_and_relayed_both_ways() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, &format!("allow network {API}:*\n{ADDRESS_RULES}"));
    let host = format!("{API}:{}", fx.ws.port());
    let mut client = fx.client();
    client.write_all(upgrade(&format!("http://{host}/chat"), &host, "websocket").as_bytes()).await.unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket") && lower.contains("connection: upgrade"), "{head}");
    assert!(lower.contains("sec-websocket-accept: test"), "{head}");
    echo_through(&mut client).await;

    let seen = String::from_utf8_lossy(&fx.ws.raw()).to_ascii_lowercase();
    assert!(seen.starts_with("get /chat http/1.1\r\n"), "{seen}");
    assert!(seen.contains("upgrade: websocket") && seen.contains("connection: upgrade"), "{seen}");
    assert!(seen.contains("sec-websocket-key: "), "{seen}");
    let records = fx.sink.wait_for(1).await;
    assert_eq!((records[0].verdict, records[0].host.as_str()), (LogVerdict::Allowed, API));
    assert!(records[0].bytes_down >= 4096 + 6 + 4, "the relayed frames are counted: {:?}", records[0]);
    assert!(records[0].note.as_deref().unwrap_or_default().contains("WebSocket"), "{:?}", records[0]);
}

#[tokio::test]
async fn a_transparent_websocket_is_upgraded_too() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, &format!("allow network {API}:*\n{ADDRESS_RULES}"));
    let host = format!("{API}:{}", fx.ws.port());
    let mut client = fx.transparent(fx.ws.addr, Some(API));
    client.write_all(upgrade("/live", &host, "websocket").as_bytes()).await.unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    echo_through(&mut client).await;
}

#[tokio::test]
async fn a_denied_websocket_gets_403_and_no_connection() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, &format!("allow network {API}:*\n{ADDRESS_RULES}"));
    let host = format!("{EVIL}:{}", fx.ws.port());
    let mut client = fx.client();
    client.write_all(upgrade(&format!("http://{host}/chat"), &host, "websocket").as_bytes()).await.unwrap();
    let res = read_response(&mut client).await;
    assert_eq!(res.status, 403, "{res:?}");
    assert_eq!(fx.ws.connections(), 0);
}

#[tokio::test]
async fn other_protocol_switches_are_not_asked_for_and_not_relayed() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, &format!("allow network {API}:*\n{ADDRESS_RULES}"));
    let host = format!("{API}:{}", fx.ws.port());
    let mut client = fx.client();
    client.write_all(upgrade(&format!("http://{host}/"), &host, "h2c").as_bytes()).await.unwrap();
    let res = read_response(&mut client).await;
    assert_eq!(res.status, 502, "{res:?}");
    let seen = String::from_utf8_lossy(&fx.ws.raw()).to_ascii_lowercase();
    assert!(!seen.contains("upgrade:"), "the h2c upgrade was passed on: {seen}");
}
