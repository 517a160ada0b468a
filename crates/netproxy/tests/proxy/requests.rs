//! Request rules on the wire: a host a request rule names is intercepted
//! even without a credential hook, its denied requests get a 403 that names
//! the rule and never reach it, the rest pass; plain HTTP alike.

use moat_netproxy::log::LogVerdict;
use moat_netproxy::policy::Preset;
use tokio::io::AsyncWriteExt;

use crate::util::{connect, exchange, read_one, tls, Fixture, ADDRESS_RULES, API, EVIL};

fn request(method: &str, target: &str, host: &str) -> String {
    format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n")
}

#[tokio::test]
async fn a_denied_request_never_reaches_the_service_and_the_rest_do() {
    let fx = Fixture::start().await;
    let rules =
        format!("allow network {API}:*\nallow network {EVIL}:*\n{ADDRESS_RULES}\ndeny request DELETE {API}/repos/**");
    fx.rules(Preset::DenyAll, &rules);
    let mut client = fx.client();
    let target = format!("{API}:{}", fx.api_tls.port());
    assert_eq!(connect(&mut client, &target).await.status, 200);
    // Only the proxy's CA is trusted: the host is intercepted for the rule's sake.
    let mut stream = tls(client, API, fx.proxy.ca_certificate_pem()).await.expect("intercepted");
    stream.write_all(request("GET", "/repos/a", &target).as_bytes()).await.expect("write");
    assert_eq!(read_one(&mut stream).await.body, "echo GET /repos/a 0");
    let res = exchange(&mut stream, &request("DELETE", "/repos/a/b", &target)).await;
    assert_eq!(res.status, 403, "{res:?}");
    assert!(res.body.contains(&format!("DELETE {API}")) && res.body.contains("/repos/a/b"), "{}", res.body);
    assert!(res.body.contains(&format!("moat policy rm deny request DELETE {API}/repos/**")), "{}", res.body);
    assert_eq!(fx.api_tls.requests().len(), 1, "the DELETE never reached the service");

    // Plain HTTP is read too.
    let host = format!("{API}:{}", fx.api_http.port());
    let res = exchange(&mut fx.client(), &request("DELETE", &format!("http://{host}/repos/x"), &host)).await;
    assert_eq!(res.status, 403);
    assert!(fx.api_http.requests().is_empty());

    // A host no request rule names keeps its own certificate (tunnelled untouched).
    let mut client = fx.client();
    let evil = format!("{EVIL}:{}", fx.evil_tls.port());
    assert_eq!(connect(&mut client, &evil).await.status, 200);
    assert!(tls(client, EVIL, &fx.upstream_ca).await.is_ok());

    let records = fx.sink.wait_for(5).await;
    let denied: Vec<_> = records.iter().filter(|r| r.verdict == LogVerdict::Denied).collect();
    assert_eq!(denied.len(), 2, "{records:#?}");
    for r in denied {
        assert_eq!((r.method.as_str(), r.status), ("DELETE", Some(403)));
        assert_eq!(r.rule.as_deref(), Some(format!("rule 'deny request DELETE {API}/repos/**'").as_str()));
    }
}
