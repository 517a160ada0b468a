//! Interception: only for hosts the hook wants; the upstream gets the
//! rewritten request, the client sees a certificate from the proxy's CA.

use std::sync::Arc;

use moat_netproxy::log::LogMode;
use moat_netproxy::policy::Preset;
use moat_netproxy::proxy::{Headers, Intercept};
use tokio::io::AsyncWriteExt;

use crate::util::{connect, exchange, get, read_one, tls, Fixture, ADDRESS_RULES, API, EVIL};

/// Swaps a placeholder for a secret on `api.example.test`; notes it elsewhere.
struct Injector;

impl Intercept for Injector {
    fn wants(&self, _sandbox: &str, host: &str, _port: u16) -> bool {
        host == API
    }

    fn rewrite(&self, _sandbox: &str, _host: &str, headers: &mut Headers) -> Option<String> {
        (headers.get("authorization")? == b"Bearer PLACEHOLDER").then_some(())?;
        headers.set("Authorization", b"Bearer real-secret").expect("valid header");
        Some("injected".to_string())
    }

    fn inspect(&self, _sandbox: &str, host: &str, headers: &Headers) -> Option<String> {
        let value = headers.get("authorization")?;
        (value == b"Bearer PLACEHOLDER").then(|| format!("placeholder sent to {host}"))
    }
}

async fn fixture() -> Fixture {
    let fx = Fixture::with_intercept(Some(Arc::new(Injector))).await;
    fx.rules(Preset::DenyAll, &format!("allow network {API}:*\nallow network {EVIL}:*\n{ADDRESS_RULES}"));
    fx
}

#[tokio::test]
async fn wanted_hosts_are_rewritten_under_our_certificate() {
    let fx = fixture().await;
    let mut client = fx.client();
    let target = format!("{API}:{}", fx.api_tls.port());
    assert_eq!(connect(&mut client, &target).await.status, 200);
    // Trusting only the proxy's CA proves the certificate is ours, minted for the host.
    let mut stream = tls(client, API, fx.proxy.ca_certificate_pem()).await.expect("our certificate");
    let res = exchange(&mut stream, &get("/v1", &target, "Authorization: Bearer PLACEHOLDER\r\n")).await;
    assert_eq!(res.body, "echo GET /v1 0");
    let seen = fx.api_tls.requests();
    assert_eq!(seen[0].header("authorization"), Some("Bearer real-secret"));
    let records = fx.sink.wait_for(2).await;
    let get = records.iter().find(|r| r.method == "GET").expect("request record");
    assert_eq!((get.mode, get.note.as_deref()), (LogMode::Intercept, Some("injected")));
    let tunnel = records.iter().find(|r| r.method == "CONNECT").expect("tunnel record");
    assert_eq!(tunnel.mode, LogMode::Intercept);
}

#[tokio::test]
async fn kept_alive_requests_share_one_upstream_connection() {
    let fx = fixture().await;
    let mut client = fx.client();
    let target = format!("{API}:{}", fx.api_tls.port());
    assert_eq!(connect(&mut client, &target).await.status, 200);
    let mut stream = tls(client, API, fx.proxy.ca_certificate_pem()).await.expect("our certificate");
    for path in ["/1", "/2"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {target}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        assert_eq!(read_one(&mut stream).await.body, format!("echo GET {path} 0"));
    }
    assert_eq!((fx.api_tls.connections(), fx.api_tls.requests().len()), (1, 2));
    drop(stream);
    let records = fx.sink.wait_for(3).await;
    assert_eq!(records.iter().filter(|r| r.method == "GET").count(), 2);
}

#[tokio::test]
async fn an_intercepted_request_for_another_host_is_refused() {
    let fx = fixture().await;
    let mut client = fx.client();
    let target = format!("{API}:{}", fx.api_tls.port());
    assert_eq!(connect(&mut client, &target).await.status, 200);
    let mut stream = tls(client, API, fx.proxy.ca_certificate_pem()).await.expect("our certificate");
    let evil = format!("{EVIL}:{}", fx.evil_tls.port());
    let res = exchange(&mut stream, &get("/", &evil, "Authorization: Bearer PLACEHOLDER\r\n")).await;
    assert_eq!(res.status, 400);
    assert!(fx.api_tls.requests().is_empty());
    assert_eq!(fx.evil_tls.connections(), 0);
}

#[tokio::test]
async fn other_hosts_keep_their_own_certificate() {
    let fx = fixture().await;
    let mut client = fx.client();
    let target = format!("{EVIL}:{}", fx.evil_tls.port());
    assert_eq!(connect(&mut client, &target).await.status, 200);
    let mut stream = tls(client, EVIL, &fx.upstream_ca).await.expect("upstream's own certificate");
    let res = exchange(&mut stream, &get("/", &target, "Authorization: Bearer PLACEHOLDER\r\n")).await;
    assert_eq!(res.status, 200);
    assert_eq!(fx.evil_tls.requests()[0].header("authorization"), Some("Bearer PLACEHOLDER"));
}

#[tokio::test]
async fn plain_http_is_inspected_never_rewritten() {
    let fx = fixture().await;
    let host = format!("{API}:{}", fx.api_http.port());
    let res =
        exchange(&mut fx.client(), &get(&format!("http://{host}/"), &host, "Authorization: Bearer PLACEHOLDER\r\n"))
            .await;
    assert_eq!(res.status, 200);
    assert_eq!(fx.api_http.requests()[0].header("authorization"), Some("Bearer PLACEHOLDER"));
    let records = fx.sink.wait_for(1).await;
    assert_eq!(records[0].note.as_deref(), Some(format!("placeholder sent to {API}").as_str()));
}
