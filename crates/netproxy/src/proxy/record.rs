//! Building the one [`ConnectionRecord`] each connection or request gets.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::log::{ConnectionRecord, ConnectionSink, LogMode, LogVerdict};
use crate::policy::{Decision, Reason};

/// A record in progress: filled in as the exchange goes, sent once by
/// [`Tracker::finish`] (or, if dropped unfinished, as a failure).
pub(crate) struct Tracker {
    sink: Arc<dyn ConnectionSink>,
    record: Option<ConnectionRecord>,
    started: Instant,
}

impl Tracker {
    pub(crate) fn start(
        sink: &Arc<dyn ConnectionSink>,
        sandbox: &str,
        method: &str,
        host: &str,
        port: u16,
        mode: LogMode,
    ) -> Tracker {
        let started_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let record = ConnectionRecord {
            sandbox: sandbox.to_string(),
            started_ms,
            method: method.to_string(),
            host: host.to_string(),
            port,
            verdict: LogVerdict::Failed,
            mode,
            rule: None,
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0,
            note: None,
        };
        Tracker { sink: Arc::clone(sink), record: Some(record), started: Instant::now() }
    }

    /// Edits the record (a no-op once it was sent).
    fn edit(&mut self, f: impl FnOnce(&mut ConnectionRecord)) {
        if let Some(record) = self.record.as_mut() {
            f(record);
        }
    }

    pub(crate) fn mode(&mut self, mode: LogMode) {
        self.edit(|r| r.mode = mode);
    }

    /// Names the rule or check behind `decision`, unless it adds nothing.
    pub(crate) fn decision(&mut self, decision: &Decision) {
        if let Some(rule) = rule_text(decision) {
            self.edit(|r| r.rule = Some(rule));
        }
    }

    /// Adds to the note (several notes are joined with "; ").
    pub(crate) fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        self.edit(|r| {
            r.note = Some(match r.note.take() {
                Some(old) => format!("{old}; {note}"),
                None => note,
            })
        });
    }

    pub(crate) fn bytes(&mut self, up: u64, down: u64) {
        self.edit(|r| {
            r.bytes_up = up;
            r.bytes_down = down;
        });
    }

    /// Sends the record.
    pub(crate) fn finish(mut self, verdict: LogVerdict) {
        self.send(verdict);
    }

    fn send(&mut self, verdict: LogVerdict) {
        if let Some(mut record) = self.record.take() {
            record.verdict = verdict;
            record.duration_ms = self.started.elapsed().as_millis() as u64;
            self.sink.record(record);
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if self.record.as_ref().is_some_and(|r| r.note.is_none()) {
            self.note("the exchange ended early");
        }
        self.send(LogVerdict::Failed);
    }
}

/// The rule or check as users see it: `rule 'allow network x'`,
/// `preset balanced (default deny)`, `127.0.0.1 is loopback`.
pub(crate) fn rule_text(decision: &Decision) -> Option<String> {
    match &decision.reason {
        Reason::Rule(entry) => Some(entry.to_string()),
        Reason::Default(preset) => Some(format!("preset {preset} (default deny)")),
        Reason::SpecialAddress(ip, class) => Some(format!("{ip} is {class}")),
        Reason::InvalidHost => Some("invalid host".to_string()),
        Reason::PublicAddress => None,
    }
}
