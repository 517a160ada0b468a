//! Forwarding HTTP/1 requests, one at a time per client connection: the
//! explicit proxy's plain-HTTP requests, requests inside intercepted TLS,
//! and transparent plain HTTP. Each request is decided on its own and gets
//! its own record; an upstream connection is kept for the next request only
//! if it goes to the same host and port and follows within a few seconds.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::log::{LogMode, LogVerdict};
use crate::policy::{CompiledPolicy, Request};

use super::body::{self, BodyError};
use super::guard::{self, Cut, Destination};
use super::head::{self, Framing, HeadError, Kind};
use super::intercept::{Headers, Redaction};
use super::io::Conn;
use super::record::Tracker;
use super::reply;
use super::scrub::{ScrubbedReads, Scrubber};
use super::server::Inner;
use super::target::{self, Authority};
use super::upstream::{Connected, Refusal};

/// An idle upstream connection is reused only within this window, well
/// below the keep-alive timeout of any common server.
const REUSE_WINDOW: Duration = Duration::from_secs(4);

/// How requests on a connection are read.
pub(crate) enum Mode {
    /// The explicit proxy: absolute-form targets; a CONNECT ends the loop.
    Proxy,
    /// Inside TLS the proxy terminated for `host:port`: origin-form targets,
    /// `Host` must name that host, requests pass through the rewrite hook.
    Intercepted {
        host: String,
        port: u16,
        /// The checked TCP connection made before the guest's handshake.
        preconnected: Option<Connected>,
        /// The last request's redactions and their scrubber (built once per connection, mostly).
        scrub_cache: Option<(Vec<Redaction>, Scrubber)>,
    },
    /// Transparent plain HTTP to `port`: `Host` names the host (and must
    /// equal the name the guest resolved, if known).
    Transparent { hint: Option<String>, port: u16 },
}

impl Mode {
    fn log_mode(&self) -> LogMode {
        match self {
            Mode::Proxy => LogMode::Http,
            Mode::Intercepted { .. } => LogMode::Intercept,
            Mode::Transparent { .. } => LogMode::Transparent,
        }
    }

    /// Host and port to log when the request is too broken to name one.
    fn fallback(&self) -> (&str, u16) {
        match self {
            Mode::Proxy => ("", 0),
            Mode::Intercepted { host, port, .. } => (host, *port),
            Mode::Transparent { hint, port } => (hint.as_deref().unwrap_or(""), *port),
        }
    }
}

/// Why [`serve_http`] returned.
pub(crate) enum Next {
    /// The connection is finished.
    Done,
    /// The client sent CONNECT (explicit proxy only); the caller takes over.
    Connect(head::Request),
}

/// Where one request goes.
struct Target {
    host: String,
    port: u16,
    path: String,
    /// The `Host` header to send.
    host_header: String,
}

/// The upstream connection kept between requests.
struct Upstream {
    host: String,
    port: u16,
    ip: IpAddr,
    conn: Conn,
    last_used: Instant,
}

/// Serves requests until the connection ends, fails, or (explicit proxy) a CONNECT arrives.
pub(crate) async fn serve_http(inner: &Inner, client: &mut Conn, sandbox: &str, mode: &mut Mode) -> Next {
    let mut upstream: Option<Upstream> = None;
    let mut first = true;
    loop {
        let wait = if first { inner.limits.head_timeout } else { inner.limits.idle_timeout };
        first = false;
        let head = match head::read(client, Kind::Request, inner.limits.max_head, wait).await {
            Ok(Some(head)) => head,
            Ok(None) | Err(HeadError::Io(_)) => return Next::Done,
            Err(HeadError::Malformed(why)) => {
                refuse(inner, client, sandbox, mode, "?", why).await;
                return Next::Done;
            }
        };
        let method = head.method.clone();
        let req = match head::request(head) {
            Ok(req) => req,
            Err(why) => {
                refuse(inner, client, sandbox, mode, &method, why).await;
                return Next::Done;
            }
        };
        if matches!(mode, Mode::Proxy) && req.head.method == "CONNECT" {
            return Next::Connect(req);
        }
        if !exchange(inner, client, sandbox, mode, req, &mut upstream).await {
            return Next::Done;
        }
    }
}

/// Answers a malformed request with 400 and logs it.
async fn refuse(inner: &Inner, client: &mut Conn, sandbox: &str, mode: &Mode, method: &str, why: &str) {
    let (host, port) = mode.fallback();
    let mut tracker = Tracker::start(&inner.sink, sandbox, method, host, port, mode.log_mode());
    tracker.note(why);
    tracker.status(400);
    let _ = client.write_all(&reply::bad_request(why)).await;
    tracker.finish(LogVerdict::Denied);
}

/// Works out where a request goes, per mode.
fn target(req: &head::Request, mode: &Mode) -> Result<Target, &'static str> {
    match mode {
        Mode::Proxy => {
            if req.head.method == "CONNECT" {
                return Err("CONNECT is not allowed here");
            }
            let (authority, path) = target::absolute_http(&req.head.target)?;
            if req.host.as_deref().is_some_and(|h| !target::host_matches(h, &authority, 80)) {
                return Err("the Host header does not match the URI's host");
            }
            let port = authority.port_or(80);
            let host_header = host_header(&authority.host, port, 80);
            Ok(Target { host: authority.host, port, path, host_header })
        }
        Mode::Intercepted { host, port, .. } => {
            target::check_path(&req.head.target)?;
            let expected = Authority { host: host.clone(), port: Some(*port) };
            let header = req.host.as_deref().ok_or("a Host header is required")?;
            if !target::host_matches(header, &expected, 443) {
                return Err("the Host header does not match the TLS server name");
            }
            Ok(Target {
                host: host.clone(),
                port: *port,
                path: req.head.target.clone(),
                host_header: host_header(host, *port, 443),
            })
        }
        Mode::Transparent { hint, port } => {
            target::check_path(&req.head.target)?;
            let header = req.host.as_deref().ok_or("a Host header is required")?;
            let authority = Authority::parse(header).ok_or("the Host header is not a valid host[:port]")?;
            if authority.port_or(*port) != *port {
                return Err("the Host header's port differs from the connection's");
            }
            if hint.as_ref().is_some_and(|h| *h != authority.host) {
                return Err("the Host header does not match the name the guest resolved");
            }
            let host_header = host_header(&authority.host, *port, 80);
            Ok(Target { host: authority.host, port: *port, path: req.head.target.clone(), host_header })
        }
    }
}

fn host_header(host: &str, port: u16, default: u16) -> String {
    let host = if host.contains(':') { format!("[{host}]") } else { host.to_string() };
    match port == default {
        true => host,
        false => format!("{host}:{port}"),
    }
}

/// One request and its response. Returns true if the client connection may
/// carry another request.
async fn exchange(
    inner: &Inner,
    client: &mut Conn,
    sandbox: &str,
    mode: &mut Mode,
    req: head::Request,
    upstream: &mut Option<Upstream>,
) -> bool {
    let method = req.head.method.clone();
    if matches!(mode, Mode::Intercepted { .. }) && echoes_request(&method) {
        let (host, port) = mode.fallback();
        let mut tracker = Tracker::start(&inner.sink, sandbox, &method, host, port, mode.log_mode());
        let why = format!("{method} echoes the request, credentials included; refused where the proxy adds them");
        tracker.note(why.clone());
        tracker.path(&req.head.target);
        tracker.status(405);
        let _ = client.write_all(&reply::method_not_allowed(&why)).await;
        tracker.finish(LogVerdict::Denied);
        return false;
    }
    let target = match target(&req, mode) {
        Ok(t) => t,
        Err(why) => {
            refuse(inner, client, sandbox, mode, &method, why).await;
            return false;
        }
    };
    let mut tracker = Tracker::start(&inner.sink, sandbox, &method, &target.host, target.port, mode.log_mode());
    tracker.path(&target.path);
    let policy = inner.policy.snapshot();
    let request = Request::new(sandbox, &target.host, target.port);
    let decision = policy.decide(&request);
    tracker.decision(&decision);
    if !decision.is_allowed() {
        tracker.status(403);
        let _ = client.write_all(&reply::forbidden(&request, &decision)).await;
        tracker.finish(LogVerdict::Denied);
        return false;
    }
    if let Some(decision) = policy.decide_request(&request, &method, &target.path) {
        tracker.decision(&decision);
        if !decision.is_allowed() {
            tracker.status(403);
            let page = reply::request_forbidden(&request, &method, &target.path, &decision);
            let _ = client.write_all(&page).await;
            tracker.finish(LogVerdict::Denied);
            return false;
        }
    }

    let mut headers = Headers::from_entries(head::end_to_end(&req.head, true));
    let note = match (&inner.intercept, &*mode) {
        (Some(hook), Mode::Intercepted { .. }) => hook.rewrite(sandbox, &target.host, &mut headers),
        (Some(hook), _) => hook.inspect(sandbox, &target.host, &headers),
        (None, _) => None,
    };
    if let Some(note) = note {
        tracker.note(note);
    }
    let mut scrubber = match (&inner.intercept, &mut *mode) {
        (Some(hook), Mode::Intercepted { scrub_cache, .. }) => {
            Scrubber::cached(scrub_cache, hook.redactions(sandbox, &target.host))
        }
        _ => None,
    };
    if scrubber.is_some() {
        // An encoded answer, or compressed WebSocket frames, could not be checked for the credential.
        if headers.get("Accept-Encoding") != Some(b"identity") {
            let _ = headers.set("Accept-Encoding", b"identity");
        }
        if wants_websocket(&req) {
            headers.remove("Sec-WebSocket-Extensions");
        }
    }

    let up = match upstream_for(inner, &policy, &request, mode, upstream).await {
        Ok(up) => up,
        Err(Refusal::Denied(d)) => {
            tracker.decision(&d);
            tracker.status(403);
            let _ = client.write_all(&reply::forbidden(&request, &d)).await;
            tracker.finish(LogVerdict::Denied);
            return false;
        }
        Err(Refusal::Failed(why)) => {
            tracker.status(502);
            let _ = client.write_all(&reply::bad_gateway(&why)).await;
            tracker.note(why);
            tracker.finish(LogVerdict::Failed);
            return false;
        }
    };
    let (up_before, down_before) = (up.conn.written, up.conn.read);
    let outcome = match mode {
        // The whole intercepted tunnel is watched (`tunnel::run`).
        Mode::Intercepted { .. } => relay(inner, client, &req, &target, headers, up, scrubber.as_mut()).await,
        _ => {
            let dest = Destination { sandbox, host: &target.host, port: target.port, ip: up.ip };
            let relayed = guard::watch(&inner.policy, &dest, async {
                Ok(relay(inner, client, &req, &target, headers, up, None).await)
            });
            relayed.await.unwrap_or_else(|cut| Err(Failure::Cut(cut)))
        }
    };
    tracker.bytes(up.conn.written - up_before, up.conn.read - down_before);
    if let Some(n) = scrubber.as_ref().map(|s| s.replaced).filter(|&n| n > 0) {
        tracker.note(format!("took the credential out of the answer ({n}×)"));
    }
    up.last_used = Instant::now();
    match outcome {
        Ok(done) => {
            tracker.status(done.status);
            if !done.reuse_upstream {
                *upstream = None;
            }
            if done.websocket {
                tracker.note("WebSocket");
            }
            tracker.finish(LogVerdict::Allowed);
            !done.close_client
        }
        Err(Failure::Cut(cut)) => {
            *upstream = None;
            let verdict = cut.log(&mut tracker);
            tracker.finish(verdict);
            false
        }
        Err(failure) => {
            *upstream = None;
            let (verdict, reply) = match &failure {
                Failure::Client(why) => {
                    tracker.status(400);
                    (LogVerdict::Denied, Some(reply::bad_request(why)))
                }
                Failure::Upstream(why) => {
                    tracker.status(502);
                    (LogVerdict::Failed, Some(reply::bad_gateway(why)))
                }
                Failure::Midway(_) | Failure::Cut(_) => (LogVerdict::Failed, None),
            };
            if let Some(reply) = reply {
                let _ = client.write_all(&reply).await;
            }
            tracker.note(failure.note());
            tracker.finish(verdict);
            false
        }
    }
}

/// The upstream connection for `request`: the kept one if it fits (its
/// address re-checked against the current policy), else a new one.
async fn upstream_for<'a>(
    inner: &Inner,
    policy: &CompiledPolicy,
    request: &Request<'_>,
    mode: &mut Mode,
    slot: &'a mut Option<Upstream>,
) -> Result<&'a mut Upstream, Refusal> {
    let mut reusable = slot
        .as_ref()
        .is_some_and(|u| u.host == request.host && u.port == request.port && u.last_used.elapsed() < REUSE_WINDOW);
    if let (true, Some(kept)) = (reusable, slot.as_mut()) {
        reusable = !kept.conn.unusable().await;
    }
    if reusable {
        if let Some(ip) = slot.as_ref().map(|u| u.ip) {
            let decision = policy.decide_address(request, ip);
            if !decision.is_allowed() {
                *slot = None;
                return Err(Refusal::Denied(decision));
            }
        }
    } else {
        *slot = None;
        let connected = match mode {
            Mode::Intercepted { preconnected, .. } => match preconnected.take() {
                Some(c) => c,
                None => inner.connect(policy, request).await?,
            },
            _ => inner.connect(policy, request).await?,
        };
        let ip = connected.ip;
        let conn = match mode {
            Mode::Intercepted { host, .. } => {
                Conn::new(Box::new(inner.tls(connected.tcp, host).await.map_err(Refusal::Failed)?))
            }
            _ => Conn::new(Box::new(connected.tcp)),
        };
        let host = request.host.to_string();
        *slot = Some(Upstream { host, port: request.port, ip, conn, last_used: Instant::now() });
    }
    slot.as_mut().ok_or_else(|| Refusal::Failed("no upstream connection".to_string()))
}

/// How a completed exchange leaves the connections.
struct Done {
    /// The response's status.
    status: u16,
    close_client: bool,
    reuse_upstream: bool,
    /// The exchange became a WebSocket, relayed until both sides closed.
    websocket: bool,
}

/// Why an exchange failed.
enum Failure {
    /// The guest's request was malformed (400).
    Client(&'static str),
    /// The upstream failed before the response started (502).
    Upstream(String),
    /// Something failed after the response started; the connection is cut.
    Midway(String),
    /// The proxy ended it: the policy now denies it, or a WebSocket was idle.
    Cut(Cut),
}

impl Failure {
    fn note(&self) -> String {
        match self {
            Failure::Client(why) => why.to_string(),
            Failure::Upstream(why) | Failure::Midway(why) => why.clone(),
            Failure::Cut(_) => "cut by the proxy".to_string(),
        }
    }
}

/// Sends the request upstream and the response back.
async fn relay(
    inner: &Inner,
    client: &mut Conn,
    req: &head::Request,
    target: &Target,
    headers: Headers,
    up: &mut Upstream,
    mut scrub: Option<&mut Scrubber>,
) -> Result<Done, Failure> {
    let limits = &inner.limits;
    let method = &req.head.method;
    let mut entries = headers.into_entries();
    let websocket = wants_websocket(req);
    if websocket {
        // Hop-by-hop, so stripped above; asked for again, for this hop.
        entries.push(("Connection".to_string(), b"Upgrade".to_vec()));
        entries.push(("Upgrade".to_string(), b"websocket".to_vec()));
    }
    let out = head::write_request(method, &target.path, &target.host_header, &entries, req.framing);
    if req.expect_continue && req.framing != Framing::Empty {
        // The head goes now: the upstream may answer before the body comes.
        up.conn.write_all(&out).await.map_err(|e| Failure::Upstream(format!("sending the request failed: {e}")))?;
        let _ = client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
    } else {
        // The head leaves with the body's first piece (or alone, if it has none).
        up.conn.queue(&out);
    }
    match body::relay(client, req.framing, &mut up.conn, req.framing, limits.idle_timeout, None).await {
        Ok(()) => {}
        Err(BodyError::Framing(why)) => return Err(Failure::Client(why)),
        Err(BodyError::Read(e)) => return Err(Failure::Midway(format!("reading the request body failed: {e}"))),
        Err(BodyError::Write(e)) => return Err(Failure::Upstream(format!("sending the request failed: {e}"))),
    }

    let mut response = loop {
        let head = match head::read(&mut up.conn, Kind::Response, limits.max_head, limits.response_timeout).await {
            Ok(Some(head)) => head,
            Ok(None) => return Err(Failure::Upstream("the upstream closed without a response".to_string())),
            Err(HeadError::Malformed(why)) => {
                return Err(Failure::Upstream(format!("the upstream's response is malformed: {why}")))
            }
            Err(HeadError::Io(e)) => return Err(Failure::Upstream(format!("reading the response failed: {e}"))),
        };
        match head.status {
            101 if websocket && head.tokens("upgrade") == ["websocket"] => {
                return splice_websocket(client, head, up, scrub, limits.tunnel_idle_timeout).await;
            }
            101 => {
                return Err(Failure::Upstream(
                    "the upstream switched to a protocol the proxy does not relay (only WebSocket, when asked)"
                        .to_string(),
                ))
            }
            100..=199 => continue,
            _ => break head,
        }
    };
    let framing = head::response_framing(&response, method).map_err(|why| Failure::Upstream(why.to_string()))?;
    let resized = scrub.as_ref().is_some_and(|s| !s.keeps_length());
    let to_client = match (framing, req.head.http10) {
        (Framing::Chunked | Framing::UntilClose, true) => Framing::UntilClose,
        (Framing::UntilClose, false) => Framing::Chunked,
        // The scrubbed body may not have the length the service announced.
        (Framing::Length(_), false) if resized => Framing::Chunked,
        (Framing::Length(_), true) if resized => Framing::UntilClose,
        (f, _) => f,
    };
    let close_client = req.close || to_client == Framing::UntilClose;
    let mut headers = head::end_to_end(&response, false);
    if framing == Framing::Empty && !matches!(response.status, 100..=199 | 204) {
        // HEAD and 304 responses describe the body they would have had.
        headers.extend(response.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("content-length")).cloned());
    }
    if let Some(s) = scrub.as_deref_mut() {
        if framing != Framing::Empty {
            if let Some(coding) = unreadable_coding(&response) {
                return Err(Failure::Upstream(format!(
                    "the service answered in {coding} encoding although asked for none; \
                     it could hold the credential, so it is not passed on"
                )));
            }
        }
        scrub_head(s, &mut response, &mut headers);
    }
    let out = head::write_response(&response, &headers, to_client, close_client);
    client.queue(&out);
    body::relay(&mut up.conn, framing, client, to_client, limits.response_timeout, scrub)
        .await
        .map_err(|e| Failure::Midway(format!("relaying the response body failed: {e}")))?;
    let upstream_close = response.http10 || response.tokens("connection").iter().any(|t| t == "close");
    Ok(Done {
        status: response.status,
        close_client,
        reuse_upstream: framing != Framing::UntilClose && !upstream_close,
        websocket: false,
    })
}

/// Methods whose answer repeats the request, headers and all.
fn echoes_request(method: &str) -> bool {
    method.eq_ignore_ascii_case("TRACE") || method.eq_ignore_ascii_case("TRACK")
}

/// The content coding of a response, if it is one the proxy cannot read through.
fn unreadable_coding(response: &head::Head) -> Option<String> {
    let codings = response.tokens("content-encoding");
    codings.into_iter().find(|c| c != "identity")
}

/// Takes the secrets out of a response's reason phrase and headers.
fn scrub_head(scrub: &mut Scrubber, response: &mut head::Head, headers: &mut [(String, Vec<u8>)]) {
    if scrub.contains_secret(response.reason.as_bytes()) {
        response.reason = String::from_utf8_lossy(&scrub.whole(response.reason.as_bytes())).into_owned();
    }
    for (_, value) in headers.iter_mut() {
        scrub.in_place(value);
    }
}

/// A WebSocket opening handshake the proxy relays: `GET` without a body,
/// `Connection: upgrade` and `Upgrade: websocket` and nothing else (no h2c).
fn wants_websocket(req: &head::Request) -> bool {
    req.head.method == "GET"
        && req.framing == Framing::Empty
        && req.head.tokens("connection").iter().any(|t| t == "upgrade")
        && req.head.tokens("upgrade") == ["websocket"]
}

/// Hands the guest the upstream's `101 Switching Protocols` and then relays
/// bytes both ways, untouched, until both sides are done. The connection
/// was decided (and its credentials injected) on the handshake request; the
/// frames after it are the peers' own. Idle for `idle`, it is cut.
async fn splice_websocket(
    client: &mut Conn,
    mut response: head::Head,
    up: &mut Upstream,
    mut scrub: Option<&mut Scrubber>,
    idle: Duration,
) -> Result<Done, Failure> {
    let mut headers = head::end_to_end(&response, false);
    if let Some(s) = scrub.as_deref_mut() {
        if !response.tokens("sec-websocket-extensions").is_empty() {
            // Compressed frames could carry the credential unseen; none was offered.
            return Err(Failure::Upstream("the service turned on a WebSocket extension nobody offered".into()));
        }
        scrub_head(s, &mut response, &mut headers);
    }
    headers.push(("Connection".to_string(), b"Upgrade".to_vec()));
    headers.push(("Upgrade".to_string(), b"websocket".to_vec()));
    let out = head::write_response(&response, &headers, Framing::Empty, false);
    client.write_all(&out).await.map_err(|e| Failure::Midway(format!("writing the response failed: {e}")))?;
    let copied = match scrub {
        // Frames count their bytes: each secret becomes as many bytes of its placeholder.
        Some(s) => {
            let mut scrubbed = ScrubbedReads::new(&mut up.conn, s.same_length());
            let copied = guard::copy_until_idle(client, &mut scrubbed, idle).await;
            s.replaced += scrubbed.replaced();
            copied
        }
        None => guard::copy_until_idle(client, &mut up.conn, idle).await,
    };
    copied.map_err(Failure::Cut)?.map_err(|e| Failure::Midway(format!("the WebSocket ended with an error: {e}")))?;
    Ok(Done { status: 101, close_client: true, reuse_upstream: false, websocket: true })
}
