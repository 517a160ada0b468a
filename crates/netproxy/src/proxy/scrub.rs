//! Taking real credentials out of what an intercepted service answers.
//!
//! A service may echo what it was sent ("invalid key sk-…", a debug
//! endpoint, a TRACE-like reflection): the real value the proxy swapped in
//! must not reach the guest that way. A [`Scrubber`] replaces every
//! occurrence of each secret in a stream that arrives in pieces, so a value
//! split across reads, TLS records or chunks is still caught. It holds back
//! only the end of a piece that could be the start of a secret, so a
//! streamed answer (server-sent events) is not delayed when it cannot be
//! one.

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use memchr::memmem::Finder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::intercept::Redaction;

/// How long a stream's end that might start a secret is held back when
/// nothing more comes (a WebSocket message must not wait for the next one).
const HOLD: Duration = Duration::from_millis(20);

/// Replaces secrets in a stream, piece by piece.
#[derive(Clone)]
pub(crate) struct Scrubber {
    /// Shared by the scrubbers of one connection's responses (built once).
    finders: Arc<[(Finder<'static>, Vec<u8>)]>,
    /// The longest and the shortest secret, in bytes.
    longest: usize,
    shortest: usize,
    /// The end of the last piece, held back because a secret may start there.
    held: Vec<u8>,
    /// How many replacements were made.
    pub(crate) replaced: usize,
}

impl Scrubber {
    /// A scrubber for `redactions`, or `None` if there is nothing to take out.
    pub(crate) fn new(redactions: &[Redaction]) -> Option<Scrubber> {
        let finders: Arc<[_]> = redactions
            .iter()
            .filter(|r| !r.secret.is_empty())
            .map(|r| (Finder::new(&r.secret).into_owned(), r.replacement.clone()))
            .collect();
        let longest = finders.iter().map(|(f, _)| f.needle().len()).max()?;
        let shortest = finders.iter().map(|(f, _)| f.needle().len()).min()?;
        Some(Scrubber { finders, longest, shortest, held: Vec::new(), replaced: 0 })
    }

    /// The same secrets, each replaced by its replacement cut or repeated to
    /// the secret's length: for a stream whose framing counts bytes (WebSocket frames).
    pub(crate) fn same_length(&self) -> Scrubber {
        let finders = self
            .finders
            .iter()
            .map(|(f, r)| {
                let fitted = r.iter().copied().cycle().take(f.needle().len()).collect::<Vec<u8>>();
                let fitted = if fitted.len() == f.needle().len() { fitted } else { vec![b'*'; f.needle().len()] };
                (f.clone().into_owned(), fitted)
            })
            .collect();
        Scrubber { finders, longest: self.longest, shortest: self.shortest, held: Vec::new(), replaced: 0 }
    }

    /// A scrubber for `redactions`, reusing `cache` (built for the same
    /// redactions on an earlier request of the connection) when it fits.
    pub(crate) fn cached(
        cache: &mut Option<(Vec<Redaction>, Scrubber)>,
        redactions: Vec<Redaction>,
    ) -> Option<Scrubber> {
        // The cached one was never used (only clones are), so it holds nothing back.
        if let Some((seen, scrubber)) = cache.as_ref() {
            if *seen == redactions {
                return Some(scrubber.clone());
            }
        }
        let scrubber = Scrubber::new(&redactions)?;
        *cache = Some((redactions, scrubber.clone()));
        Some(scrubber)
    }

    /// True if every replacement is as long as its secret, so a body keeps its length.
    pub(crate) fn keeps_length(&self) -> bool {
        self.finders.iter().all(|(f, r)| f.needle().len() == r.len())
    }

    /// Scrubs a whole value at once (a header, a reason phrase).
    pub(crate) fn whole(&mut self, value: &[u8]) -> Vec<u8> {
        let mut out = self.piece(value).into_owned();
        out.extend(self.finish());
        out
    }

    /// True if a secret is in `value`.
    pub(crate) fn contains_secret(&self, value: &[u8]) -> bool {
        value.len() >= self.shortest && self.first_match(value).is_some()
    }

    /// Scrubs a whole value in place; leaves it alone (no copy) if no secret is in it.
    pub(crate) fn in_place(&mut self, value: &mut Vec<u8>) {
        if self.contains_secret(value) {
            *value = self.whole(value);
        }
    }

    /// Scrubs the next piece of a stream; what may begin a secret is kept
    /// for the next call. Borrows `input` when there is nothing to change.
    pub(crate) fn piece<'a>(&mut self, input: &'a [u8]) -> Cow<'a, [u8]> {
        if self.held.is_empty() && !self.contains_secret(input) {
            let keep = self.partial_suffix(input);
            self.held.extend_from_slice(&input[input.len() - keep..]);
            return Cow::Borrowed(&input[..input.len() - keep]);
        }
        let mut data = std::mem::take(&mut self.held);
        data.extend_from_slice(input);
        let mut out = Vec::with_capacity(data.len());
        let mut at = 0;
        while let Some((start, len, replacement)) = self.first_match(&data[at..]) {
            out.extend_from_slice(&data[at..at + start]);
            out.extend_from_slice(replacement);
            at += start + len;
            self.replaced += 1;
        }
        let keep = self.partial_suffix(&data[at..]);
        let end = data.len() - keep;
        out.extend_from_slice(&data[at..end]);
        self.held = data[end..].to_vec();
        Cow::Owned(out)
    }

    /// What is still held back: the stream ended, so it cannot become a secret.
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }

    /// The leftmost occurrence of any secret (the longest, if two start together).
    fn first_match(&self, data: &[u8]) -> Option<(usize, usize, &[u8])> {
        self.finders
            .iter()
            .filter_map(|(f, r)| f.find(data).map(|i| (i, f.needle().len(), r.as_slice())))
            .min_by_key(|&(i, len, _)| (i, std::cmp::Reverse(len)))
    }

    /// How long the longest end of `data` is that a secret starts with.
    /// Only positions holding a secret's first byte are compared.
    fn partial_suffix(&self, data: &[u8]) -> usize {
        let most = data.len().min(self.longest.saturating_sub(1));
        let tail_start = data.len() - most;
        let tail = &data[tail_start..];
        self.finders
            .iter()
            .filter_map(|(f, _)| {
                let needle = f.needle();
                memchr::memchr_iter(needle[0], tail).find(|&at| needle.starts_with(&tail[at..])).map(|at| most - at)
            })
            .max()
            .unwrap_or(0)
    }
}

/// A stream whose reads pass through a (same-length) [`Scrubber`]; writes
/// pass untouched. What might start a secret at the end of a read is held
/// back for at most [`HOLD`] when nothing more arrives.
pub(crate) struct ScrubbedReads<'a, S: ?Sized> {
    inner: &'a mut S,
    scrub: Scrubber,
    out: Vec<u8>,
    pos: usize,
    hold: Option<Pin<Box<Sleep>>>,
    ended: bool,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin + ?Sized> ScrubbedReads<'a, S> {
    pub(crate) fn new(inner: &'a mut S, scrub: Scrubber) -> Self {
        ScrubbedReads { inner, scrub, out: Vec::new(), pos: 0, hold: None, ended: false }
    }

    /// How many replacements were made.
    pub(crate) fn replaced(&self) -> usize {
        self.scrub.replaced
    }

    fn give(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.pos >= self.out.len() {
            return false;
        }
        let n = (self.out.len() - self.pos).min(buf.remaining());
        buf.put_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        true
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + ?Sized> AsyncRead for ScrubbedReads<'_, S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.give(buf) || this.ended {
                return Poll::Ready(Ok(()));
            }
            let mut raw = [0u8; 16 * 1024];
            let mut piece = ReadBuf::new(&mut raw);
            match Pin::new(&mut *this.inner).poll_read(cx, &mut piece) {
                Poll::Ready(Ok(())) if piece.filled().is_empty() => {
                    this.ended = true;
                    (this.out, this.pos) = (this.scrub.finish(), 0);
                }
                Poll::Ready(Ok(())) => {
                    this.hold = None;
                    (this.out, this.pos) = (this.scrub.piece(piece.filled()).into_owned(), 0);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if this.scrub.held.is_empty() => return Poll::Pending,
                Poll::Pending => {
                    let hold = this.hold.get_or_insert_with(|| Box::pin(tokio::time::sleep(HOLD)));
                    if std::future::Future::poll(hold.as_mut(), cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.hold = None;
                    (this.out, this.pos) = (this.scrub.finish(), 0);
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + ?Sized> AsyncWrite for ScrubbedReads<'_, S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubber() -> Scrubber {
        Scrubber::new(&[
            Redaction::new(b"sk-REAL-0123456789".to_vec(), b"sk-PLACEHOLDER-xyz".to_vec()),
            Redaction::new(b"ghp_realtoken".to_vec(), b"ph".to_vec()),
        ])
        .expect("secrets")
    }

    /// Feeds `input` split at every `step` bytes and returns everything that came out.
    fn split_run(input: &[u8], step: usize) -> Vec<u8> {
        let mut s = scrubber();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            out.extend_from_slice(&s.piece(piece));
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn a_secret_split_anywhere_is_replaced() {
        let input = b"error: key sk-REAL-0123456789 is invalid; also ghp_realtoken and sk-REAL-0123456789";
        let want = b"error: key sk-PLACEHOLDER-xyz is invalid; also ph and sk-PLACEHOLDER-xyz".to_vec();
        for step in 1..=input.len() {
            assert_eq!(split_run(input, step), want, "split every {step} bytes");
        }
    }

    #[test]
    fn only_a_possible_start_of_a_secret_is_held_back() {
        let mut s = scrubber();
        assert_eq!(&*s.piece(b"data: {\"text\":\"hi\"}\n\n"), b"data: {\"text\":\"hi\"}\n\n", "nothing held");
        assert_eq!(&*s.piece(b"the key is sk-RE"), b"the key is ");
        assert_eq!(&*s.piece(b"AD"), b"sk-READ", "not a secret after all");
        assert_eq!(&*s.piece(b"gh"), b"");
        assert_eq!(s.finish(), b"gh", "the end of the stream releases it");
    }

    #[test]
    fn near_misses_and_overlaps_pass_or_are_caught_correctly() {
        assert_eq!(split_run(b"sk-REAL-012345678", 3), b"sk-REAL-012345678", "one byte short");
        assert_eq!(split_run(b"sk-sk-REAL-0123456789", 2), b"sk-sk-PLACEHOLDER-xyz");
        assert_eq!(split_run(b"ghp_ghp_realtoken!", 5), b"ghp_ph!");
        let mut s = scrubber();
        assert_eq!(s.whole(b"Bearer ghp_realtoken"), b"Bearer ph");
        assert_eq!(s.replaced, 1);
        assert!(!s.keeps_length());
        assert!(Scrubber::new(&[]).is_none());
        assert!(Scrubber::new(&[Redaction::new(b"abc".to_vec(), b"xyz".to_vec())]).is_some_and(|s| s.keeps_length()));
        let mut fitted = scrubber().same_length();
        assert!(fitted.keeps_length());
        assert_eq!(fitted.whole(b"x ghp_realtoken y"), b"x phphphphphphp y");
    }

    #[tokio::test]
    async fn a_stream_is_scrubbed_across_reads_and_a_possible_start_is_released_when_nothing_follows() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut server, mut proxy_side) = tokio::io::duplex(1024);
        let mut reads = ScrubbedReads::new(&mut proxy_side, scrubber().same_length());
        server.write_all(b"frame one sk-REAL-01").await.unwrap();
        let mut got = vec![0u8; 10];
        reads.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"frame one ");
        server.write_all(b"23456789 and more").await.unwrap();
        let mut got = vec![0u8; 27];
        reads.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"sk-PLACEHOLDER-xyz and more");
        // A read that ends in what could start a secret is not kept waiting.
        server.write_all(b"last: sk-").await.unwrap();
        let mut got = vec![0u8; 9];
        tokio::time::timeout(Duration::from_secs(2), reads.read_exact(&mut got)).await.expect("released").unwrap();
        assert_eq!(got, b"last: sk-");
        assert_eq!(reads.replaced(), 1);
    }
}
