//! How every SQLite file of Moat is opened (the sandbox records, the policy).

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

/// Opens (creating if needed) one of Moat's SQLite files the way they all are
/// used — shared by several processes, durable — and returns its schema version.
pub(crate) fn open_database(path: &Path) -> rusqlite::Result<(Connection, i64)> {
    let db = Connection::open(path)?;
    db.busy_timeout(Duration::from_secs(5))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "FULL")?;
    let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
    Ok((db, version))
}
