//! The connection log: one record per connection or request, with accurate
//! verdicts and byte counts.

use moat_netproxy::log::{LogMode, LogVerdict};
use moat_netproxy::policy::Preset;
use tokio::io::AsyncWriteExt;

use crate::util::{connect, exchange, get, read_n, read_rest, Fixture, ADDRESS_RULES, EVIL, FIXED_RESPONSE, RAW};

#[tokio::test]
async fn a_tunnel_record_counts_bytes_each_way() {
    let fx = Fixture::start().await;
    let port = fx.raw.port();
    fx.rules(Preset::DenyAll, &format!("allow network {RAW}:{port}\n{ADDRESS_RULES}"));
    let mut client = fx.client();
    assert_eq!(connect(&mut client, &format!("{RAW}:{port}")).await.status, 200);
    let payload = vec![7u8; 100_000];
    client.write_all(&payload).await.expect("write");
    assert_eq!(read_n(&mut client, payload.len()).await, payload);
    client.shutdown().await.expect("shutdown");
    read_rest(&mut client).await;
    let records = fx.sink.wait_for(1).await;
    let r = &records[0];
    assert_eq!((r.method.as_str(), r.host.as_str(), r.port), ("CONNECT", RAW, port));
    assert_eq!((r.verdict, r.mode), (LogVerdict::Allowed, LogMode::Tunnel));
    assert_eq!(r.rule.as_deref(), Some(format!("rule 'allow network {RAW}:{port}'").as_str()));
    assert_eq!((r.bytes_up, r.bytes_down), (100_000, 100_000));
    assert_eq!(r.sandbox, "web");
}

#[tokio::test]
async fn an_http_record_counts_what_crossed_to_the_upstream() {
    let fx = Fixture::start().await;
    let port = fx.raw.port();
    fx.rules(Preset::DenyAll, &format!("allow network {RAW}:*\n{ADDRESS_RULES}"));
    let host = format!("{RAW}:{port}");
    let res = exchange(&mut fx.client(), &get(&format!("http://{host}/"), &host, "")).await;
    assert_eq!(res.body, "ok");
    let records = fx.sink.wait_for(1).await;
    let r = &records[0];
    assert_eq!((r.method.as_str(), r.verdict, r.mode), ("GET", LogVerdict::Allowed, LogMode::Http));
    assert_eq!(r.bytes_up, fx.raw.raw().len() as u64);
    assert_eq!(r.bytes_down, FIXED_RESPONSE.len() as u64);
}

#[tokio::test]
async fn denials_are_recorded_with_their_rule() {
    let fx = Fixture::start().await;
    fx.rules(Preset::DenyAll, ADDRESS_RULES);
    let host = format!("{EVIL}:{}", fx.evil_http.port());
    assert_eq!(exchange(&mut fx.client(), &get(&format!("http://{host}/"), &host, "")).await.status, 403);
    let records = fx.sink.wait_for(1).await;
    let r = &records[0];
    assert_eq!((r.verdict, r.bytes_up, r.bytes_down), (LogVerdict::Denied, 0, 0));
    assert_eq!(r.rule.as_deref(), Some("preset deny-all (default deny)"));
}

#[tokio::test]
async fn an_http_request_is_logged_with_its_path_query_values_redacted_and_its_status() {
    let fx = Fixture::start().await;
    let port = fx.raw.port();
    fx.rules(Preset::DenyAll, &format!("allow network {RAW}:*\n{ADDRESS_RULES}"));
    let host = format!("{RAW}:{port}");
    let res =
        exchange(&mut fx.client(), &get(&format!("http://{host}/v1/models?key=SECRET1&alt=sse"), &host, "")).await;
    assert_eq!(res.status, 200);
    let evil = format!("{EVIL}:{}", fx.evil_http.port());
    assert_eq!(
        exchange(&mut fx.client(), &get(&format!("http://{evil}/x?token=SECRET2"), &evil, "")).await.status,
        403
    );
    let records = fx.sink.wait_for(2).await;
    let got: Vec<_> = records.iter().map(|r| (r.method.as_str(), r.path.as_deref(), r.status)).collect();
    assert_eq!(got, [("GET", Some("/v1/models?key=…&alt=…"), Some(200)), ("GET", Some("/x?token=…"), Some(403))]);
    assert!(!format!("{records:?}").contains("SECRET"), "query values never reach the log");
}
