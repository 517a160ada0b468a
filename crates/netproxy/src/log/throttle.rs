//! The per-sandbox rate limit on records: a token bucket per sandbox, so a
//! guest that opens connections as fast as it can writes at most
//! [`Rate::per_second`] records a second (after a burst of [`Rate::burst`])
//! and the shared log's writer keeps up with everyone else's. What is
//! dropped is counted and summarised in one record when the sandbox may
//! log again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// How many records one sandbox may log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Records a second, sustained. At least 1.
    pub per_second: u32,
    /// Records at once after a quiet spell. At least 1.
    pub burst: u32,
}

/// The buckets, keyed by sandbox name (chosen by the host, not the guest,
/// so there are as many as this process serves sandboxes).
#[derive(Debug)]
pub(super) struct Throttle {
    rate: Rate,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    /// In thousandths of a record.
    tokens: u64,
    refilled: Instant,
    /// Dropped since the last record let through.
    dropped: u64,
}

/// What [`Throttle::admit`] decided for one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admit {
    /// Over the rate: drop it.
    Drop,
    /// Log it; this many of the sandbox's records were dropped before it.
    Keep { dropped_before: u64 },
}

impl Throttle {
    pub(super) fn new(rate: Rate) -> Throttle {
        let rate = Rate { per_second: rate.per_second.max(1), burst: rate.burst.max(1) };
        Throttle { rate, buckets: Mutex::new(HashMap::new()) }
    }

    pub(super) fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes a token from `sandbox`'s bucket, if it has one.
    pub(super) fn admit(&self, sandbox: &str, now: Instant) -> Admit {
        let full = u64::from(self.rate.burst) * 1000;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = match buckets.get_mut(sandbox) {
            Some(b) => b,
            None => buckets.entry(sandbox.to_string()).or_insert(Bucket { tokens: full, refilled: now, dropped: 0 }),
        };
        let elapsed_ms = now.saturating_duration_since(bucket.refilled).as_millis();
        let earned = u64::try_from(elapsed_ms).unwrap_or(u64::MAX).saturating_mul(u64::from(self.rate.per_second));
        if earned > 0 {
            bucket.tokens = bucket.tokens.saturating_add(earned).min(full);
            bucket.refilled = now;
        }
        if bucket.tokens < 1000 {
            bucket.dropped += 1;
            return Admit::Drop;
        }
        bucket.tokens -= 1000;
        Admit::Keep { dropped_before: std::mem::take(&mut bucket.dropped) }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_the_rate_and_each_sandbox_has_its_own_bucket() {
        let throttle = Throttle::new(Rate { per_second: 10, burst: 5 });
        let t0 = Instant::now();
        let kept = (0..100).filter(|_| throttle.admit("noisy", t0) != Admit::Drop).count();
        assert_eq!(kept, 5);
        assert_eq!(throttle.admit("quiet", t0), Admit::Keep { dropped_before: 0 }, "another sandbox is unaffected");
        assert_eq!(throttle.admit("noisy", t0 + Duration::from_millis(100)), Admit::Keep { dropped_before: 95 });
        assert_eq!(throttle.admit("noisy", t0 + Duration::from_millis(100)), Admit::Drop);
    }
}
