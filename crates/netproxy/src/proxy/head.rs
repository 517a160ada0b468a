//! HTTP/1 message heads: reading them within bounds, validating a request's
//! framing strictly, and writing heads out.
//!
//! Requests come from the guest, so anything that two HTTP implementations
//! could read differently — `Content-Length` with `Transfer-Encoding`,
//! several `Content-Length`s, a transfer coding other than `chunked`,
//! obs-fold, bare CR or LF — is refused with 400 instead of normalized.
//! (This is why the proxy parses HTTP itself: hyper's server quietly drops
//! a `Content-Length` that comes with `Transfer-Encoding` and merges
//! duplicates, so the proxy could not refuse them.)

use std::io;
use std::time::Duration;

use super::io::Conn;

/// The most headers a message may have.
const MAX_HEADERS: usize = 128;

/// A message head as received; header names keep their spelling.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    /// Request method, or empty for a response.
    pub(crate) method: String,
    /// Request target, or empty for a response.
    pub(crate) target: String,
    /// Response status, or 0 for a request.
    pub(crate) status: u16,
    /// Response reason phrase.
    pub(crate) reason: String,
    /// HTTP/1.0 rather than 1.1.
    pub(crate) http10: bool,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    /// Every value of `name`.
    pub(crate) fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// The comma-separated tokens of every `name` header, lowercase.
    pub(crate) fn tokens(&self, name: &str) -> Vec<String> {
        self.values(name)
            .flat_map(|v| {
                String::from_utf8_lossy(v).split(',').map(|t| t.trim().to_ascii_lowercase()).collect::<Vec<_>>()
            })
            .filter(|t| !t.is_empty())
            .collect()
    }
}

/// Why a head could not be read.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// Not a valid HTTP/1 head (the note says what).
    Malformed(&'static str),
    /// The peer closed or timed out partway through.
    Io(io::Error),
}

/// Which kind of head to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Request,
    Response,
}

/// Reads one head. `Ok(None)` if the stream ended (or stayed silent past
/// `timeout`) before its first byte.
pub(crate) async fn read(
    conn: &mut Conn,
    kind: Kind,
    max: usize,
    timeout: Duration,
) -> Result<Option<Head>, HeadError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if !conn.buffered().is_empty() {
            if let Some((head, len)) = parse(conn.buffered(), kind)? {
                conn.consume(len);
                return Ok(Some(head));
            }
            if conn.buffered().len() >= max {
                return Err(HeadError::Malformed("the message head is too large"));
            }
        }
        let started = !conn.buffered().is_empty();
        match tokio::time::timeout_at(deadline, conn.fill()).await {
            Ok(Ok(0)) | Err(_) if !started => return Ok(None),
            Ok(Ok(0)) => return Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into())),
            Err(_) => return Err(HeadError::Io(io::ErrorKind::TimedOut.into())),
            Ok(Err(e)) => return Err(HeadError::Io(e)),
            Ok(Ok(_)) => {}
        }
    }
}

/// Parses a complete head at the start of `buf`; `None` if more bytes are needed.
fn parse(buf: &[u8], kind: Kind) -> Result<Option<(Head, usize)>, HeadError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let malformed = |e: httparse::Error| {
        HeadError::Malformed(match e {
            httparse::Error::TooManyHeaders => "too many headers",
            httparse::Error::HeaderName => "invalid header name (or an obs-folded line)",
            httparse::Error::HeaderValue => "invalid header value",
            httparse::Error::Version => "not HTTP/1.0 or HTTP/1.1",
            _ => "malformed message head",
        })
    };
    let (head, len) = match kind {
        Kind::Request => {
            let mut req = httparse::Request::new(&mut raw);
            let httparse::Status::Complete(len) = req.parse(buf).map_err(malformed)? else { return Ok(None) };
            let head = Head {
                method: req.method.unwrap_or_default().to_string(),
                target: req.path.unwrap_or_default().to_string(),
                status: 0,
                reason: String::new(),
                http10: req.version == Some(0),
                headers: owned(req.headers),
            };
            (head, len)
        }
        Kind::Response => {
            let mut res = httparse::Response::new(&mut raw);
            let httparse::Status::Complete(len) = res.parse(buf).map_err(malformed)? else { return Ok(None) };
            let head = Head {
                method: String::new(),
                target: String::new(),
                status: res.code.unwrap_or_default(),
                reason: res.reason.unwrap_or_default().to_string(),
                http10: res.version == Some(0),
                headers: owned(res.headers),
            };
            (head, len)
        }
    };
    if kind == Kind::Request && bare_cr_or_lf(&buf[..len]) {
        return Err(HeadError::Malformed("line endings must be CRLF"));
    }
    Ok(Some((head, len)))
}

fn owned(headers: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    headers.iter().map(|h| (h.name.to_string(), h.value.to_vec())).collect()
}

fn bare_cr_or_lf(head: &[u8]) -> bool {
    head.iter().enumerate().any(|(i, &b)| match b {
        b'\n' => i == 0 || head[i - 1] != b'\r',
        b'\r' => head.get(i + 1) != Some(&b'\n'),
        _ => false,
    })
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// What the proxy needs from a request head once it is validated.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) head: Head,
    pub(crate) framing: Framing,
    /// The client asked to close after this exchange.
    pub(crate) close: bool,
    /// The client waits for `100 Continue` before sending the body.
    pub(crate) expect_continue: bool,
    /// The single `Host` header, if any.
    pub(crate) host: Option<String>,
}

/// Validates a request head's framing and `Host`.
pub(crate) fn request(head: Head) -> Result<Request, &'static str> {
    let lengths: Vec<&[u8]> = head.values("content-length").collect();
    let codings: Vec<&[u8]> = head.values("transfer-encoding").collect();
    let framing = match (lengths.as_slice(), codings.as_slice()) {
        ([], []) => Framing::Empty,
        ([_, _, ..], _) => return Err("several Content-Length headers"),
        (_, [_, _, ..]) => return Err("several Transfer-Encoding headers"),
        ([_], [_]) => return Err("both Content-Length and Transfer-Encoding"),
        ([len], []) => Framing::Length(content_length(len).ok_or("invalid Content-Length")?),
        ([], [_]) if head.http10 => return Err("Transfer-Encoding in an HTTP/1.0 request"),
        ([], [coding]) if coding.trim_ascii().eq_ignore_ascii_case(b"chunked") => Framing::Chunked,
        ([], [_]) => return Err("only Transfer-Encoding: chunked is accepted"),
    };
    let hosts: Vec<&[u8]> = head.values("host").collect();
    let host = match hosts.as_slice() {
        [] => None,
        [h] => Some(std::str::from_utf8(h).map_err(|_| "invalid Host header")?.trim().to_string()),
        _ => return Err("several Host headers"),
    };
    let connection = head.tokens("connection");
    let close = match head.http10 {
        true => !connection.iter().any(|t| t == "keep-alive"),
        false => connection.iter().any(|t| t == "close"),
    };
    let expect_continue = head.values("expect").any(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue"));
    Ok(Request { head, framing, close, expect_continue, host })
}

fn content_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// How a response body is delimited (RFC 9112 section 6.3). Upstreams are
/// not the guest, so this is lenient where it is safe: the proxy re-frames
/// what it forwards either way.
pub(crate) fn response_framing(head: &Head, request_method: &str) -> Result<Framing, &'static str> {
    if request_method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&head.status)
        || matches!(head.status, 204 | 304)
    {
        return Ok(Framing::Empty);
    }
    let codings = head.tokens("transfer-encoding");
    if let Some(last) = codings.last() {
        return Ok(if last == "chunked" { Framing::Chunked } else { Framing::UntilClose });
    }
    let mut length = None;
    for value in head.values("content-length") {
        for part in value.split(|&b| b == b',') {
            let n = content_length(part).ok_or("the upstream sent an invalid Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("the upstream sent conflicting Content-Length headers");
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::UntilClose, Framing::Length))
}

/// Header names the proxy never forwards: hop-by-hop headers, `Proxy-*`,
/// the framing headers it writes itself, and whatever `Connection` lists.
pub(crate) fn end_to_end(head: &Head, drop_host: bool) -> Vec<(String, Vec<u8>)> {
    const HOP: [&str; 9] = [
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "expect",
        "http2-settings",
    ];
    let listed = head.tokens("connection");
    head.headers
        .iter()
        .filter(|(n, _)| {
            let n = n.to_ascii_lowercase();
            !(HOP.contains(&n.as_str()) || n.starts_with("proxy-") || listed.contains(&n) || (drop_host && n == "host"))
        })
        .cloned()
        .collect()
}

/// Writes a request head for the upstream.
pub(crate) fn write_request(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(String, Vec<u8>)],
    framing: Framing,
) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
    write_headers(&mut out, headers, framing);
    out
}

/// Writes a response head for the client.
pub(crate) fn write_response(head: &Head, headers: &[(String, Vec<u8>)], framing: Framing, close: bool) -> Vec<u8> {
    let reason: String = head.reason.chars().filter(|c| !c.is_control()).collect();
    let mut out = format!("HTTP/1.1 {} {}\r\n", head.status, reason).into_bytes();
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    write_headers(&mut out, headers, framing);
    out
}

fn write_headers(out: &mut Vec<u8>, headers: &[(String, Vec<u8>)], framing: Framing) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) => out.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes()),
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::Empty | Framing::UntilClose => {}
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Request, &'static str> {
        match parse(text.as_bytes(), Kind::Request) {
            Ok(Some((head, _))) => request(head),
            Ok(None) => Err("incomplete"),
            Err(HeadError::Malformed(m)) => Err(m),
            Err(HeadError::Io(_)) => Err("io"),
        }
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let bad = [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        ];
        for text in bad {
            assert!(head(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn plain_requests_pass() {
        let r = head("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\n").expect("valid");
        assert_eq!((r.framing, r.close, r.host.as_deref()), (Framing::Length(5), true, Some("a")));
        let r = head("POST /x HTTP/1.1\r\nhost: a\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\n\r\n")
            .expect("valid");
        assert_eq!((r.framing, r.close, r.expect_continue), (Framing::Chunked, false, true));
        assert!(head("GET / HTTP/1.0\r\n\r\n").expect("valid").close);
    }

    #[test]
    fn hop_by_hop_and_proxy_headers_are_dropped() {
        let r = head("GET / HTTP/1.1\r\nHost: a\r\nConnection: x-secret\r\nX-Secret: 1\r\nProxy-Authorization: b\r\nKeep-Alive: 5\r\nUpgrade: h2c\r\nAccept: */*\r\n\r\n")
            .expect("valid");
        let kept: Vec<String> = end_to_end(&r.head, true).into_iter().map(|(n, _)| n).collect();
        assert_eq!(kept, ["Accept"]);
    }

    #[test]
    fn hostile_heads_never_panic() {
        // xorshift64 with a fixed seed: mutations of a valid request.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let valid = b"POST http://a.test:81/x HTTP/1.1\r\nHost: a.test:81\r\nContent-Length: 3\r\nX: y\r\n\r\nabc";
        for _ in 0..20_000 {
            let mut bytes = valid.to_vec();
            for _ in 0..1 + next() % 4 {
                let i = (next() % bytes.len() as u64) as usize;
                bytes[i] = next() as u8;
            }
            if let Ok(Some((head, _))) = parse(&bytes, Kind::Request) {
                if let Ok(req) = request(head) {
                    let _ = crate::proxy::target::absolute_http(&req.head.target);
                    let _ = end_to_end(&req.head, true);
                }
            }
            let _ = parse(&bytes, Kind::Response);
        }
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let res = |text: &str| match parse(text.as_bytes(), Kind::Response) {
            Ok(Some((h, _))) => h,
            _ => panic!("{text}"),
        };
        let h = res("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n");
        assert_eq!(response_framing(&h, "GET"), Ok(Framing::Length(4)));
        assert_eq!(response_framing(&h, "HEAD"), Ok(Framing::Empty));
        let h = res("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 4\r\n\r\n");
        assert_eq!(response_framing(&h, "GET"), Ok(Framing::Chunked));
        let h = res("HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n");
        assert!(response_framing(&h, "GET").is_err());
        let h = res("HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!(response_framing(&h, "GET"), Ok(Framing::UntilClose));
    }
}
