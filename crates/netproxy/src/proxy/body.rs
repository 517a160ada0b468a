//! Moving a message body from one side to the other, decoding the sender's
//! framing and re-encoding it for the receiver. Chunked bodies from the guest
//! are decoded strictly (hex size, optional extension, CRLF everywhere,
//! bounded lines and trailers) and re-chunked, so the upstream never sees
//! framing the proxy read differently.

use std::io;
use std::time::Duration;

use super::head::Framing;
use super::io::Conn;
use super::scrub::Scrubber;

/// The longest chunk-size line or trailer line accepted.
const MAX_LINE: usize = 4096;
/// The most trailer bytes accepted (they are read and dropped).
const MAX_TRAILERS: usize = 16 * 1024;
/// How much is moved at a time.
const PIECE: usize = 64 * 1024;

/// Why a body could not be moved.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The sender's framing is invalid.
    Framing(&'static str),
    /// Reading from the sender failed, timed out or ended early.
    Read(io::Error),
    /// Writing to the receiver failed.
    Write(io::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Framing(why) => f.write_str(why),
            BodyError::Read(e) => write!(f, "reading failed: {e}"),
            BodyError::Write(e) => write!(f, "writing failed: {e}"),
        }
    }
}

/// Copies a body framed as `src` from `from` to `to`, framed as `dst`
/// (`Length` only if `src` has the same length; `Chunked` or `UntilClose`
/// otherwise). `idle` bounds each wait for the sender. Bytes queued on `to`
/// (the message head) leave with the first piece, or at the end. With a
/// `scrub`ber the body passes through it (`dst` must then be `Length` only
/// if the scrubber keeps lengths).
pub(crate) async fn relay(
    from: &mut Conn,
    src: Framing,
    to: &mut Conn,
    dst: Framing,
    idle: Duration,
    scrub: Option<&mut Scrubber>,
) -> Result<(), BodyError> {
    let mut out = Encoder { to, chunked: dst == Framing::Chunked, scrub };
    match src {
        Framing::Empty => {}
        Framing::Length(len) => copy_exact(from, &mut out, len, idle).await?,
        Framing::UntilClose => loop {
            let piece = read_some(from, out.to, PIECE, idle).await?;
            if piece.is_empty() {
                break;
            }
            out.data(&piece).await?;
        },
        Framing::Chunked => loop {
            let line = read_line(from, out.to, idle).await?;
            let size = chunk_size(&line)?;
            if size == 0 {
                skip_trailers(from, out.to, idle).await?;
                break;
            }
            copy_exact(from, &mut out, size, idle).await?;
            if !read_line(from, out.to, idle).await?.is_empty() {
                return Err(BodyError::Framing("chunk data is not followed by CRLF"));
            }
        },
    }
    out.finish().await
}

struct Encoder<'a> {
    to: &'a mut Conn,
    chunked: bool,
    scrub: Option<&'a mut Scrubber>,
}

impl Encoder<'_> {
    async fn data(&mut self, bytes: &[u8]) -> Result<(), BodyError> {
        match self.scrub.as_mut() {
            Some(s) => {
                let clean = s.piece(bytes);
                self.write(&clean).await
            }
            None => self.write(bytes).await,
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), BodyError> {
        if bytes.is_empty() {
            // An empty chunk would end a chunked body.
            return Ok(());
        }
        let result = match self.chunked {
            true => {
                let mut framed = format!("{:x}\r\n", bytes.len()).into_bytes();
                framed.extend_from_slice(bytes);
                framed.extend_from_slice(b"\r\n");
                self.to.write_all(&framed).await
            }
            false => self.to.write_all(bytes).await,
        };
        result.map_err(BodyError::Write)
    }

    async fn finish(mut self) -> Result<(), BodyError> {
        if let Some(rest) = self.scrub.as_mut().map(|s| s.finish()) {
            self.write(&rest).await?;
        }
        match self.chunked {
            true => self.to.write_all(b"0\r\n\r\n").await.map_err(BodyError::Write),
            false => self.to.write_queued().await.map_err(BodyError::Write),
        }
    }
}

/// Reads more from the sender. Bytes queued for the receiver go out first:
/// nothing waits on the sender while holding them (a streamed response's
/// head must not wait for its first chunk).
async fn fill(from: &mut Conn, to: &mut Conn, idle: Duration) -> Result<usize, BodyError> {
    to.write_queued().await.map_err(BodyError::Write)?;
    match tokio::time::timeout(idle, from.fill()).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(BodyError::Read(e)),
        Err(_) => Err(BodyError::Read(io::ErrorKind::TimedOut.into())),
    }
}

/// Copies exactly `len` bytes from `from` to `out`; the stream ending first is an error.
async fn copy_exact(from: &mut Conn, out: &mut Encoder<'_>, len: u64, idle: Duration) -> Result<(), BodyError> {
    let mut left = len;
    while left > 0 {
        let piece = read_some(from, out.to, usize::try_from(left).unwrap_or(PIECE).min(PIECE), idle).await?;
        if piece.is_empty() {
            return Err(BodyError::Read(io::ErrorKind::UnexpectedEof.into()));
        }
        left -= piece.len() as u64;
        out.data(&piece).await?;
    }
    Ok(())
}

async fn read_some(from: &mut Conn, to: &mut Conn, max: usize, idle: Duration) -> Result<Vec<u8>, BodyError> {
    if from.buffered().is_empty() && fill(from, to, idle).await? == 0 {
        return Ok(Vec::new());
    }
    let n = from.buffered().len().min(max);
    let piece = from.buffered()[..n].to_vec();
    from.consume(n);
    Ok(piece)
}

/// One CRLF-terminated line, without the CRLF.
async fn read_line(from: &mut Conn, to: &mut Conn, idle: Duration) -> Result<Vec<u8>, BodyError> {
    loop {
        let buf = from.buffered();
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            if i == 0 || buf[i - 1] != b'\r' {
                return Err(BodyError::Framing("a chunked body line ends in a bare LF"));
            }
            let line = buf[..i - 1].to_vec();
            from.consume(i + 1);
            if line.contains(&b'\r') {
                return Err(BodyError::Framing("a chunked body line contains a bare CR"));
            }
            return Ok(line);
        }
        if buf.len() > MAX_LINE {
            return Err(BodyError::Framing("a chunked body line is too long"));
        }
        if fill(from, to, idle).await? == 0 {
            return Err(BodyError::Read(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// `chunk-size [; chunk-ext]`: 1 to 16 hex digits, no spaces.
fn chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let size = line.split(|&b| b == b';').next().unwrap_or_default();
    if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
        return Err(BodyError::Framing("invalid chunk size"));
    }
    if line[size.len()..].iter().any(|&b| b.is_ascii_control() && b != b'\t') {
        return Err(BodyError::Framing("invalid chunk extension"));
    }
    let text = std::str::from_utf8(size).map_err(|_| BodyError::Framing("invalid chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| BodyError::Framing("invalid chunk size"))
}

async fn skip_trailers(from: &mut Conn, to: &mut Conn, idle: Duration) -> Result<(), BodyError> {
    let mut total = 0;
    loop {
        let line = read_line(from, to, idle).await?;
        if line.is_empty() {
            return Ok(());
        }
        total += line.len();
        if total > MAX_TRAILERS {
            return Err(BodyError::Framing("the chunked trailers are too large"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Relays `input` (framed `src`) re-chunked; returns what came out or the error.
    async fn run(input: &[u8], src: Framing) -> Result<Vec<u8>, String> {
        let (mut client, proxy_side) = tokio::io::duplex(1 << 20);
        let (sink_side, mut sink) = tokio::io::duplex(1 << 20);
        client.write_all(input).await.expect("write");
        drop(client);
        let mut from = Conn::new(Box::new(proxy_side));
        let mut to = Conn::new(Box::new(sink_side));
        let result = relay(&mut from, src, &mut to, Framing::Chunked, Duration::from_secs(5), None).await;
        drop(to);
        let mut out = Vec::new();
        sink.read_to_end(&mut out).await.expect("read");
        result.map(|()| out).map_err(|e| format!("{e:?}"))
    }

    #[tokio::test]
    async fn chunked_bodies_are_decoded_and_rechunked() {
        let out = run(b"3;ext=1\r\nabc\r\n1\r\nd\r\n0\r\nX-T: 1\r\n\r\nNEXT", Framing::Chunked).await;
        assert_eq!(out.as_deref(), Ok(&b"3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n"[..]));
        let out = run(b"hello", Framing::Length(5)).await;
        assert_eq!(out.as_deref(), Ok(&b"5\r\nhello\r\n0\r\n\r\n"[..]));
    }

    #[tokio::test]
    async fn a_queued_head_leaves_before_the_relay_waits_for_the_sender() {
        let (mut sender, proxy_side) = tokio::io::duplex(1 << 16);
        let (sink_side, mut sink) = tokio::io::duplex(1 << 16);
        let mut from = Conn::new(Box::new(proxy_side));
        let mut to = Conn::new(Box::new(sink_side));
        to.queue(b"HEAD\r\n\r\n");
        let idle = Duration::from_secs(5);
        let relayed =
            tokio::spawn(
                async move { relay(&mut from, Framing::Chunked, &mut to, Framing::Chunked, idle, None).await },
            );
        let mut head = [0u8; 8];
        let waited = tokio::time::timeout(Duration::from_secs(2), sink.read_exact(&mut head)).await;
        assert!(waited.is_ok(), "the head was held back until the body's first chunk");
        assert_eq!(&head, b"HEAD\r\n\r\n");
        sender.write_all(b"2\r\nok\r\n0\r\n\r\n").await.expect("write");
        relayed.await.expect("join").expect("relay");
        let mut rest = [0u8; 12];
        sink.read_exact(&mut rest).await.expect("read");
        assert_eq!(&rest, b"2\r\nok\r\n0\r\n\r\n");
    }

    #[tokio::test]
    async fn a_queued_head_and_a_body_at_hand_leave_in_order() {
        let (mut sender, proxy_side) = tokio::io::duplex(1 << 16);
        let (sink_side, mut sink) = tokio::io::duplex(1 << 16);
        sender.write_all(b"hello").await.expect("write");
        let mut from = Conn::new(Box::new(proxy_side));
        let mut to = Conn::new(Box::new(sink_side));
        from.fill().await.expect("fill");
        to.queue(b"HEAD\r\n\r\n");
        relay(&mut from, Framing::Length(5), &mut to, Framing::Length(5), Duration::from_secs(5), None)
            .await
            .expect("relay");
        assert_eq!(to.written, 13);
        drop(to);
        let mut out = Vec::new();
        sink.read_to_end(&mut out).await.expect("read");
        assert_eq!(out, b"HEAD\r\n\r\nhello");
    }

    #[tokio::test]
    async fn invalid_chunk_framing_is_refused() {
        for bad in [
            &b"3\r\nabcd\r\n0\r\n\r\n"[..],
            b"3\nabc\r\n0\r\n\r\n",
            b" 3\r\nabc\r\n0\r\n\r\n",
            b"0x3\r\nabc\r\n0\r\n\r\n",
            b"ffffffffffffffff1\r\n",
            b"-1\r\n",
            b"3\r\nab",
            b"3\r\nabc\r\n",
        ] {
            assert!(run(bad, Framing::Chunked).await.is_err(), "{bad:?}");
        }
        let long = [b"1;".as_slice(), &[b'a'; MAX_LINE + 10]].concat();
        assert!(run(&long, Framing::Chunked).await.is_err());
        assert!(run(b"abc", Framing::Length(5)).await.is_err());
    }
}
