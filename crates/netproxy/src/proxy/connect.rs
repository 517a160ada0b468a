//! The explicit proxy's CONNECT: decide on the named host and port, resolve
//! and check the addresses, connect, answer 200, then check the first bytes
//! (SNI must name the CONNECT host) before anything reaches the upstream.

use crate::log::{LogMode, LogVerdict};
use crate::policy::Request;

use super::head;
use super::io::Conn;
use super::record::Tracker;
use super::reply;
use super::server::Inner;
use super::target::Authority;
use super::tunnel;
use super::upstream::Refusal;

/// Handles a CONNECT request; the connection ends with it.
pub(crate) async fn explicit(inner: &Inner, mut client: Conn, sandbox: &str, req: head::Request) {
    let Some((host, port)) = Authority::parse(&req.head.target).and_then(|a| Some((a.host, a.port?))) else {
        let mut tracker = Tracker::start(&inner.sink, sandbox, "CONNECT", "", 0, LogMode::Tunnel);
        let why = "CONNECT needs host:port";
        tracker.note(why);
        let _ = client.write_all(&reply::bad_request(why)).await;
        return tracker.finish(LogVerdict::Denied);
    };
    let mut tracker = Tracker::start(&inner.sink, sandbox, "CONNECT", &host, port, LogMode::Tunnel);
    let policy = inner.policy.snapshot();
    let request = Request::new(sandbox, &host, port);
    let decision = policy.decide(&request);
    tracker.decision(&decision);
    if !decision.is_allowed() {
        let _ = client.write_all(&reply::forbidden(&request, &decision)).await;
        return tracker.finish(LogVerdict::Denied);
    }
    let connected = match inner.connect(&policy, &request).await {
        Ok(connected) => connected,
        Err(Refusal::Denied(d)) => {
            tracker.decision(&d);
            let _ = client.write_all(&reply::forbidden(&request, &d)).await;
            return tracker.finish(LogVerdict::Denied);
        }
        Err(Refusal::Failed(why)) => {
            let _ = client.write_all(&reply::bad_gateway(&why)).await;
            tracker.note(why);
            return tracker.finish(LogVerdict::Failed);
        }
    };
    if client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_err() {
        return tracker.finish(LogVerdict::Failed);
    }
    let limits = &inner.limits;
    let sniff = tunnel::sniff(&mut client, limits.first_byte_timeout, limits.hello_timeout).await;
    if let Err(why) = tunnel::check(&host, port, &decision, &sniff) {
        tunnel::refuse(&mut client, &sniff, &why).await;
        tracker.note(why);
        return tracker.finish(LogVerdict::Denied);
    }
    let tunnel = tunnel::Tunnel { sandbox, host: &host, port, sniff: &sniff, connected };
    tunnel::run(inner, client, tunnel, tracker, LogMode::Intercept).await;
}
