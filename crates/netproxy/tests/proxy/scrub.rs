//! What the proxy swaps in never comes back: a service that reflects the
//! request (in its body, whatever the framing, its headers or its reason
//! phrase) shows the guest the placeholder, not the real value; an answer
//! the proxy cannot read through is not passed on; methods that echo the
//! request are refused on intercepted connections.

use std::sync::Arc;

use moat_netproxy::policy::Preset;
use moat_netproxy::proxy::{Headers, Intercept, Redaction};

use tokio::io::AsyncWriteExt;

use crate::util::{connect, exchange, get, read_n, tls, Fixture, ADDRESS_RULES, API};

const SECRET: &str = "sk-real-0123456789abcdefghij";

/// Swaps `placeholder` for [`SECRET`] on the API host.
struct Injector {
    placeholder: &'static str,
}

impl Intercept for Injector {
    fn wants(&self, _sandbox: &str, host: &str, _port: u16) -> bool {
        host == API
    }

    fn rewrite(&self, _sandbox: &str, _host: &str, headers: &mut Headers) -> Option<String> {
        (headers.get("authorization")? == format!("Bearer {}", self.placeholder).as_bytes()).then_some(())?;
        headers.set("Authorization", format!("Bearer {SECRET}").as_bytes()).expect("valid header");
        Some("injected".to_string())
    }

    fn redactions(&self, _sandbox: &str, _host: &str) -> Vec<Redaction> {
        vec![Redaction::new(SECRET.into(), self.placeholder.into())]
    }
}

async fn fixture(placeholder: &'static str) -> Fixture {
    let fx = Fixture::with_intercept(Some(Arc::new(Injector { placeholder }))).await;
    fx.rules(Preset::DenyAll, &format!("allow network {API}:*\n{ADDRESS_RULES}"));
    fx
}

/// One request through interception to the reflector; the response as the guest sees it.
async fn reflect(fx: &Fixture, request: &str) -> crate::util::Response {
    let mut client = fx.client();
    let target = format!("{API}:{}", fx.reflect.port());
    assert_eq!(connect(&mut client, &target).await.status, 200);
    let mut stream = tls(client, API, fx.proxy.ca_certificate_pem()).await.expect("our certificate");
    exchange(&mut stream, &request.replace("{target}", &target)).await
}

fn get_with_placeholder(path: &str, placeholder: &str) -> String {
    get(path, "{target}", &format!("Authorization: Bearer {placeholder}\r\n"))
}

#[tokio::test]
async fn an_echoed_credential_is_replaced_wherever_the_answer_carries_it() {
    let placeholder = "sk-ph-short";
    let fx = fixture(placeholder).await;
    for path in ["/length", "/chunked", "/header"] {
        let res = reflect(&fx, &get_with_placeholder(path, placeholder)).await;
        let all = format!("{}\r\n\r\n{}", res.head, res.body);
        assert!(!all.contains(SECRET), "{path}: the real value came back:\n{all}");
        assert!(all.contains(&format!("Bearer {placeholder}")), "{path}: the echo is there, scrubbed:\n{all}");
        if path == "/header" {
            assert!(res.head.starts_with(&format!("HTTP/1.1 401 bad key Bearer {placeholder}\r\n")), "{}", res.head);
            assert!(res.head.contains(&format!("X-Echo: Bearer {placeholder}")), "{}", res.head);
        } else {
            // The body shrank, so its announced length could not be kept.
            assert!(res.head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{path}: {}", res.head);
        }
    }
    let sent = String::from_utf8(fx.reflect.raw()).expect("utf-8");
    assert_eq!(sent.matches(&format!("Bearer {SECRET}")).count(), 3, "the service did get the real value");
    assert_eq!(
        sent.matches("accept-encoding: identity").count() + sent.matches("Accept-Encoding: identity").count(),
        3
    );
    let records = fx.sink.wait_for(6).await;
    let noted = records.iter().filter(|r| r.note.as_deref().is_some_and(|n| n.contains("took the credential out")));
    assert_eq!(noted.count(), 3, "{records:#?}");
}

#[tokio::test]
async fn a_replacement_as_long_as_the_secret_keeps_the_announced_length() {
    let placeholder = "sk-ph-abcdefghijklmnopqrstuv";
    assert_eq!(placeholder.len(), SECRET.len());
    let fx = fixture(placeholder).await;
    let res = reflect(&fx, &get_with_placeholder("/length", placeholder)).await;
    assert!(res.head.to_ascii_lowercase().contains("content-length"), "{}", res.head);
    assert!(!res.body.contains(SECRET) && res.body.contains(placeholder), "{}", res.body);
}

#[tokio::test]
async fn an_encoded_answer_that_cannot_be_checked_is_not_passed_on() {
    let placeholder = "sk-ph-short";
    let fx = fixture(placeholder).await;
    let res = reflect(&fx, &get_with_placeholder("/gzip", placeholder)).await;
    assert_eq!(res.status, 502, "{res:?}");
    assert!(res.body.contains("gzip"), "says why: {}", res.body);
    assert!(!res.body.contains(SECRET) && !res.head.contains(SECRET));
}

#[tokio::test]
async fn methods_that_echo_the_request_never_carry_the_credential() {
    let placeholder = "sk-ph-short";
    let fx = fixture(placeholder).await;
    for method in ["TRACE", "TRACK", "trace"] {
        let request = get_with_placeholder("/length", placeholder).replacen("GET", method, 1);
        let res = reflect(&fx, &request).await;
        assert_eq!(res.status, 405, "{method}: {res:?}");
    }
    // CONNECT inside the intercepted TLS is not a request the proxy forwards.
    let res = reflect(&fx, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").await;
    assert_eq!(res.status, 400, "{res:?}");
    assert!(fx.reflect.raw().is_empty(), "nothing reached the service");
}

#[tokio::test]
async fn a_websocket_that_echoes_the_credential_shows_the_guest_the_placeholder() {
    let placeholder = "sk-ph-short";
    let fx = fixture(placeholder).await;
    let mut client = fx.client();
    let target = format!("{API}:{}", fx.ws_tls.port());
    assert_eq!(connect(&mut client, &target).await.status, 200);
    let mut stream = tls(client, API, fx.proxy.ca_certificate_pem()).await.expect("our certificate");
    let upgrade = format!(
        "GET /echo-auth HTTP/1.1\r\nHost: {target}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: permessage-deflate\r\nAuthorization: Bearer {placeholder}\r\n\r\n"
    );
    stream.write_all(upgrade.as_bytes()).await.expect("upgrade");
    let mut seen = Vec::new();
    // The head, then the service's echo of what it got (sent in two pieces), then our own echo.
    while !seen.ends_with(b"ping") {
        if seen.ends_with(b"\n") && !seen.ends_with(b"\r\n") {
            stream.write_all(b"ping").await.expect("ping");
        }
        seen.extend(read_n(&mut stream, 1).await);
    }
    let text = String::from_utf8_lossy(&seen);
    let fitted: String = placeholder.chars().cycle().take(SECRET.len()).collect();
    assert!(
        text.contains(&format!("\r\n\r\nBearer {fitted}\n")),
        "as many bytes as the secret, so frames keep their lengths:\n{text}"
    );
    assert!(!text.contains(SECRET), "{text}");
    let sent = String::from_utf8_lossy(&fx.ws_tls.raw()).to_ascii_lowercase();
    assert!(sent.contains(&format!("authorization: bearer {SECRET}")), "{sent}");
    assert!(!sent.contains("sec-websocket-extensions"), "no compression asked for: {sent}");
}
