//! CONNECT tunnels: TLS passes untouched; the SNI must name the CONNECT
//! host; other protocols need a rule naming the port.

use moat_netproxy::log::LogVerdict;
use moat_netproxy::policy::Preset;
use tokio::io::AsyncWriteExt;

use crate::util::{
    client_hello, connect, exchange, get, read_n, read_response, read_rest, tls, Fixture, ADDRESS_RULES, API, EVIL, RAW,
};

#[tokio::test]
async fn tls_is_tunnelled_untouched() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, &format!("allow network {API}:*\n{ADDRESS_RULES}"));
    let mut client = fx.client();
    let target = format!("{API}:{}", fx.api_tls.port());
    assert_eq!(connect(&mut client, &target).await.status, 200);
    // The client trusts only the upstream's CA: the proxy's certificate would fail.
    let mut stream = tls(client, API, &fx.upstream_ca).await.expect("upstream's own certificate");
    let res = exchange(&mut stream, &get("/t", &target, "")).await;
    assert_eq!(res.body, "echo GET /t 0");
}

#[tokio::test]
async fn denied_connect_gets_a_403() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, ADDRESS_RULES);
    let mut client = fx.client();
    let target = format!("{EVIL}:{}", fx.evil_tls.port());
    let res = connect(&mut client, &target).await;
    assert_eq!(res.status, 403);
    assert!(res.body.contains("preset deny-all denies by default"), "{}", res.body);
    assert!(res.body.contains(&format!("moat policy allow network {target}")), "{}", res.body);
    assert_eq!(fx.evil_tls.connections(), 0);
}

#[tokio::test]
async fn a_port_the_rule_does_not_name_is_denied() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, &format!("allow network {API}\n{ADDRESS_RULES}"));
    let mut client = fx.client();
    let res = connect(&mut client, &format!("{API}:{}", fx.api_tls.port())).await;
    assert_eq!(res.status, 403);
    assert_eq!(fx.api_tls.connections(), 0);
}

#[tokio::test]
async fn domain_fronting_is_refused() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, &format!("allow network {API}:*\n{ADDRESS_RULES}"));
    let mut client = fx.client();
    assert_eq!(connect(&mut client, &format!("{API}:{}", fx.api_tls.port())).await.status, 200);
    let err = tls(client, EVIL, &fx.upstream_ca).await.expect_err("SNI differs from the CONNECT host");
    assert!(err.to_string().to_lowercase().contains("access"), "{err}");
    let records = fx.sink.wait_for(1).await;
    assert_eq!(records[0].verdict, LogVerdict::Denied);
    assert!(records[0].note.as_deref().unwrap_or("").contains("domain fronting"), "{records:?}");
    assert!(fx.api_tls.requests().is_empty());
    assert_eq!(fx.evil_tls.connections(), 0);
}

#[tokio::test]
async fn tls_without_sni_and_other_protocols_are_refused() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, &format!("allow network {API}:*\nallow network {RAW}:*\n{ADDRESS_RULES}"));
    let mut client = fx.client();
    assert_eq!(connect(&mut client, &format!("{API}:{}", fx.api_tls.port())).await.status, 200);
    // An IP server name makes rustls send no SNI.
    assert!(tls(client, "127.0.0.2", &fx.upstream_ca).await.is_err());
    let mut client = fx.client();
    assert_eq!(connect(&mut client, &format!("{RAW}:{}", fx.raw.port())).await.status, 200);
    client.write_all(b"ping").await.expect("write");
    assert!(read_rest(&mut client).await.is_empty());
    let records = fx.sink.wait_for(2).await;
    let notes: Vec<&str> = records.iter().map(|r| r.note.as_deref().unwrap_or("")).collect();
    assert!(notes.iter().any(|n| n.contains("without a server name")), "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("not TLS")), "{notes:?}");
    assert!(fx.raw.raw().is_empty());
}

#[tokio::test]
async fn a_rule_naming_the_port_allows_other_protocols() {
    let fx = Fixture::start().await;
    let port = fx.raw.port();
    fx.rules(Preset::DenyAll, &format!("allow network {RAW}:{port}\n{ADDRESS_RULES}"));
    let mut client = fx.client();
    assert_eq!(connect(&mut client, &format!("{RAW}:{port}")).await.status, 200);
    client.write_all(b"ssh-2.0-test\r\n").await.expect("write");
    assert_eq!(read_n(&mut client, 14).await, b"ssh-2.0-test\r\n");
}

#[tokio::test]
async fn a_connect_chained_inside_a_tunnel_reaches_only_the_tunnel_host() {
    let fx = Fixture::start().await;
    let port = fx.raw.port();
    fx.rules(Preset::DenyAll, &format!("allow network {RAW}:{port}\n{ADDRESS_RULES}"));
    let mut client = fx.client();
    assert_eq!(connect(&mut client, &format!("{RAW}:{port}")).await.status, 200);
    // The guest speaks CONNECT again inside the tunnel, as if the allowed
    // host were a relay. The bytes go to that host, not through the proxy.
    let evil = format!("{EVIL}:{}", fx.evil_tls.port());
    client.write_all(format!("CONNECT {evil} HTTP/1.1\r\nHost: {evil}\r\n\r\n").as_bytes()).await.expect("write");
    let res = read_response(&mut client).await;
    assert_eq!(res.body, "ok", "the relay host answered");
    assert!(String::from_utf8_lossy(&fx.raw.raw()).starts_with(&format!("CONNECT {evil}")));
    assert_eq!(fx.evil_tls.connections() + fx.evil_http.connections(), 0);
    drop(client); // The tunnel's record is written when it ends.
    let records = fx.sink.wait_for(1).await;
    assert!(records.iter().all(|r| r.host == RAW), "{records:?}");
}

#[tokio::test]
async fn an_ip_literal_tunnel_is_decided_on_the_address() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, "allow network 127.0.0.4");
    let mut client = fx.client();
    assert_eq!(connect(&mut client, &format!("127.0.0.4:{}", fx.raw.port())).await.status, 200);
    client.write_all(b"hi").await.expect("write");
    assert_eq!(read_n(&mut client, 2).await, b"hi");
    let mut client = fx.client();
    assert_eq!(connect(&mut client, &format!("127.0.0.3:{}", fx.evil_tls.port())).await.status, 403);
}

#[tokio::test]
async fn a_hello_retry_for_the_same_host_completes() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, &format!("allow network {API}:*\n{ADDRESS_RULES}"));
    let mut client = fx.client();
    let target = format!("{API}:{}", fx.retry_tls.port());
    assert_eq!(connect(&mut client, &target).await.status, 200);
    // rustls guesses X25519; the server takes only P-256 and asks again.
    let mut stream = tls(client, API, &fx.upstream_ca).await.expect("handshake after a retry");
    assert_eq!(exchange(&mut stream, &get("/r", &target, "")).await.body, "echo GET /r 0");
}

#[tokio::test]
async fn a_second_client_hello_naming_another_host_never_reaches_the_server() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, &format!("allow network {API}:*\n{ADDRESS_RULES}"));
    for second in [client_hello(EVIL), b"not a hello at all".to_vec()] {
        let mut client = fx.client();
        let target = format!("{API}:{}", fx.hello_retry.port());
        assert_eq!(connect(&mut client, &target).await.status, 200);
        client.write_all(&client_hello(API)).await.expect("first hello");
        let retry = read_n(&mut client, 5 + 42).await;
        assert_eq!(retry[5], 2, "the server's HelloRetryRequest came through");
        // A ChangeCipherSpec first is allowed (middlebox compatibility mode); then the other name.
        client.write_all(&[20, 3, 3, 0, 1, 1]).await.expect("ccs");
        client.write_all(&second).await.expect("second hello");
        let rest = read_rest(&mut client).await;
        assert!(rest.is_empty() || rest[0] == 21, "cut (or an alert): {rest:?}");
    }
    let raw = fx.hello_retry.raw();
    assert!(!raw.windows(EVIL.len()).any(|w| w == EVIL.as_bytes()), "the second hello reached the server");
    assert!(!raw.windows(6).any(|w| w == b"not a "), "nor did the garbage");
    let records = fx.sink.wait_for(2).await;
    let notes: Vec<_> = records.iter().filter_map(|r| r.note.as_deref()).collect();
    assert!(
        notes.iter().any(|n| n.contains(&format!("second ClientHello (after a HelloRetryRequest) names {EVIL}"))),
        "{notes:?}"
    );
    assert!(records.iter().all(|r| r.verdict == LogVerdict::Denied), "{records:#?}");
}
