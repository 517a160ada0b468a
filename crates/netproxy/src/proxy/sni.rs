//! Reading the server name (SNI) from a TLS ClientHello without terminating
//! TLS, so the proxy can check it against the CONNECT host and decide whether
//! to intercept before anything reaches the upstream.
//!
//! The input is guest-controlled: every length is checked against what is
//! left, the hello is bounded by [`MAX_HELLO`], and anything odd — several
//! host names, a duplicated extension, a name that is not a host name (an IP
//! address included), an encrypted ClientHello (ECH) whose outer name is a
//! cover — is [`Hello::Invalid`] rather than a best guess.

#[cfg(test)]
mod tests;

/// The largest ClientHello body accepted (real ones, post-quantum key shares
/// included, are a few kilobytes).
pub(crate) const MAX_HELLO: usize = 16 * 1024;
/// The most bytes worth buffering for [`parse`]: the largest hello split into
/// one-byte records (five bytes of header each).
pub(crate) const MAX_INPUT: usize = 6 * (MAX_HELLO + 4);

const HANDSHAKE_RECORD: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const MAX_RECORD: usize = 1 << 14;
const EXT_SERVER_NAME: u16 = 0;
/// `encrypted_client_hello` (RFC 9849): the real hello, server name included,
/// is encrypted to the server; the outer name is a cover.
const EXT_ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;
const NAME_TYPE_HOST: u8 = 0;
const MAX_EXTENSIONS: usize = 128;

/// What the bytes read so far are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hello {
    /// A TLS handshake that needs more bytes.
    Incomplete,
    /// Not a TLS handshake at all.
    NotTls,
    /// A well-formed ClientHello, with its host name (lowercase, no trailing
    /// dot) if it sent one.
    Parsed {
        /// The SNI host name.
        sni: Option<String>,
    },
    /// TLS, but the ClientHello is malformed or too large.
    Invalid(&'static str),
}

/// Parses the start of a connection as TLS records carrying a ClientHello.
pub(crate) fn parse(input: &[u8]) -> Hello {
    let mut handshake: Vec<u8> = Vec::new();
    let mut rest = input;
    loop {
        let first = handshake.is_empty();
        let not_handshake = || match first {
            true => Hello::NotTls,
            false => Hello::Invalid("a non-handshake record interrupts the ClientHello"),
        };
        match rest {
            []
            | [HANDSHAKE_RECORD]
            | [HANDSHAKE_RECORD, 3]
            | [HANDSHAKE_RECORD, 3, _]
            | [HANDSHAKE_RECORD, 3, _, _] => return Hello::Incomplete,
            [HANDSHAKE_RECORD, 3, minor, ..] if *minor <= 4 => {}
            _ => return not_handshake(),
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 || len > MAX_RECORD {
            return Hello::Invalid("a TLS record has an invalid length");
        }
        let fragment = &rest[5..rest.len().min(5 + len)];
        handshake.extend_from_slice(fragment);
        if handshake.len() >= 4 {
            if handshake[0] != CLIENT_HELLO {
                return Hello::Invalid("the first handshake message is not a ClientHello");
            }
            let body_len = usize::from(handshake[1]) << 16 | usize::from(handshake[2]) << 8 | usize::from(handshake[3]);
            if body_len > MAX_HELLO {
                return Hello::Invalid("the ClientHello is too large");
            }
            if handshake.len() >= 4 + body_len {
                return parse_body(&handshake[4..4 + body_len]);
            }
        }
        if fragment.len() < len {
            return Hello::Incomplete;
        }
        rest = &rest[5 + len..];
    }
}

/// A cursor over untrusted bytes; every read is bounds-checked.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self) -> Option<Cursor<'a>> {
        let n = self.u8()?;
        self.take(usize::from(n)).map(Cursor)
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self) -> Option<Cursor<'a>> {
        let n = self.u16()?;
        self.take(usize::from(n)).map(Cursor)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn parse_body(body: &[u8]) -> Hello {
    match client_hello(body) {
        Ok(sni) => Hello::Parsed { sni },
        Err(why) => Hello::Invalid(why),
    }
}

fn client_hello(body: &[u8]) -> Result<Option<String>, &'static str> {
    const TRUNCATED: &str = "the ClientHello is truncated";
    let mut c = Cursor(body);
    let version = c.u16().ok_or(TRUNCATED)?;
    if version >> 8 != 3 {
        return Err("the ClientHello has an unknown version");
    }
    c.take(32).ok_or(TRUNCATED)?;
    let session = c.vec8().ok_or(TRUNCATED)?;
    if session.0.len() > 32 {
        return Err("the session id is longer than 32 bytes");
    }
    let suites = c.vec16().ok_or(TRUNCATED)?;
    if suites.0.is_empty() || suites.0.len() % 2 != 0 {
        return Err("the cipher suite list is malformed");
    }
    if c.vec8().ok_or(TRUNCATED)?.is_empty() {
        return Err("the compression method list is empty");
    }
    if c.is_empty() {
        return Ok(None);
    }
    let mut extensions = c.vec16().ok_or(TRUNCATED)?;
    if !c.is_empty() {
        return Err("bytes follow the extensions");
    }
    let mut seen = Vec::new();
    let mut sni = None;
    while !extensions.is_empty() {
        let kind = extensions.u16().ok_or(TRUNCATED)?;
        let data = extensions.vec16().ok_or(TRUNCATED)?;
        if seen.contains(&kind) {
            return Err("an extension appears twice");
        }
        if seen.len() == MAX_EXTENSIONS {
            return Err("too many extensions");
        }
        seen.push(kind);
        if kind == EXT_ENCRYPTED_CLIENT_HELLO {
            return Err(
                "it carries encrypted_client_hello (ECH), which hides the real server name behind a cover name",
            );
        }
        if kind == EXT_SERVER_NAME {
            sni = server_name(data)?;
        }
    }
    Ok(sni)
}

/// The `server_name` extension: a list of (type, name); at most one host name.
fn server_name(mut data: Cursor<'_>) -> Result<Option<String>, &'static str> {
    const MALFORMED: &str = "the server name extension is malformed";
    let mut list = data.vec16().ok_or(MALFORMED)?;
    if !data.is_empty() || list.is_empty() {
        return Err(MALFORMED);
    }
    let mut host = None;
    while !list.is_empty() {
        let kind = list.u8().ok_or(MALFORMED)?;
        let name = list.vec16().ok_or(MALFORMED)?;
        if kind != NAME_TYPE_HOST {
            continue;
        }
        if host.is_some() {
            return Err("the ClientHello names several hosts");
        }
        host = Some(host_name(name.0).ok_or("the server name is not a valid host name")?);
    }
    Ok(host)
}

/// A DNS host name as SNI carries it: ASCII letters, digits, `-` and `_`,
/// dot-separated, not an IP address. Lowercased, trailing dot removed.
fn host_name(raw: &[u8]) -> Option<String> {
    let name = raw.strip_suffix(b".").unwrap_or(raw);
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    let label_ok = |l: &[u8]| {
        !l.is_empty() && l.len() <= 63 && l.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !name.split(|&b| b == b'.').all(label_ok) {
        return None;
    }
    let last = name.rsplit(|&b| b == b'.').next()?;
    if last.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(String::from_utf8_lossy(name).to_ascii_lowercase())
}
