//! Sharing the log fairly: one sandbox's flood neither evicts another's
//! records nor outruns its rate.

use std::time::Duration;

use super::tests::{all, record};
use super::*;

fn fair(max_rows: u64, max_rows_per_sandbox: u64, rate: Option<Rate>) -> LogOptions {
    LogOptions { max_rows, max_rows_per_sandbox, rate, ..LogOptions::default() }
}

#[test]
fn a_flood_from_one_sandbox_does_not_evict_anothers_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let log = SqliteLog::open_with(&path, fair(1000, 200, None)).unwrap();
    for seq in 0..50 {
        log.record(record("quiet", seq));
    }
    log.flush();
    for chunk in 0..20 {
        for seq in chunk * 250..chunk * 250 + 250 {
            log.record(record("noisy", seq));
        }
        log.flush();
    }
    assert_eq!(log.dropped(), 0, "nothing was lost to a full queue");
    let quiet: Vec<i64> = all(&path, Some("quiet")).into_iter().map(|(_, r)| r.started_ms).collect();
    assert_eq!(quiet, (0..50).collect::<Vec<_>>(), "the quiet sandbox keeps every record");
    let noisy: Vec<i64> = all(&path, Some("noisy")).into_iter().map(|(_, r)| r.started_ms).collect();
    assert!((200..=202).contains(&noisy.len()), "the noisy one keeps its share: {}", noisy.len());
    assert_eq!(noisy.last(), Some(&4999), "and its newest records");
}

#[test]
fn a_flood_is_held_to_its_rate_and_what_it_lost_is_summarised() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let log = SqliteLog::open_with(&path, fair(100_000, 100_000, Some(Rate { per_second: 10, burst: 20 }))).unwrap();
    for seq in 0..500 {
        log.record(record("noisy", seq));
    }
    for seq in 0..5 {
        log.record(record("quiet", seq));
    }
    log.flush();
    assert_eq!(all(&path, Some("noisy")).len(), 20, "the burst, then nothing");
    assert_eq!(all(&path, Some("quiet")).len(), 5, "the other sandbox has its own bucket");
    let reader = LogReader::open(&path).unwrap();
    assert_eq!(reader.dropped(Some("noisy")).unwrap(), 480);

    std::thread::sleep(Duration::from_millis(150));
    log.record(record("noisy", 500));
    log.flush();
    let rows = all(&path, Some("noisy"));
    let summary = &rows[rows.len() - 2].1;
    let note = summary.note.as_deref().unwrap_or_default();
    assert!(note.starts_with("480 records dropped: over the rate limit (10 a second"), "{note}");
    assert_eq!(rows[rows.len() - 1].1.started_ms, 500);
}
