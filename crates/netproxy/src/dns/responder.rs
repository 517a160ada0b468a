//! [`Responder`]: answers one sandbox's DNS queries under the policy.
//!
//! | Query                                   | Answer                                  |
//! |-----------------------------------------|-----------------------------------------|
//! | A, name allowed on some port            | NOERROR, one A: the name's fake address |
//! | AAAA or any other type, name allowed    | NOERROR, no answers (guest is IPv4-only)|
//! | any type, name denied or not a host name| NXDOMAIN                                |
//! | PTR for a fake address                  | NOERROR, the name it stands for         |
//! | `gateway.moat.internal`, `localhost`    | 198.18.0.1, 127.0.0.1 (A only)          |
//! | `host.moat.internal` (the host machine) | like any name, decided as `localhost`   |
//! | other names under `moat.internal`       | NXDOMAIN                                |
//! | class other than IN, AXFR/IXFR          | REFUSED                                 |
//! | not a standard query                    | NOTIMP                                  |
//! | malformed, not one question             | FORMERR                                 |
//! | EDNS version other than 0               | BADVERS                                 |
//!
//! Denying with NXDOMAIN (rather than answering and refusing the connection)
//! means a query's labels reach nobody but this process, so DNS cannot carry
//! data out. Every query is logged as a [`LogMode::Dns`] record, rate-limited
//! (see [`limiter`](super::limiter)).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::fake_ips::{FakeIps, GATEWAY, GATEWAY_NAME};
use super::limiter::Limiter;
use super::resolvable::{host_alias_resolvable, resolvable};
use super::wire::{self, rtype, Answer, Query, Rcode, Reply, CLASS_IN, MAX_MESSAGE};
use crate::log::{ConnectionRecord, ConnectionSink, LogMode, LogVerdict};
use crate::policy::HOST_ALIAS;
use crate::policy::{Decision, Policy, Reason};

/// The TTL of every answer: short, so a recycled fake address or a policy
/// change is picked up within a minute.
pub const TTL: u32 = 60;

/// How long a DNS stream may stay silent between messages before it is
/// closed (the guest agent opens a new one when it next needs it).
pub const STREAM_IDLE: Duration = Duration::from_secs(300);

/// How long one message may take once its first byte arrived, answer
/// included: a guest that trickles a message (or never reads the answer)
/// loses the stream.
pub const MESSAGE_DEADLINE: Duration = Duration::from_secs(5);

/// The zone Moat's own names live in.
const INTERNAL_ZONE: &str = "moat.internal";

/// The DNS stream failed or broke its framing; the stream is closed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Reading or writing the stream failed.
    #[error("the DNS stream failed; the guest agent may have closed it")]
    Io(#[from] std::io::Error),
    /// A frame's length is 0 or past [`MAX_MESSAGE`].
    #[error("the guest sent a {0}-byte DNS frame (allowed: 1 to {MAX_MESSAGE}); closing the stream")]
    Frame(usize),
    /// A message (or its answer) took longer than the message deadline.
    #[error("a DNS message took longer than {} ms to arrive or to be answered; closing the stream", .0.as_millis())]
    Slow(Duration),
}

/// Answers one sandbox's DNS queries.
pub struct Responder {
    policy: Arc<Policy>,
    fake: Arc<FakeIps>,
    sink: Option<Arc<dyn ConnectionSink>>,
    sandbox: String,
    limiter: Mutex<Limiter>,
    /// [`STREAM_IDLE`] and [`MESSAGE_DEADLINE`] unless changed.
    deadlines: (Duration, Duration),
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder").field("sandbox", &self.sandbox).field("fake", &self.fake).finish_non_exhaustive()
    }
}

/// What to log about one query.
struct Outcome {
    host: String,
    verdict: LogVerdict,
    rule: Option<String>,
    note: String,
}

impl Outcome {
    fn new(host: String, verdict: LogVerdict, note: impl Into<String>) -> Outcome {
        Outcome { host, verdict, rule: None, note: note.into() }
    }
}

impl Responder {
    /// A responder for `sandbox`, deciding by `policy`, handing out addresses
    /// from `fake` (share it with the transparent proxy), logging to `sink`.
    pub fn new(
        policy: Arc<Policy>,
        fake: Arc<FakeIps>,
        sink: Option<Arc<dyn ConnectionSink>>,
        sandbox: String,
    ) -> Responder {
        let limiter = Mutex::new(Limiter::new(Instant::now()));
        Responder { policy, fake, sink, sandbox, limiter, deadlines: (STREAM_IDLE, MESSAGE_DEADLINE) }
    }

    /// The same responder with other stream deadlines: `idle` between
    /// messages, `message` for one message and its answer.
    pub fn with_deadlines(self, idle: Duration, message: Duration) -> Responder {
        Responder { deadlines: (idle, message), ..self }
    }

    /// The reply to one DNS message (without stream framing). Always
    /// returns a reply, at most a few hundred bytes; never panics.
    pub fn answer(&self, query: &[u8]) -> Vec<u8> {
        self.answer_at(query, Instant::now())
    }

    pub(super) fn answer_at(&self, query: &[u8], now: Instant) -> Vec<u8> {
        let (bytes, outcome) = match wire::parse_query(query) {
            Err(rejection) => {
                let reply = Reply {
                    id: rejection.id,
                    query_flags: rejection.flags,
                    rcode: rejection.rcode,
                    question: None,
                    answer: None,
                    edns: false,
                    ttl: TTL,
                };
                let host = "(malformed query)".to_string();
                (wire::encode(&reply), Outcome::new(host, LogVerdict::Denied, rejection.why))
            }
            Ok(q) => {
                let (rcode, answer, outcome) = self.resolve(&q);
                let reply = Reply {
                    id: q.id,
                    query_flags: q.flags,
                    rcode,
                    question: Some(&q.question),
                    answer,
                    edns: q.edns.is_some(),
                    ttl: TTL,
                };
                (wire::encode(&reply), outcome)
            }
        };
        self.log(outcome, query.len(), bytes.len(), now);
        bytes
    }

    /// Decides one well-formed query.
    fn resolve(&self, q: &Query) -> (Rcode, Option<Answer>, Outcome) {
        let qtype = q.question.qtype;
        let type_name = type_name(qtype);
        let name = &q.question.name;
        if q.edns.is_some_and(|v| v != 0) {
            let outcome = Outcome::new(name.display(), LogVerdict::Denied, "unsupported EDNS version");
            return (Rcode::BadVers, None, outcome);
        }
        let Some(host) = name.host() else {
            let outcome = Outcome::new(name.display(), LogVerdict::Denied, format!("{type_name}: not a host name"));
            return (Rcode::NxDomain, None, outcome);
        };
        let refuse = |why: &str| {
            (Rcode::Refused, None, Outcome::new(host.clone(), LogVerdict::Denied, format!("{type_name}: {why}")))
        };
        if q.question.qclass != CLASS_IN {
            return refuse("only class IN is answered");
        }
        if matches!(qtype, rtype::AXFR | rtype::IXFR) {
            return refuse("zone transfers are not served");
        }
        if let Some(fixed) = fixed_address(&host) {
            let answer = (qtype == rtype::A).then_some(Answer::A(fixed));
            let outcome = Outcome::new(host, LogVerdict::Allowed, format!("{type_name}: built-in name"));
            return (Rcode::NoError, answer, outcome);
        }
        if host != HOST_ALIAS && (host == INTERNAL_ZONE || host.ends_with(".moat.internal")) {
            let outcome = Outcome::new(host, LogVerdict::Denied, format!("{type_name}: no such Moat name"));
            return (Rcode::NxDomain, None, outcome);
        }
        if qtype == rtype::PTR {
            if let Some(ip) = reverse_v4(&host) {
                return self.reverse(ip, host);
            }
        }
        if host.parse::<IpAddr>().is_ok() {
            let outcome = Outcome::new(host, LogVerdict::Denied, format!("{type_name}: an IP address is not a name"));
            return (Rcode::NxDomain, None, outcome);
        }
        let policy = self.policy.snapshot();
        let decision = if host == HOST_ALIAS {
            // The host machine needs a rule naming `localhost` itself, as the
            // proxy will when it meets the loopback address; `**` is not enough.
            match host_alias_resolvable(&policy, &self.sandbox) {
                Some(d) => d,
                None => {
                    let note = format!("{type_name}: the host machine needs `allow network localhost:PORT`");
                    let outcome = Outcome { host, verdict: LogVerdict::Denied, rule: None, note };
                    return (Rcode::NxDomain, None, outcome);
                }
            }
        } else {
            resolvable(&policy, &self.sandbox, &host)
        };
        let rule = rule_label(&decision);
        if !decision.is_allowed() {
            let note = match rule {
                Some(_) => type_name,
                None => format!("{type_name}: {decision}"),
            };
            return (Rcode::NxDomain, None, Outcome { host, verdict: LogVerdict::Denied, rule, note });
        }
        let (answer, note) = match qtype {
            rtype::A => {
                let ip = self.fake.assign(&host);
                (Some(Answer::A(ip)), format!("A {ip}"))
            }
            rtype::AAAA => (None, "AAAA: no IPv6 inside the sandbox".to_string()),
            _ => (None, format!("{type_name}: answered empty")),
        };
        (Rcode::NoError, answer, Outcome { host, verdict: LogVerdict::Allowed, rule, note })
    }

    /// PTR for an IPv4 address: only fake addresses have names.
    fn reverse(&self, ip: Ipv4Addr, host: String) -> (Rcode, Option<Answer>, Outcome) {
        let target = match ip {
            GATEWAY => Some(GATEWAY_NAME.to_string()),
            _ if FakeIps::in_range(ip) => self.fake.lookup_ip(ip),
            _ => None,
        };
        match target.as_deref().and_then(wire::Name::from_host) {
            Some(name) => {
                let note = format!("PTR {ip} -> {}", name.display());
                (Rcode::NoError, Some(Answer::Ptr(name)), Outcome::new(host, LogVerdict::Allowed, note))
            }
            None => {
                let note = format!("PTR {ip}: only Moat's own addresses have names");
                (Rcode::NxDomain, None, Outcome::new(host, LogVerdict::Denied, note))
            }
        }
    }

    fn log(&self, outcome: Outcome, bytes_up: usize, bytes_down: usize, now: Instant) {
        let Some(sink) = &self.sink else { return };
        let admit = {
            let mut limiter = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
            limiter.admit(&outcome.host, outcome.verdict, now)
        };
        let Some(admit) = admit else { return };
        let note = match admit.note() {
            Some(skipped) => format!("{}; {skipped}", outcome.note),
            None => outcome.note,
        };
        sink.record(ConnectionRecord {
            sandbox: self.sandbox.clone(),
            started_ms: unix_ms(),
            method: "DNS".to_string(),
            host: outcome.host,
            port: 53,
            verdict: outcome.verdict,
            mode: LogMode::Dns,
            rule: outcome.rule,
            bytes_up: bytes_up as u64,
            bytes_down: bytes_down as u64,
            duration_ms: 0,
            note: Some(note),
            path: None,
            status: None,
        });
    }

    /// Serves DNS over a stream framed as in RFC 1035 §4.2.2 (a 2-byte
    /// big-endian length, then the message), one query after another, until
    /// the peer closes it or stays silent for the idle deadline
    /// ([`STREAM_IDLE`]). A frame of 0 or more than [`MAX_MESSAGE`] bytes
    /// closes the stream with [`ServeError::Frame`]; a message that is not
    /// whole and answered within [`MESSAGE_DEADLINE`] of its first byte,
    /// with [`ServeError::Slow`].
    pub async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(&self, mut stream: S) -> Result<(), ServeError> {
        let (idle, deadline) = self.deadlines;
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let mut first = [0u8; 1];
            match tokio::time::timeout(idle, stream.read_exact(&mut first)).await {
                Ok(Ok(_)) => {}
                // Closed or silent between messages: the normal end.
                Err(_) => return Ok(()),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(e)) => return Err(e.into()),
            }
            tokio::time::timeout(deadline, self.one_message(&mut stream, first[0], &mut buf))
                .await
                .map_err(|_| ServeError::Slow(deadline))??;
        }
    }

    /// Reads the rest of a message whose first length byte is `first`, and answers it.
    async fn one_message<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        first: u8,
        buf: &mut [u8],
    ) -> Result<(), ServeError> {
        let second = match stream.read_u8().await {
            Ok(b) => b,
            // Closed mid-length: the normal end.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let len = usize::from(u16::from_be_bytes([first, second]));
        if len == 0 || len > MAX_MESSAGE {
            return Err(ServeError::Frame(len));
        }
        let query = &mut buf[..len];
        stream.read_exact(query).await?;
        let reply = self.answer(query);
        // `encode` never produces more than a few hundred bytes.
        let reply_len = u16::try_from(reply.len()).map_err(|_| ServeError::Frame(reply.len()))?;
        let mut frame = Vec::with_capacity(2 + reply.len());
        frame.extend_from_slice(&reply_len.to_be_bytes());
        frame.extend_from_slice(&reply);
        stream.write_all(&frame).await?;
        stream.flush().await?;
        Ok(())
    }
}

/// Names answered without consulting the policy: the gateway and, per RFC
/// 6761, `localhost` and names under it (the guest's own loopback).
fn fixed_address(host: &str) -> Option<Ipv4Addr> {
    match host {
        GATEWAY_NAME => Some(GATEWAY),
        "localhost" => Some(Ipv4Addr::LOCALHOST),
        _ if host.ends_with(".localhost") => Some(Ipv4Addr::LOCALHOST),
        _ => None,
    }
}

/// `d.c.b.a.in-addr.arpa` → `a.b.c.d`.
fn reverse_v4(host: &str) -> Option<Ipv4Addr> {
    let digits = host.strip_suffix(".in-addr.arpa")?;
    let mut octets = [0u8; 4];
    let mut parts = digits.split('.');
    for octet in octets.iter_mut().rev() {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(octets))
}

/// The rule or preset that decided, as the log shows it.
fn rule_label(decision: &Decision) -> Option<String> {
    match &decision.reason {
        Reason::Rule(entry) => Some(entry.to_string()),
        Reason::Default(preset) => Some(format!("preset {preset} (default deny)")),
        _ => None,
    }
}

fn type_name(qtype: u16) -> String {
    match qtype {
        rtype::A => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        rtype::PTR => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        rtype::AAAA => "AAAA".into(),
        33 => "SRV".into(),
        64 => "SVCB".into(),
        65 => "HTTPS".into(),
        rtype::IXFR => "IXFR".into(),
        rtype::AXFR => "AXFR".into(),
        255 => "ANY".into(),
        other => format!("TYPE{other}"),
    }
}

fn unix_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}
