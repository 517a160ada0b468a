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
            path: None,
            status: None,
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

    /// The request's path, query values redacted.
    pub(crate) fn path(&mut self, target: &str) {
        let path = redacted_path(target);
        self.edit(|r| r.path = Some(path));
    }

    /// The status the sandbox got.
    pub(crate) fn status(&mut self, status: u16) {
        self.edit(|r| r.status = Some(status));
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

/// The longest path kept in a record; the rest becomes `…`.
const MAX_PATH: usize = 512;

/// `target` with every query value replaced by `…` (`/v1?key=…&alt=…`): a
/// value may be a key, a name says what was asked. Bounded to [`MAX_PATH`].
pub(crate) fn redacted_path(target: &str) -> String {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let mut out = path.to_string();
    if let Some(query) = query {
        let names: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}=…"),
                None if pair.is_empty() => String::new(),
                None => "…".to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&names.join("&"));
    }
    if out.len() > MAX_PATH {
        let mut cut = MAX_PATH;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// The rule or check as users see it: `rule 'allow network x'`,
/// `preset balanced (default deny)`, `127.0.0.1 is loopback`.
pub(crate) fn rule_text(decision: &Decision) -> Option<String> {
    match &decision.reason {
        Reason::Rule(entry) => Some(entry.to_string()),
        Reason::Default(preset) => Some(format!("preset {preset} (default deny)")),
        Reason::SpecialAddress(ip, class) => Some(format!("{ip} is {class}")),
        Reason::InvalidHost => Some("invalid host".to_string()),
        Reason::NoRequestRule => Some("no `allow request` rule covers it".to_string()),
        Reason::AmbiguousPath(why) => Some(format!("request rules apply and {why}")),
        Reason::PublicAddress => None,
    }
}

#[cfg(test)]
mod tests {
    use super::redacted_path;

    #[test]
    fn query_values_are_redacted_and_names_kept() {
        assert_eq!(redacted_path("/v1/models"), "/v1/models");
        assert_eq!(redacted_path("/v1beta/models?key=AIzaSECRET&alt=sse"), "/v1beta/models?key=…&alt=…");
        assert_eq!(redacted_path("/x?token"), "/x?…");
        assert_eq!(redacted_path("/x?a=1&&b=2"), "/x?a=…&&b=…");
        assert_eq!(redacted_path("/x?"), "/x?");
        let long = format!("/{}", "a".repeat(2000));
        assert_eq!(redacted_path(&long).chars().count(), 513);
    }
}
