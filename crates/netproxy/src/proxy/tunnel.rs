//! A tunnel once its destination is allowed: look at the client's first
//! bytes, check them against the destination, then relay them untouched or
//! — only if the interception hook asks — terminate TLS and forward request
//! by request.
//!
//! Rules for what may cross a tunnel to a host *name*: TLS whose server name
//! (SNI) is that name; anything else (TLS without SNI, other protocols)
//! only if the deciding allow rule names the port explicitly, as in
//! `allow network github.com:22`. A tunnel to an IP literal carries anything:
//! the policy decided on the very address the bytes go to.
//!
//! An open tunnel is watched ([`guard`](super::guard)): it is cut as soon as
//! the policy denies its destination, and a relayed one when it was idle for
//! [`Limits::tunnel_idle_timeout`](super::Limits::tunnel_idle_timeout).

use std::time::Duration;

use tokio_rustls::TlsAcceptor;

use crate::log::{LogMode, LogVerdict};
use crate::policy::{Decision, Ports, Reason, Request};

use super::forward::{self, Mode};
use super::guard::{self, Destination};
use super::io::{Conn, Prefixed};
use super::record::Tracker;
use super::reply;
use super::retry;
use super::server::Inner;
use super::sni::{self, Hello, MAX_INPUT};
use super::target::ip_literal;
use super::upstream::Connected;

/// What a tunnel's first bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sniff {
    /// A TLS ClientHello, with its server name if it has one.
    Tls(Option<String>),
    /// Something that starts like TLS but is not a valid ClientHello.
    BadTls(&'static str),
    /// An HTTP/1 request line.
    Http,
    /// Some other protocol.
    Other,
    /// Nothing yet: a protocol where the server speaks first, or a closed client.
    Silent,
}

/// Reads until the first bytes can be classified. Waits `first_byte` for the
/// client to say anything, and until `complete` for a whole ClientHello.
pub(crate) async fn sniff(conn: &mut Conn, first_byte: Duration, complete: Duration) -> Sniff {
    let start = tokio::time::Instant::now();
    loop {
        let buf = conn.buffered();
        if let Some(found) = classify(buf) {
            return found;
        }
        if buf.len() >= MAX_INPUT {
            return Sniff::BadTls("the ClientHello is too large");
        }
        let wait = if buf.is_empty() { first_byte } else { complete };
        match tokio::time::timeout_at(start + wait, conn.fill()).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => {
                return match conn.buffered() {
                    [] => Sniff::Silent,
                    [22, ..] => Sniff::BadTls("the ClientHello is incomplete"),
                    _ => Sniff::Other,
                }
            }
        }
    }
}

fn classify(buf: &[u8]) -> Option<Sniff> {
    match buf.first()? {
        22 => match sni::parse(buf) {
            Hello::Incomplete => None,
            Hello::NotTls => Some(Sniff::Other),
            Hello::Parsed { sni } => Some(Sniff::Tls(sni)),
            Hello::Invalid(why) => Some(Sniff::BadTls(why)),
        },
        _ => {
            for (i, &b) in buf.iter().enumerate().take(17) {
                match b {
                    b'A'..=b'Z' => {}
                    b' ' if i > 0 => return Some(Sniff::Http),
                    _ => return Some(Sniff::Other),
                }
            }
            (buf.len() >= 17).then_some(Sniff::Other)
        }
    }
}

/// Checks the first bytes against the tunnel's destination (see the module docs).
pub(crate) fn check(host: &str, port: u16, decision: &Decision, sniff: &Sniff) -> Result<(), String> {
    if ip_literal(host).is_some() {
        return Ok(());
    }
    let names_port = matches!(&decision.reason, Reason::Rule(e) if e.rule.resource.ports() == Ports::One(port));
    let explicit = format!("only a rule naming the port, like 'allow network {host}:{port}', allows");
    match sniff {
        Sniff::BadTls(why) => Err(format!("refused TLS ClientHello: {why}")),
        Sniff::Tls(Some(name)) if name != host => {
            Err(format!("the TLS server name {name} differs from the tunnel's host {host} (domain fronting)"))
        }
        Sniff::Tls(Some(_)) => Ok(()),
        _ if names_port => Ok(()),
        Sniff::Tls(None) => Err(format!("TLS without a server name (SNI); {explicit} that")),
        Sniff::Http | Sniff::Other | Sniff::Silent => Err(format!("not TLS; {explicit} other protocols")),
    }
}

/// Tells a refused client why, in the protocol it started speaking.
pub(crate) async fn refuse(client: &mut Conn, sniff: &Sniff, why: &str) {
    let _ = match sniff {
        Sniff::Tls(_) | Sniff::BadTls(_) => client.write_all(&reply::TLS_ACCESS_DENIED).await,
        Sniff::Http => client.write_all(&reply::refused(why)).await,
        Sniff::Other | Sniff::Silent => Ok(()),
    };
}

/// An allowed, checked tunnel.
pub(crate) struct Tunnel<'a> {
    pub(crate) sandbox: &'a str,
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) sniff: &'a Sniff,
    /// The upstream connection, to an address the policy allowed.
    pub(crate) connected: Connected,
}

/// Relays or intercepts `tunnel`. `intercept_mode` is what the record says
/// if it is intercepted.
pub(crate) async fn run(
    inner: &Inner,
    client: Conn,
    tunnel: Tunnel<'_>,
    mut tracker: Tracker,
    intercept_mode: LogMode,
) {
    let Tunnel { sandbox, host, port, sniff, connected } = tunnel;
    let dest = Destination { sandbox, host, port, ip: connected.ip };
    // Terminated if the credential hook wants it, or a request rule must see its requests.
    let wanted = match sniff {
        Sniff::Tls(Some(_)) if ip_literal(host).is_none() => {
            inner.intercept.as_ref().is_some_and(|hook| hook.wants(sandbox, host, port))
                || inner.policy.snapshot().reads_requests(&Request::new(sandbox, host, port))
        }
        _ => false,
    };
    if !wanted {
        return relay(inner, client, connected, &dest, tracker, sniff).await;
    }
    tracker.mode(intercept_mode);
    let config = match inner.ca.server_config(host) {
        Ok(config) => config,
        Err(e) => {
            tracker.note(format!("cannot mint a certificate for {host}: {e}"));
            return tracker.finish(LogVerdict::Failed);
        }
    };
    let (io, read_ahead) = client.into_parts();
    let accept = TlsAcceptor::from(config).accept(Prefixed::new(read_ahead, io));
    let tls = match tokio::time::timeout(inner.limits.hello_timeout, accept).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracker.note(format!("TLS with the guest failed (does it trust the Moat CA?): {e}"));
            return tracker.finish(LogVerdict::Failed);
        }
        Err(_) => {
            tracker.note("the guest's TLS handshake timed out");
            return tracker.finish(LogVerdict::Failed);
        }
    };
    let mut conn = Conn::new(Box::new(tls));
    let mut mode = Mode::Intercepted { host: host.to_string(), port, preconnected: Some(connected), scrub_cache: None };
    let served = guard::watch(&inner.policy, &dest, async {
        forward::serve_http(inner, &mut conn, sandbox, &mut mode).await;
        Ok(())
    })
    .await;
    let verdict = match served {
        Ok(()) => {
            conn.shutdown().await;
            LogVerdict::Allowed
        }
        Err(cut) => cut.log(&mut tracker),
    };
    tracker.bytes(conn.read, conn.written);
    tracker.finish(verdict);
}

/// Copies bytes both ways until both sides are done (the client's bytes
/// read ahead while sniffing go first), the policy denies `dest`, or the
/// tunnel is idle too long. A TLS handshake is watched until the server's
/// first message, for a second ClientHello.
async fn relay(
    inner: &Inner,
    mut client: Conn,
    connected: Connected,
    dest: &Destination<'_>,
    mut tracker: Tracker,
    sniff: &Sniff,
) {
    let mut up = Conn::new(Box::new(connected.tcp));
    if let Sniff::Tls(Some(name)) = sniff {
        if let Err(why) = retry::watch(&mut client, &mut up, name, inner.limits.connect_timeout).await {
            tracker.bytes(up.written, up.read);
            tracker.note(why);
            return tracker.finish(LogVerdict::Denied);
        }
    }
    let idle = inner.limits.tunnel_idle_timeout;
    let result = guard::watch(&inner.policy, dest, guard::copy_until_idle(&mut client, &mut up, idle)).await;
    tracker.bytes(up.written, up.read);
    let verdict = match result {
        Ok(Ok(())) => LogVerdict::Allowed,
        Ok(Err(e)) => {
            tracker.note(format!("the tunnel ended with an error: {e}"));
            LogVerdict::Allowed
        }
        Err(cut) => cut.log(&mut tracker),
    };
    tracker.finish(verdict);
}
