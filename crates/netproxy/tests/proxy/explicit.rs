//! The explicit proxy's plain-HTTP requests.

use moat_netproxy::policy::Preset;

use crate::util::{exchange, get, Fixture, ADDRESS_RULES, API, EVIL};

#[tokio::test]
async fn allowed_requests_are_forwarded_without_proxy_headers() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, &format!("allow network {API}:*\n{ADDRESS_RULES}"));
    let port = fx.api_http.port();
    let host = format!("{API}:{port}");
    let extra = "Proxy-Authorization: Basic eA==\r\nProxy-Connection: keep-alive\r\nConnection: x-drop\r\nX-Drop: 1\r\nX-Keep: yes\r\n";
    let res = exchange(&mut fx.client(), &get(&format!("http://{host}/hello?q=1"), &host, extra)).await;
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(res.body, "echo GET /hello?q=1 0");
    let seen = fx.api_http.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("host"), Some(host.as_str()));
    assert_eq!(seen[0].header("x-keep"), Some("yes"));
    for gone in ["proxy-authorization", "proxy-connection", "x-drop"] {
        assert_eq!(seen[0].header(gone), None, "{gone}");
    }
}

#[tokio::test]
async fn request_bodies_are_forwarded_both_framings() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, &format!("allow network {API}:*\n{ADDRESS_RULES}"));
    let host = format!("{API}:{}", fx.api_http.port());
    let fixed =
        format!("POST http://{host}/a HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
    assert_eq!(exchange(&mut fx.client(), &fixed).await.body, "echo POST /a 5");
    let chunked = format!(
        "POST http://{host}/b HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
    );
    assert_eq!(exchange(&mut fx.client(), &chunked).await.body, "echo POST /b 5");
    let bodies: Vec<Vec<u8>> = fx.api_http.requests().into_iter().map(|s| s.body).collect();
    assert_eq!(bodies, [b"hello".to_vec(), b"abcde".to_vec()]);
}

#[tokio::test]
async fn denied_requests_get_a_403_naming_host_rule_and_command() {
    let fx = Fixture::start().await;
    fx.rules(Preset::AllowAll, &format!("deny network {EVIL}\n{ADDRESS_RULES}"));
    let port = fx.evil_http.port();
    let host = format!("{EVIL}:{port}");
    let res = exchange(&mut fx.client(), &get(&format!("http://{host}/"), &host, "")).await;
    assert_eq!(res.status, 403, "{res:?}");
    assert!(res.head.to_ascii_lowercase().contains("content-type: text/plain"), "{}", res.head);
    assert!(res.body.contains(&host), "{}", res.body);
    assert!(res.body.contains(&format!("rule 'deny network {EVIL}'")), "{}", res.body);
    assert!(res.body.contains(&format!("moat policy rm deny network {EVIL}")), "{}", res.body);
    assert!(res.body.contains(&format!("moat policy allow network {host} --sandbox web")), "{}", res.body);
    assert_eq!(fx.evil_http.connections(), 0);
}

#[tokio::test]
async fn one_star_is_one_label_and_two_stars_any_depth() {
    let fx = Fixture::start().await;
    let port = fx.api_http.port();
    let fetch = |name: &'static str| {
        let mut client = fx.client();
        async move {
            let host = format!("{name}:{port}");
            exchange(&mut client, &get(&format!("http://{host}/"), &host, "")).await.status
        }
    };
    fx.rules(Preset::DenyAll, &format!("allow network *.example.test:*\n{ADDRESS_RULES}"));
    assert_eq!(fetch("a.example.test").await, 200);
    assert_eq!(fetch("a.b.example.test").await, 403);
    fx.rules(Preset::DenyAll, &format!("allow network **.example.test:*\n{ADDRESS_RULES}"));
    assert_eq!(fetch("a.example.test").await, 200);
    assert_eq!(fetch("a.b.example.test").await, 200);
}

#[tokio::test]
async fn ip_literals_are_decided_by_address_rules() {
    let fx = Fixture::start().await;
    fx.rules(Preset::AllowAll, "allow network 127.0.0.2");
    let port = fx.api_http.port();
    let host = format!("127.0.0.2:{port}");
    assert_eq!(exchange(&mut fx.client(), &get(&format!("http://{host}/"), &host, "")).await.status, 200);
    let host = format!("127.0.0.9:{port}");
    let res = exchange(&mut fx.client(), &get(&format!("http://{host}/"), &host, "")).await;
    assert_eq!(res.status, 403);
    assert!(res.body.contains("loopback"), "{}", res.body);
    assert!(res.body.contains(&format!("moat policy allow network 127.0.0.9:{port}")), "{}", res.body);
}

#[tokio::test]
async fn a_name_resolving_to_loopback_needs_an_exact_rule() {
    let fx = Fixture::start().await;
    fx.rules(Preset::AllowAll, "");
    let host = format!("rebind.example.test:{}", fx.api_http.port());
    let res = exchange(&mut fx.client(), &get(&format!("http://{host}/"), &host, "")).await;
    assert_eq!(res.status, 403, "{res:?}");
    assert!(res.body.contains("127.0.0.2 is a loopback address"), "{}", res.body);
    assert_eq!(fx.api_http.connections(), 0);
    // An exact rule for the name is what lets it through.
    fx.rules(Preset::AllowAll, "allow network rebind.example.test:*");
    assert_eq!(exchange(&mut fx.client(), &get(&format!("http://{host}/"), &host, "")).await.status, 200);
}

#[tokio::test]
async fn host_header_and_uri_must_agree() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, &format!("allow network {API}:*\nallow network {EVIL}:*\n{ADDRESS_RULES}"));
    let api = format!("{API}:{}", fx.api_http.port());
    let evil = format!("{EVIL}:{}", fx.evil_http.port());
    for (uri, host) in [(format!("http://{api}/"), evil.clone()), (format!("http://{api}/"), format!("{API}:1"))] {
        let res = exchange(&mut fx.client(), &get(&uri, &host, "")).await;
        assert_eq!(res.status, 400, "{uri} / {host}: {res:?}");
    }
    let res = exchange(&mut fx.client(), &get("/relative", &api, "")).await;
    assert_eq!(res.status, 400);
    let res = exchange(&mut fx.client(), &get(&format!("https://{api}/"), &api, "")).await;
    assert_eq!(res.status, 400);
    assert_eq!(fx.api_http.connections() + fx.evil_http.connections(), 0);
}

#[tokio::test]
async fn ambiguous_framing_is_rejected_with_400() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, &format!("allow network {API}:*\n{ADDRESS_RULES}"));
    let host = format!("{API}:{}", fx.api_http.port());
    let start = format!("POST http://{host}/ HTTP/1.1\r\nHost: {host}\r\n");
    let cases = [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "Transfer-Encoding: chunked, identity\r\n\r\n",
        "X-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    ];
    for case in cases {
        let res = exchange(&mut fx.client(), &format!("{start}{case}")).await;
        assert_eq!(res.status, 400, "{case:?}: {res:?}");
    }
    assert_eq!(fx.api_http.requests().len(), 0);
    let bad_chunk = format!("{start}Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n");
    assert_eq!(exchange(&mut fx.client(), &bad_chunk).await.status, 400);
}

#[tokio::test]
async fn policy_changes_apply_to_the_next_connection() {
    let fx = Fixture::start().await;
    let host = format!("{API}:{}", fx.api_http.port());
    let request = get(&format!("http://{host}/"), &host, "");
    fx.rules(Preset::DenyAll, &format!("allow network {API}:*\n{ADDRESS_RULES}"));
    assert_eq!(exchange(&mut fx.client(), &request).await.status, 200);
    fx.rules(Preset::DenyAll, ADDRESS_RULES);
    assert_eq!(exchange(&mut fx.client(), &request).await.status, 403);
    fx.rules(Preset::DenyAll, &format!("allow network {API}:*\n{ADDRESS_RULES}"));
    assert_eq!(exchange(&mut fx.client(), &request).await.status, 200);
}
