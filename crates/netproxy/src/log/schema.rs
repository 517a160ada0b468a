//! The database layout shared by the writer and the readers, and the
//! conversions between rows and [`ConnectionRecord`]s.
//!
//! Two tables: `connections` (one row per record, ids from `AUTOINCREMENT` so
//! they only ever grow, even across deletions, which is what following by id
//! relies on) and `dropped` (per sandbox, how many records writers had to
//! discard). Version 2 added `path` and `status` to `connections` (a writer
//! upgrades a version 1 file in place; readers read both). The version lives
//! in `PRAGMA user_version`.

use std::fmt;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode, Row, Transaction, TransactionBehavior};

use super::{ConnectionRecord, LogMode, LogVerdict};

/// The schema version this code reads and writes.
pub(super) const VERSION: i64 = 2;

/// How long a connection waits for another process's write to finish.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const CREATE: &str = "
CREATE TABLE connections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sandbox TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    method TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    mode TEXT NOT NULL,
    rule TEXT,
    bytes_up INTEGER NOT NULL,
    bytes_down INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    note TEXT,
    path TEXT,
    status INTEGER
);
CREATE INDEX connections_sandbox_id ON connections (sandbox, id);
CREATE TABLE dropped (
    sandbox TEXT PRIMARY KEY,
    count INTEGER NOT NULL
);
PRAGMA user_version = 2;
";

/// From version 1 to 2.
const UPGRADE_1: &str = "
ALTER TABLE connections ADD COLUMN path TEXT;
ALTER TABLE connections ADD COLUMN status INTEGER;
PRAGMA user_version = 2;
";

/// The columns [`record_from_row`] expects, in order, from a file of `version`.
pub(super) fn columns(version: i64) -> &'static str {
    match version {
        1 => "id, sandbox, started_ms, method, host, port, verdict, mode, rule, bytes_up, bytes_down, duration_ms, note, \
              NULL, NULL",
        _ => "id, sandbox, started_ms, method, host, port, verdict, mode, rule, bytes_up, bytes_down, duration_ms, note, \
              path, status",
    }
}

/// An error from the database library, kept opaque so its types stay out of
/// this crate's API.
pub struct DbError(rusqlite::Error);

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> DbError {
        DbError(e)
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DbError {}

/// What [`prepare_for_writing`] found.
pub(super) enum Prepared {
    /// The schema is there (created now or earlier).
    Ready,
    /// Written by a newer Moat.
    Newer(i64),
}

/// Sets the per-connection options every connection uses.
pub(super) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)
}

/// Runs `op` again while SQLite reports the database busy without having
/// waited itself, which it does in cases its busy handler cannot help: while
/// another connection switches the file to WAL or recovers it. Gives up
/// after [`BUSY_TIMEOUT`].
pub(super) fn retry_busy<T>(mut op: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let start = Instant::now();
    loop {
        match op() {
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) && start.elapsed() < BUSY_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(5));
            }
            result => return result,
        }
    }
}

/// Switches the file to WAL (persistent, so readers in other processes see
/// it too) and creates the schema unless another process already did. The
/// version check and the creation happen in one write transaction, so
/// concurrent first opens create it exactly once.
pub(super) fn prepare_for_writing(conn: &mut Connection) -> rusqlite::Result<Prepared> {
    configure(conn)?;
    retry_busy(|| prepare_once(conn))
}

fn prepare_once(conn: &mut Connection) -> rusqlite::Result<Prepared> {
    // Returns the mode now in force; a file system without shared memory
    // keeps the old one, which still works, only with less concurrency.
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found = version(&tx)?;
    if found > VERSION {
        return Ok(Prepared::Newer(found));
    }
    match found {
        0 => tx.execute_batch(CREATE)?,
        1 => tx.execute_batch(UPGRADE_1)?,
        _ => {}
    }
    tx.commit()?;
    Ok(Prepared::Ready)
}

/// The file's schema version; 0 for a file nobody has set up yet.
pub(super) fn version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Appends one record.
pub(super) fn insert(tx: &Transaction<'_>, r: &ConnectionRecord) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO connections (sandbox, started_ms, method, host, port, verdict, mode, rule, \
         bytes_up, bytes_down, duration_ms, note, path, status) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?;
    stmt.execute(params![
        r.sandbox,
        r.started_ms,
        r.method,
        r.host,
        r.port,
        verdict_name(r.verdict),
        mode_name(r.mode),
        r.rule,
        saturate(r.bytes_up),
        saturate(r.bytes_down),
        saturate(r.duration_ms),
        r.note,
        r.path,
        r.status,
    ])?;
    Ok(())
}

/// Adds `count` to the sandbox's dropped-record counter.
pub(super) fn add_dropped(tx: &Transaction<'_>, sandbox: &str, count: u64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO dropped (sandbox, count) VALUES (?1, ?2) \
         ON CONFLICT (sandbox) DO UPDATE SET count = count + excluded.count",
        params![sandbox, saturate(count)],
    )?;
    Ok(())
}

/// Deletes the oldest rows so at most `max_rows` remain. Rows are not
/// contiguous (each sandbox's share is trimmed on its own), so this walks
/// `max_rows` entries of the table: the writer calls it every 1 % of them.
pub(super) fn trim(tx: &Transaction<'_>, max_rows: u64) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM connections WHERE id <= (SELECT id FROM connections ORDER BY id DESC LIMIT 1 OFFSET ?1)",
        params![saturate(max_rows)],
    )?;
    Ok(())
}

/// Deletes `sandbox`'s oldest rows so at most `max_rows` of its rows remain
/// (walks that many entries of the `(sandbox, id)` index).
pub(super) fn trim_sandbox(tx: &Transaction<'_>, sandbox: &str, max_rows: u64) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM connections WHERE sandbox = ?1 AND id <= \
         (SELECT id FROM connections WHERE sandbox = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
        params![sandbox, saturate(max_rows)],
    )?;
    Ok(())
}

/// Reads a row selected with [`columns`].
pub(super) fn record_from_row(row: &Row<'_>) -> rusqlite::Result<(i64, ConnectionRecord)> {
    let verdict: String = row.get(6)?;
    let mode: String = row.get(7)?;
    let record = ConnectionRecord {
        sandbox: row.get(1)?,
        started_ms: row.get(2)?,
        method: row.get(3)?,
        host: row.get(4)?,
        port: row.get(5)?,
        verdict: parse_verdict(&verdict).ok_or_else(|| unknown(6, "verdict", &verdict))?,
        mode: parse_mode(&mode).ok_or_else(|| unknown(7, "mode", &mode))?,
        rule: row.get(8)?,
        bytes_up: unsigned(row.get(9)?),
        bytes_down: unsigned(row.get(10)?),
        duration_ms: unsigned(row.get(11)?),
        note: row.get(12)?,
        path: row.get(13)?,
        status: row.get(14)?,
    };
    Ok((row.get(0)?, record))
}

fn unknown(column: usize, what: &str, value: &str) -> rusqlite::Error {
    let message = format!("unknown {what} {value:?} (written by a newer Moat? upgrade this one)");
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, message.into())
}

/// SQLite integers are signed; counters past `i64::MAX` are stored as the maximum.
fn saturate(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

pub(super) fn verdict_name(v: LogVerdict) -> &'static str {
    match v {
        LogVerdict::Allowed => "allowed",
        LogVerdict::Denied => "denied",
        LogVerdict::Failed => "failed",
    }
}

fn parse_verdict(s: &str) -> Option<LogVerdict> {
    [LogVerdict::Allowed, LogVerdict::Denied, LogVerdict::Failed].into_iter().find(|v| verdict_name(*v) == s)
}

fn mode_name(m: LogMode) -> &'static str {
    match m {
        LogMode::Http => "http",
        LogMode::Tunnel => "tunnel",
        LogMode::Intercept => "intercept",
        LogMode::Transparent => "transparent",
        LogMode::Dns => "dns",
    }
}

fn parse_mode(s: &str) -> Option<LogMode> {
    [LogMode::Http, LogMode::Tunnel, LogMode::Intercept, LogMode::Transparent, LogMode::Dns]
        .into_iter()
        .find(|m| mode_name(*m) == s)
}
