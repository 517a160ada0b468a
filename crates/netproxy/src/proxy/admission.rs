//! How many connections one proxy serves at once. Every guest connection
//! holds a slot while it is served; past [`Limits::max_connections`](super::Limits::max_connections)
//! a new one is refused before anything is read from it, so a guest cannot
//! grow the host's tasks, sockets or memory by opening connections. Refusals
//! are logged as one record per [`REFUSALS_LOGGED_EVERY`], with a count.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::log::{ConnectionRecord, ConnectionSink, LogMode, LogVerdict};

/// At most one record of refused connections per this long.
pub const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(10);

/// The slots of one proxy.
pub(crate) struct Admission {
    max: usize,
    open: Arc<AtomicUsize>,
    /// When refusals were last logged, and how many came since.
    refused: Mutex<(Option<Instant>, u64)>,
}

/// What [`Admission::admit`] decided.
pub(crate) enum Admit {
    /// Served; the slot is freed when this is dropped.
    In(Slot),
    /// Over the limit: close it.
    Refused,
}

/// A taken slot.
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub(crate) fn new(max: usize) -> Admission {
        Admission { max: max.max(1), open: Arc::default(), refused: Mutex::new((None, 0)) }
    }

    /// Takes a slot for a connection from `sandbox`, or refuses it (and logs that, rate-limited).
    pub(crate) fn admit(&self, sink: &Arc<dyn ConnectionSink>, sandbox: &str, mode: LogMode) -> Admit {
        let taken = self.open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1));
        if taken.is_ok() {
            return Admit::In(Slot(Arc::clone(&self.open)));
        }
        let report = {
            let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
            refused.1 += 1;
            match refused.0 {
                Some(at) if at.elapsed() < REFUSALS_LOGGED_EVERY => None,
                _ => {
                    refused.0 = Some(Instant::now());
                    Some(std::mem::take(&mut refused.1))
                }
            }
        };
        if let Some(count) = report {
            sink.record(refusal_record(sandbox, mode, self.max, count));
        }
        Admit::Refused
    }
}

fn refusal_record(sandbox: &str, mode: LogMode, max: usize, count: u64) -> ConnectionRecord {
    let started_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let note = format!(
        "refused {count} connection(s): {max} already open, the limit for one sandbox \
         (at most one such record per {} s)",
        REFUSALS_LOGGED_EVERY.as_secs()
    );
    ConnectionRecord::notice(sandbox, started_ms, mode, LogVerdict::Denied, note)
}
