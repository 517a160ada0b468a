//! Tests of the SQLite log: bound, concurrent writers (threads and
//! processes), follow, crash recovery, schema setup, drop accounting.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};

use super::*;

pub(super) fn record(sandbox: &str, seq: i64) -> ConnectionRecord {
    ConnectionRecord {
        sandbox: sandbox.to_string(),
        started_ms: seq,
        method: "CONNECT".to_string(),
        host: format!("h{seq}.example.com"),
        port: 443,
        verdict: if seq % 3 == 0 { LogVerdict::Denied } else { LogVerdict::Allowed },
        mode: LogMode::Tunnel,
        rule: (seq % 2 == 0).then(|| "rule 'allow network **.example.com'".to_string()),
        bytes_up: seq as u64,
        bytes_down: 1 << 40,
        duration_ms: 7,
        note: None,
        path: None,
        status: None,
    }
}

pub(super) fn all(path: &Path, sandbox: Option<&str>) -> Vec<(i64, ConnectionRecord)> {
    let reader = LogReader::open(path).unwrap();
    reader.query(&Filter { sandbox, limit: usize::MAX, ..Filter::default() }).unwrap()
}

fn write(log: &SqliteLog, sandbox: &str, range: std::ops::Range<i64>) {
    for seq in range {
        log.record(record(sandbox, seq));
    }
}

#[test]
fn records_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let log = SqliteLog::open(&path, 1000).unwrap();
    write(&log, "web", 0..5);
    log.flush();
    let rows = all(&path, None);
    let records: Vec<_> = rows.into_iter().map(|(_, r)| r).collect();
    assert_eq!(records, (0..5).map(|i| record("web", i)).collect::<Vec<_>>());
    assert_eq!(log.dropped(), 0);

    log.record(ConnectionRecord { bytes_up: u64::MAX, ..record("web", 5) });
    log.flush();
    let (_, last) = all(&path, None).pop().unwrap();
    assert_eq!(last.bytes_up, i64::MAX as u64, "counters saturate at what SQLite stores");
}

#[test]
fn bound_keeps_the_newest_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let log = SqliteLog::open(&path, 100).unwrap();
    for chunk in 0..10 {
        write(&log, "web", chunk * 100..chunk * 100 + 100);
        log.flush();
    }
    let rows = all(&path, None);
    assert_eq!(rows.len(), 100);
    let seqs: Vec<i64> = rows.iter().map(|(_, r)| r.started_ms).collect();
    assert_eq!(seqs, (900..1000).collect::<Vec<_>>());
    assert_eq!(rows[0].0, 901, "ids keep growing across deletions");
}

#[test]
fn query_filters_and_returns_newest_last() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let log = SqliteLog::open(&path, 1000).unwrap();
    write(&log, "a", 0..10);
    write(&log, "b", 10..20);
    log.flush();
    let reader = LogReader::open(&path).unwrap();
    let seqs = |f: Filter<'_>| reader.query(&f).unwrap().into_iter().map(|(_, r)| r.started_ms).collect::<Vec<_>>();

    assert_eq!(seqs(Filter { limit: 3, ..Filter::default() }), [17, 18, 19]);
    assert_eq!(seqs(Filter { sandbox: Some("a"), limit: 3, ..Filter::default() }), [7, 8, 9]);
    assert_eq!(seqs(Filter { sandbox: Some("a"), after_id: Some(2), limit: 3, ..Filter::default() }), [2, 3, 4]);
    let denied = Filter { verdict: Some(LogVerdict::Denied), limit: 100, ..Filter::default() };
    assert_eq!(seqs(denied), [0, 3, 6, 9, 12, 15, 18]);
    assert!(seqs(Filter { limit: 0, ..Filter::default() }).is_empty());
    assert!(seqs(Filter { sandbox: Some("nope"), limit: 9, ..Filter::default() }).is_empty());
}

#[test]
fn follow_sees_new_rows_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let log = SqliteLog::open(&path, 10_000).unwrap();
    write(&log, "web", 0..5);
    write(&log, "other", 0..5);
    log.flush();

    let reader = LogReader::open(&path).unwrap();
    let (tail, mut follow) = reader.follow(&Filter { sandbox: Some("web"), limit: 2, ..Filter::default() }).unwrap();
    assert_eq!(tail.iter().map(|(_, r)| r.started_ms).collect::<Vec<_>>(), [3, 4]);

    let writer = std::thread::spawn(move || {
        for seq in 5..1500 {
            log.record(record("web", seq));
            log.record(record("other", seq));
            if seq % 100 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        log.flush();
        log.dropped()
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while seen.len() < 1495 {
        assert!(Instant::now() < deadline, "saw only {} rows", seen.len());
        let rows = follow.poll(&reader).unwrap();
        assert!(rows.len() <= POLL_LIMIT);
        if rows.is_empty() {
            std::thread::sleep(Duration::from_millis(2));
        }
        for (_, r) in rows {
            assert_eq!(r.sandbox, "web");
            seen.push(r.started_ms);
        }
    }
    assert_eq!(writer.join().unwrap(), 0);
    assert_eq!(seen, (5..1500).collect::<Vec<_>>());
    assert!(follow.poll(&reader).unwrap().is_empty());
}

#[test]
fn concurrent_writers_in_threads_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|sandbox| {
            let (path, barrier) = (path.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let log = SqliteLog::open(&path, 100_000).unwrap();
                for seq in 0..2000 {
                    log.record(record(sandbox, seq));
                    if seq % 50 == 0 {
                        log.flush(); // many small transactions, interleaved with the other writer
                    }
                }
                log.flush();
                log.dropped()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 0);
    }
    assert_writers_interleaved(&path, &["a", "b"], 2000);
}

/// Every sandbox's rows are all there, in order, and ids are unique.
fn assert_writers_interleaved(path: &Path, sandboxes: &[&str], count: i64) {
    let rows = all(path, None);
    assert_eq!(rows.len(), sandboxes.len() * count as usize);
    assert!(rows.windows(2).all(|w| w[0].0 < w[1].0));
    for sandbox in sandboxes {
        let seqs: Vec<i64> = all(path, Some(sandbox)).into_iter().map(|(_, r)| r.started_ms).collect();
        assert_eq!(seqs, (0..count).collect::<Vec<_>>(), "sandbox {sandbox}");
    }
}

const CHILD_ENV: &str = "MOAT_LOG_TEST_CHILD";

/// Runs this test binary again as a writer process: `child_writer` below.
fn spawn_child(path: &Path, sandbox: &str, count: i64, then: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["log::tests::child_writer", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{}|{sandbox}|{count}|{then}", path.display()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Not a test on its own: a no-op unless started by [`spawn_child`].
#[test]
fn child_writer() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let parts: Vec<&str> = spec.split('|').collect();
    let [path, sandbox, count, then] = parts[..] else { panic!("bad {CHILD_ENV}: {spec}") };
    let log = SqliteLog::open(Path::new(path), 100_000).unwrap();
    for seq in 0..count.parse().unwrap() {
        log.record(record(sandbox, seq));
        if seq % 25 == 0 {
            log.flush();
        }
    }
    log.flush();
    assert_eq!(log.dropped(), 0);
    println!("child flushed");
    if then == "hang" {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn wait_for_flushed(child: &mut std::process::Child) {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let flushed = lines.by_ref().map_while(Result::ok).any(|l| l.contains("child flushed"));
    assert!(flushed, "the child writer did not finish");
    // Keep reading so the child's test harness never writes to a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
}

#[test]
fn concurrent_writers_in_processes_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let mut children: Vec<_> = ["p1", "p2"].iter().map(|s| spawn_child(&path, s, 1000, "exit")).collect();
    for child in &mut children {
        wait_for_flushed(child);
        assert!(child.wait().unwrap().success());
    }
    assert_writers_interleaved(&path, &["p1", "p2"], 1000);
}

#[test]
fn reopen_after_a_crash_keeps_committed_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let mut child = spawn_child(&path, "crashy", 300, "hang");
    wait_for_flushed(&mut child);
    child.kill().unwrap(); // SIGKILL: no destructors, the WAL is left behind
    child.wait().unwrap();
    assert_eq!(all(&path, None).len(), 300);

    let log = SqliteLog::open(&path, 100_000).unwrap();
    write(&log, "crashy", 300..310);
    log.flush();
    let seqs: Vec<i64> = all(&path, None).into_iter().map(|(_, r)| r.started_ms).collect();
    assert_eq!(seqs, (0..310).collect::<Vec<_>>());
}

#[test]
fn schema_is_created_once_by_concurrent_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (path, barrier) = (path.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let log = SqliteLog::open(&path, 1000).unwrap();
                log.record(record("s", i));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let conn = Connection::open(&path).unwrap();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 2);
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let indexes: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'connections_sandbox_id'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(indexes, 1);
    assert_eq!(all(&path, None).len(), 8, "dropping each log wrote its record");
}

#[test]
fn a_version_1_file_is_read_as_it_is_and_upgraded_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let v1 = "CREATE TABLE connections (id INTEGER PRIMARY KEY AUTOINCREMENT, sandbox TEXT NOT NULL, \
              started_ms INTEGER NOT NULL, method TEXT NOT NULL, host TEXT NOT NULL, port INTEGER NOT NULL, \
              verdict TEXT NOT NULL, mode TEXT NOT NULL, rule TEXT, bytes_up INTEGER NOT NULL, \
              bytes_down INTEGER NOT NULL, duration_ms INTEGER NOT NULL, note TEXT); \
              CREATE INDEX connections_sandbox_id ON connections (sandbox, id); \
              CREATE TABLE dropped (sandbox TEXT PRIMARY KEY, count INTEGER NOT NULL); \
              INSERT INTO connections (sandbox, started_ms, method, host, port, verdict, mode, bytes_up, \
              bytes_down, duration_ms) VALUES ('old', 1, 'CONNECT', 'a.test', 443, 'allowed', 'tunnel', 1, 2, 3); \
              PRAGMA user_version = 1;";
    Connection::open(&path).unwrap().execute_batch(v1).unwrap();
    let old = all(&path, None);
    assert_eq!((old.len(), old[0].1.path.as_deref(), old[0].1.status), (1, None, None));
    let log = SqliteLog::open(&path, 1000).unwrap();
    let with_path = ConnectionRecord {
        method: "GET".into(),
        path: Some("/v1?key=…".into()),
        status: Some(200),
        ..record("new", 1)
    };
    log.record(with_path.clone());
    log.flush();
    let rows: Vec<_> = all(&path, None).into_iter().map(|(_, r)| r).collect();
    assert_eq!(rows.len(), 2, "the old row survived the upgrade");
    assert_eq!(rows[1], with_path);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    Connection::open(&path).unwrap().execute_batch("PRAGMA user_version = 99").unwrap();
    let err = SqliteLog::open(&path, 10).unwrap_err();
    assert!(matches!(err, OpenError::NewerSchema { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("upgrade Moat"));
    let err = LogReader::open(&path).unwrap().query(&Filter { limit: 1, ..Filter::default() }).unwrap_err();
    assert!(matches!(err, ReadError::NewerSchema { found: 99, .. }), "{err}");
}

#[test]
fn reading_a_missing_or_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let err = LogReader::open(&path).unwrap_err();
    assert!(matches!(err, ReadError::NotFound { .. }));
    assert!(err.to_string().contains("created when the first sandbox starts"));

    Connection::open(&path).unwrap().execute_batch("PRAGMA user_version = 0").unwrap();
    let reader = LogReader::open(&path).unwrap();
    assert!(reader.query(&Filter { limit: 5, ..Filter::default() }).unwrap().is_empty());
    let (rows, follow) = reader.follow(&Filter { limit: 5, ..Filter::default() }).unwrap();
    assert!(rows.is_empty());
    assert_eq!(follow.last_id(), 0);
    assert_eq!(reader.dropped(None).unwrap(), 0);
}

#[test]
fn a_full_queue_drops_and_counts_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let log =
        SqliteLog::open_with(&path, LogOptions { max_rows: 1000, queue_len: 1, ..LogOptions::default() }).unwrap();

    // Another process holds the write lock: the writer thread stalls on its
    // first batch and the queue fills up.
    let mut blocker = Connection::open(&path).unwrap();
    let lock = blocker.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
    write(&log, "busy", 0..100);
    assert!(log.dropped() > 0, "the stalled writer cannot have taken all 100");
    lock.rollback().unwrap();

    log.flush();
    write(&log, "busy", 100..101);
    log.flush();
    let kept = all(&path, None).len() as u64;
    assert_eq!(kept + log.dropped(), 101);
    let reader = LogReader::open(&path).unwrap();
    assert_eq!(reader.dropped(Some("busy")).unwrap(), log.dropped());
    assert_eq!(reader.dropped(None).unwrap(), log.dropped());
    assert_eq!(reader.dropped(Some("other")).unwrap(), 0);
}
