//! Keeps a guest's DNS queries from flooding the connection log.
//!
//! Two limits: the same name with the same verdict is logged once per
//! [`WINDOW`] (resolvers retry, and ask A and AAAA together), and all DNS
//! records together are held to a token bucket, so a guest inventing fresh
//! names (the way to exfiltrate data through labels) writes at most
//! [`RATE`] records a second after a burst of [`BURST`]. What is skipped is
//! counted and reported in the note of the next record logged.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::log::LogVerdict;

/// A name+verdict is logged at most once per window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// DNS records logged per second, sustained.
pub const RATE: u32 = 10;
/// DNS records logged in a burst.
pub const BURST: u32 = 100;
/// Names remembered for the per-name window; past it, only the bucket limits.
const MAX_NAMES: usize = 1024;

/// The limiter's state, one per responder (so per sandbox).
#[derive(Debug)]
pub(super) struct Limiter {
    /// Keyed by name and verdict ([`verdict_key`]).
    recent: HashMap<(String, u8), Seen>,
    /// Tokens, in thousandths.
    tokens: u64,
    refilled: Instant,
    /// Records skipped by the bucket since the last one logged.
    skipped: u64,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    logged: Instant,
    repeats: u64,
}

/// Permission to log one record, with what was skipped before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Admit {
    /// Repeats of this name+verdict in its last window that were not logged.
    pub(super) repeats: u64,
    /// Other records the rate limit skipped since the last one logged.
    pub(super) skipped: u64,
}

impl Admit {
    /// A suffix for the record's note, if anything was skipped.
    pub(super) fn note(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.repeats > 0 {
            parts.push(format!("{} repeats in the previous {} s not logged", self.repeats, WINDOW.as_secs()));
        }
        if self.skipped > 0 {
            parts.push(format!("{} other DNS queries not logged (rate limit)", self.skipped));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

impl Limiter {
    pub(super) fn new(now: Instant) -> Limiter {
        Limiter { recent: HashMap::new(), tokens: u64::from(BURST) * 1000, refilled: now, skipped: 0 }
    }

    /// Whether to log a record for `host` with `verdict` at `now`.
    pub(super) fn admit(&mut self, host: &str, verdict: LogVerdict, now: Instant) -> Option<Admit> {
        self.refill(now);
        let key = (host.to_string(), verdict_key(verdict));
        let mut repeats = 0;
        if let Some(seen) = self.recent.get_mut(&key) {
            if now.saturating_duration_since(seen.logged) < WINDOW {
                seen.repeats += 1;
                return None;
            }
            repeats = seen.repeats;
        }
        if self.tokens < 1000 {
            self.skipped += 1;
            return None;
        }
        self.tokens -= 1000;
        self.remember(key, now);
        Some(Admit { repeats, skipped: std::mem::take(&mut self.skipped) })
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled);
        let add = elapsed.as_millis().saturating_mul(u128::from(RATE));
        let cap = u64::from(BURST) * 1000;
        self.tokens = u64::try_from(u128::from(self.tokens).saturating_add(add)).unwrap_or(cap).min(cap);
        self.refilled = self.refilled.max(now);
    }

    fn remember(&mut self, key: (String, u8), now: Instant) {
        if self.recent.len() >= MAX_NAMES && !self.recent.contains_key(&key) {
            self.recent.retain(|_, seen| now.saturating_duration_since(seen.logged) < WINDOW);
            if self.recent.len() >= MAX_NAMES {
                return;
            }
        }
        self.recent.insert(key, Seen { logged: now, repeats: 0 });
    }
}

/// `LogVerdict` is not `Hash`; the limiter keys on this instead.
fn verdict_key(verdict: LogVerdict) -> u8 {
    match verdict {
        LogVerdict::Allowed => 0,
        LogVerdict::Denied => 1,
        LogVerdict::Failed => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: LogVerdict = LogVerdict::Allowed;

    #[test]
    fn repeats_are_logged_once_per_window() {
        let t0 = Instant::now();
        let mut l = Limiter::new(t0);
        assert_eq!(l.admit("a.com", OK, t0), Some(Admit { repeats: 0, skipped: 0 }));
        assert_eq!(l.admit("a.com", OK, t0 + Duration::from_secs(1)), None);
        assert_eq!(l.admit("a.com", OK, t0 + Duration::from_secs(9)), None);
        assert!(l.admit("a.com", LogVerdict::Denied, t0).is_some(), "another verdict is another key");
        assert!(l.admit("b.com", OK, t0).is_some());
        let later = l.admit("a.com", OK, t0 + WINDOW).unwrap();
        assert_eq!(later.repeats, 2);
        assert_eq!(later.note().unwrap(), "2 repeats in the previous 10 s not logged");
    }

    #[test]
    fn fresh_names_are_held_to_the_rate() {
        let t0 = Instant::now();
        let mut l = Limiter::new(t0);
        let logged = (0..1000).filter(|i| l.admit(&format!("x{i}.evil"), OK, t0).is_some()).count();
        assert_eq!(logged, BURST as usize);
        // One second later, RATE more; the first reports what was skipped.
        let t1 = t0 + Duration::from_secs(1);
        let admits: Vec<_> = (0..100).filter_map(|i| l.admit(&format!("y{i}.evil"), OK, t1)).collect();
        assert_eq!(admits.len(), RATE as usize);
        assert_eq!(admits[0].skipped, 900);
        assert!(admits[0].note().unwrap().contains("900 other DNS queries not logged"));
        assert_eq!(admits[1].skipped, 0);
    }

    #[test]
    fn memory_stays_bounded() {
        let mut now = Instant::now();
        let mut l = Limiter::new(now);
        for i in 0..100_000 {
            now += Duration::from_millis(100); // always a token
            assert!(l.admit(&format!("n{i}.example"), OK, now).is_some());
            assert!(l.recent.len() <= MAX_NAMES);
        }
    }
}
