//! Stream plumbing: a boxed stream type, a buffered, counting stream that
//! hands back what it read ahead, and a stream that replays bytes already
//! read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Any byte stream the proxy serves or connects through.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A boxed [`Io`]: every connection is boxed once at the entry point so the
/// proxy's code is not generic over stream types.
pub(crate) type BoxIo = Box<dyn Io>;

/// How much is read from a stream at a time.
const READ_CHUNK: usize = 16 * 1024;

/// A stream with a read-ahead buffer. Parsers look at [`Conn::buffered`],
/// [`Conn::consume`] what they used, and [`Conn::fill`] when they need more;
/// what was read but not consumed goes back out with [`Conn::into_parts`].
/// Writes can be [`Conn::queue`]d to leave with the next write, so a message
/// head and a body that is already at hand cross as one TLS record and one
/// syscall. It counts the bytes that cross it each way.
pub(crate) struct Conn {
    io: BoxIo,
    buf: Vec<u8>,
    pos: usize,
    /// Queued bytes, written before anything else.
    pending: Vec<u8>,
    /// Bytes read from the stream so far.
    pub(crate) read: u64,
    /// Bytes written to the stream so far.
    pub(crate) written: u64,
}

impl Conn {
    pub(crate) fn new(io: BoxIo) -> Conn {
        Conn { io, buf: Vec::new(), pos: 0, pending: Vec::new(), read: 0, written: 0 }
    }

    /// Bytes read but not yet consumed.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Marks `n` buffered bytes as used.
    pub(crate) fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Reads more into the buffer; `Ok(0)` at end of stream. The caller bounds
    /// how much it lets accumulate. Cancel-safe: a read that is cut short by a
    /// timeout leaves the buffer as it was.
    pub(crate) async fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.reserve(READ_CHUNK);
        let n = self.io.read_buf(&mut self.buf).await?;
        self.read += n as u64;
        Ok(n)
    }

    /// True if the peer closed, sent something unasked, or failed — checked
    /// without waiting, before a kept connection is reused.
    ///
    /// One poll of a read, not a zero timeout: tokio's timer only fires on its
    /// next 1 ms tick, which cost every reused connection a millisecond.
    pub(crate) async fn unusable(&mut self) -> bool {
        if !self.buffered().is_empty() {
            return true;
        }
        let mut fill = std::pin::pin!(self.fill());
        std::future::poll_fn(|cx| match std::future::Future::poll(fill.as_mut(), cx) {
            std::task::Poll::Ready(_) => std::task::Poll::Ready(true),
            std::task::Poll::Pending => std::task::Poll::Ready(false),
        })
        .await
    }

    /// Holds `bytes` back to go out with the next [`Conn::write_all`] or
    /// [`Conn::write_queued`]. Whoever queues must make sure one of those
    /// follows before waiting for the peer's answer.
    pub(crate) fn queue(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// Writes the queued bytes, then all of `bytes`, in one write, and flushes.
    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let out = match self.pending.is_empty() {
            true => bytes,
            false => {
                self.pending.extend_from_slice(bytes);
                &self.pending[..]
            }
        };
        let result = self.io.write_all(out).await;
        if result.is_ok() {
            self.written += out.len() as u64;
        }
        self.pending.clear();
        result?;
        self.io.flush().await
    }

    /// Writes whatever is queued, and flushes.
    pub(crate) async fn write_queued(&mut self) -> io::Result<()> {
        match self.pending.is_empty() {
            true => Ok(()),
            false => self.write_all(&[]).await,
        }
    }

    /// Shuts the stream down for writing (TLS: sends close_notify).
    pub(crate) async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }

    /// The stream and the bytes read ahead of the consumer.
    pub(crate) fn into_parts(mut self) -> (BoxIo, Vec<u8>) {
        debug_assert!(self.pending.is_empty(), "queued bytes would be lost");
        let rest = self.buf.split_off(self.pos);
        (self.io, rest)
    }
}

/// A [`Conn`] is itself a stream once parsing is over (an upgraded
/// connection spliced to its peer): reads return the read-ahead first, and
/// every byte is counted. Queued bytes must have been written before.
impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.buffered().is_empty() {
            let n = this.buffered().len().min(buf.remaining());
            buf.put_slice(&this.buffered()[..n]);
            this.consume(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        this.read += (buf.filled().len() - before) as u64;
        poll
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        debug_assert!(this.pending.is_empty(), "queued bytes would be overtaken");
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            this.written += n as u64;
        }
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A stream whose first reads return `prefix` (bytes already read from it).
pub(crate) struct Prefixed {
    prefix: Vec<u8>,
    pos: usize,
    io: BoxIo,
}

impl Prefixed {
    pub(crate) fn new(prefix: Vec<u8>, io: BoxIo) -> Prefixed {
        Prefixed { prefix, pos: 0, io }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = (this.prefix.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
