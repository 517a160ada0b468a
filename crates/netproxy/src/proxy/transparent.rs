//! Connections the guest redirected transparently: the client did not know
//! about a proxy, so the destination comes from what it sends — the TLS
//! server name, else the HTTP `Host`, else the name the guest's DNS answered
//! for the address (`hint`), else the address itself. Names are resolved by
//! the proxy like any other; the original address is used only when it is
//! the destination itself (no name known).

use std::net::SocketAddr;

use crate::log::{LogMode, LogVerdict};
use crate::policy::Request;

use super::forward::{self, Mode};
use super::io::Conn;
use super::record::Tracker;
use super::server::Inner;
use super::target::Authority;
use super::tunnel::{self, Sniff};
use super::upstream::Refusal;

/// Serves one transparently redirected connection.
pub(crate) async fn serve(
    inner: &Inner,
    mut client: Conn,
    sandbox: &str,
    original_dst: SocketAddr,
    hint: Option<String>,
) {
    let hint = hint.and_then(|h| Authority::parse(&h)).filter(|a| a.port.is_none()).map(|a| a.host);
    let port = original_dst.port();
    let limits = &inner.limits;
    let sniff = tunnel::sniff(&mut client, limits.first_byte_timeout, limits.hello_timeout).await;
    if sniff == Sniff::Http {
        let mut mode = Mode::Transparent { hint, port };
        forward::serve_http(inner, &mut client, sandbox, &mut mode).await;
        return;
    }
    let host = match (&sniff, &hint) {
        (Sniff::Tls(Some(name)), _) => name.clone(),
        (_, Some(hint)) => hint.clone(),
        (_, None) => original_dst.ip().to_string(),
    };
    let mut tracker = Tracker::start(&inner.sink, sandbox, "CONNECT", &host, port, LogMode::Transparent);
    if let (Sniff::Tls(Some(name)), Some(hint)) = (&sniff, &hint) {
        if name != hint {
            let why = format!("the TLS server name {name} differs from the name the guest resolved ({hint})");
            tunnel::refuse(&mut client, &sniff, &why).await;
            tracker.note(why);
            return tracker.finish(LogVerdict::Denied);
        }
    }
    let policy = inner.policy.snapshot();
    let request = Request::new(sandbox, &host, port);
    let decision = policy.decide(&request);
    tracker.decision(&decision);
    if !decision.is_allowed() {
        tunnel::refuse(&mut client, &sniff, &decision.to_string()).await;
        return tracker.finish(LogVerdict::Denied);
    }
    if let Err(why) = tunnel::check(&host, port, &decision, &sniff) {
        tunnel::refuse(&mut client, &sniff, &why).await;
        tracker.note(why);
        return tracker.finish(LogVerdict::Denied);
    }
    let connected = match inner.connect(&policy, &request).await {
        Ok(connected) => connected,
        Err(Refusal::Denied(d)) => {
            tunnel::refuse(&mut client, &sniff, &d.to_string()).await;
            tracker.decision(&d);
            return tracker.finish(LogVerdict::Denied);
        }
        Err(Refusal::Failed(why)) => {
            tracker.note(why);
            return tracker.finish(LogVerdict::Failed);
        }
    };
    let tunnel = tunnel::Tunnel { sandbox, host: &host, port, sniff: &sniff, connected };
    tunnel::run(inner, client, tunnel, tracker, LogMode::Transparent).await;
}
