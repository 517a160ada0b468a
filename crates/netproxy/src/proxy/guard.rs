//! Open connections under a changing policy. A tunnel, a WebSocket or a
//! response in flight was allowed when it began; [`watch`] runs it while
//! deciding its destination again — the name and the address actually
//! connected to, as [`connect`](super::server::Inner::connect) did — on every
//! policy update, and drops it the moment the policy denies it. Byte relays
//! ([`copy_until_idle`]) also end when nothing crossed either way for a
//! while, so abandoned tunnels don't hold a connection slot forever.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::log::LogVerdict;
use crate::policy::{Decision, Policy, Request};

use super::record::{rule_text, Tracker};

/// Where an open connection goes.
pub(crate) struct Destination<'a> {
    pub(crate) sandbox: &'a str,
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    /// The address the proxy connected to.
    pub(crate) ip: IpAddr,
}

/// Why an open connection was ended by the proxy.
#[derive(Debug)]
pub(crate) enum Cut {
    /// The policy now denies its destination.
    Denied(Decision),
    /// Nothing crossed it for this long.
    Idle(Duration),
}

impl Cut {
    /// Notes the cut on the connection's record; returns the record's verdict.
    pub(crate) fn log(&self, tracker: &mut Tracker) -> LogVerdict {
        match self {
            Cut::Denied(decision) => {
                tracker.decision(decision);
                let why = rule_text(decision).map_or_else(String::new, |rule| format!(" ({rule})"));
                tracker.note(format!("cut: the policy now denies it{why}"));
                LogVerdict::Denied
            }
            Cut::Idle(after) => {
                tracker.note(format!("cut: idle for {} s", after.as_secs()));
                LogVerdict::Allowed
            }
        }
    }
}

/// Runs `work` until it ends, or until the live policy denies `dest`
/// (decided now, and again on every update). A `work` that ends by itself
/// with a [`Cut`] (idle) passes it on.
///
/// `work` is polled on every wake; the watcher only when its own waker
/// fired (a policy update), since polling a parked `watch` subscription
/// takes a lock and a busy connection is woken several times per request.
pub(crate) async fn watch<T, F>(policy: &Policy, dest: &Destination<'_>, work: F) -> Result<T, Cut>
where
    F: Future<Output = Result<T, Cut>>,
{
    let mut work = std::pin::pin!(work);
    let mut watcher = std::pin::pin!(denied(policy, dest));
    // Set: the watcher runs on the first poll (it decides now and subscribes).
    let flag = Arc::new(WokenFlag { woken: AtomicBool::new(true), parent: AtomicWaker::new() });
    let waker = Waker::from(Arc::clone(&flag));
    std::future::poll_fn(move |cx| {
        flag.parent.register(cx.waker());
        if let Poll::Ready(done) = work.as_mut().poll(cx) {
            return Poll::Ready(done);
        }
        if flag.woken.swap(false, Ordering::AcqRel) {
            if let Poll::Ready(decision) = watcher.as_mut().poll(&mut Context::from_waker(&waker)) {
                return Poll::Ready(Err(Cut::Denied(decision)));
            }
        }
        Poll::Pending
    })
    .await
}

/// The watcher's waker: notes that it was woken and wakes the connection's task.
struct WokenFlag {
    woken: AtomicBool,
    parent: AtomicWaker,
}

impl Wake for WokenFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.parent.wake();
    }
}

/// Resolves once the live policy denies `dest`.
async fn denied(policy: &Policy, dest: &Destination<'_>) -> Decision {
    // Subscribed before the first look, so no update slips between the two.
    let mut changes = policy.changes();
    loop {
        let snapshot = policy.snapshot();
        let request = Request::new(dest.sandbox, dest.host, dest.port);
        let decision = snapshot.decide(&request);
        if !decision.is_allowed() {
            return decision;
        }
        let decision = snapshot.decide_address(&request, dest.ip);
        if !decision.is_allowed() {
            return decision;
        }
        changes.changed().await;
    }
}

/// Copies bytes both ways until both sides are done, or until no byte
/// crossed either way for `idle` ([`Cut::Idle`]).
pub(crate) async fn copy_until_idle<A, B>(a: &mut A, b: &mut B, idle: Duration) -> Result<io::Result<()>, Cut>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let activity = Activity::new();
    let (mut a, mut b) = (Counted { io: a, activity: &activity }, Counted { io: b, activity: &activity });
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::select! {
        biased;
        done = copy => Ok(done.map(|_| ())),
        () = activity.idle_for(idle) => Err(Cut::Idle(idle)),
    }
}

/// When bytes last crossed a relay.
struct Activity {
    origin: Instant,
    /// Milliseconds after `origin`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { origin: Instant::now(), last: AtomicU64::new(0) }
    }

    fn touch(&self) {
        let ms = self.origin.elapsed().as_millis();
        self.last.store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Resolves once nothing happened for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.origin + Duration::from_millis(self.last.load(Ordering::Relaxed));
            if last.elapsed() >= idle {
                return;
            }
            tokio::time::sleep_until(last + idle).await;
        }
    }
}

/// A stream whose reads mark the relay active (every write follows a read).
struct Counted<'a, S: ?Sized> {
    io: &'a mut S,
    activity: &'a Activity,
}

impl<S: AsyncRead + Unpin + ?Sized> AsyncRead for Counted<'_, S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut *this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin + ?Sized> AsyncWrite for Counted<'_, S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_shutdown(cx)
    }
}
