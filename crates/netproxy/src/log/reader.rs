//! [`LogReader`]: reading the connection log from another process (the CLI),
//! and [`Follow`] for `moat log --follow`.
//!
//! Readers open the file read-only. In WAL mode they never wait for writers
//! and each query sees one consistent snapshot. Ids only grow and a row
//! becomes visible only after every row with a smaller id (SQLite serializes
//! writers), so polling for `id > last seen` misses nothing.

use std::path::{Path, PathBuf};

use rusqlite::types::ToSql;
use rusqlite::{Connection, OpenFlags};

use super::schema::{self, DbError};
use super::{ConnectionRecord, LogVerdict};

/// Rows one [`Follow::poll`] returns at most; call again while it returns this many.
pub const POLL_LIMIT: usize = 1000;

/// Which rows [`LogReader::query`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filter<'a> {
    /// Only this sandbox's rows.
    pub sandbox: Option<&'a str>,
    /// Only rows after this id; then the *oldest* `limit` such rows, so a
    /// caller paging forward misses none. Without it, the newest `limit` rows.
    pub after_id: Option<i64>,
    /// At most this many rows.
    pub limit: usize,
    /// Only rows with this verdict.
    pub verdict: Option<LogVerdict>,
}

/// The connection log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No file at that path.
    #[error("no connection log at {}; it is created when the first sandbox starts", path.display())]
    NotFound {
        /// The database file.
        path: PathBuf,
    },
    /// SQLite could not open or read the file.
    #[error("cannot read the connection log {}; check that it and its directory are readable", path.display())]
    Database {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: DbError,
    },
    /// The file was set up by a newer Moat.
    #[error(
        "the connection log {} has schema version {found}, newer than this Moat understands; upgrade Moat",
        path.display()
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
    },
}

/// A read-only view of a connection log file.
#[derive(Debug)]
pub struct LogReader {
    conn: Connection,
    path: PathBuf,
}

impl LogReader {
    /// Opens the log at `path` for reading.
    pub fn open(path: &Path) -> Result<LogReader, ReadError> {
        if !path.exists() {
            return Err(ReadError::NotFound { path: path.to_path_buf() });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .and_then(|conn| schema::configure(&conn).map(|()| conn))
            .map_err(|e| ReadError::Database { path: path.to_path_buf(), source: e.into() })?;
        Ok(LogReader { conn, path: path.to_path_buf() })
    }

    /// The rows `filter` selects, oldest first, each with its id.
    pub fn query(&self, filter: &Filter<'_>) -> Result<Vec<(i64, ConnectionRecord)>, ReadError> {
        self.read(|version| match filter.limit {
            0 => Ok(Vec::new()),
            _ => self.select(filter, version),
        })
    }

    /// The newest rows `filter` selects (as [`LogReader::query`]) and a
    /// [`Follow`] that will return the rows written after them, read from one
    /// snapshot so nothing is missed or repeated in between.
    pub fn follow(&self, filter: &Filter<'_>) -> Result<(Vec<(i64, ConnectionRecord)>, Follow), ReadError> {
        let (rows, last_id) = self.read(|version| {
            let rows = match filter.limit {
                0 => Vec::new(),
                _ => self.select(filter, version)?,
            };
            let last_id = self.conn.query_row("SELECT COALESCE(MAX(id), 0) FROM connections", [], |r| r.get(0))?;
            Ok((rows, last_id))
        })?;
        let last_id = filter.after_id.map_or(last_id, |after| rows.last().map_or(after, |(id, _)| *id));
        let follow = Follow { sandbox: filter.sandbox.map(str::to_string), verdict: filter.verdict, last_id };
        Ok((rows, follow))
    }

    /// Records writers had to drop (queue full, database refused a batch),
    /// for one sandbox or in total.
    pub fn dropped(&self, sandbox: Option<&str>) -> Result<u64, ReadError> {
        let count: i64 = self.read(|_| match sandbox {
            Some(s) => {
                self.conn.query_row("SELECT COALESCE(SUM(count), 0) FROM dropped WHERE sandbox = ?1", [s], |r| r.get(0))
            }
            None => self.conn.query_row("SELECT COALESCE(SUM(count), 0) FROM dropped", [], |r| r.get(0)),
        })?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Runs `op` in one read transaction (one consistent snapshot) once the
    /// schema is known; the empty value while no writer has created it.
    fn read<T: Default>(&self, op: impl Fn(i64) -> rusqlite::Result<T>) -> Result<T, ReadError> {
        let db_error = |e: rusqlite::Error| ReadError::Database { path: self.path.clone(), source: e.into() };
        match schema::retry_busy(|| schema::version(&self.conn)).map_err(db_error)? {
            0 => Ok(T::default()),
            version @ 1..=schema::VERSION => schema::retry_busy(|| {
                let _snapshot = self.conn.unchecked_transaction()?;
                op(version)
            })
            .map_err(db_error),
            found => Err(ReadError::NewerSchema { path: self.path.clone(), found }),
        }
    }

    fn select(&self, filter: &Filter<'_>, version: i64) -> rusqlite::Result<Vec<(i64, ConnectionRecord)>> {
        let mut conditions = Vec::new();
        let mut args: Vec<&dyn ToSql> = Vec::new();
        if let Some(sandbox) = &filter.sandbox {
            conditions.push("sandbox = ?");
            args.push(sandbox);
        }
        if let Some(after) = &filter.after_id {
            conditions.push("id > ?");
            args.push(after);
        }
        let verdict = filter.verdict.map(schema::verdict_name);
        if let Some(verdict) = &verdict {
            conditions.push("verdict = ?");
            args.push(verdict);
        }
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
        args.push(&limit);
        let filter_sql = match conditions.is_empty() {
            true => String::new(),
            false => format!("WHERE {}", conditions.join(" AND ")),
        };
        let order = if filter.after_id.is_some() { "ASC" } else { "DESC" };
        let sql =
            format!("SELECT {} FROM connections {filter_sql} ORDER BY id {order} LIMIT ?", schema::columns(version));
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query_map(args.as_slice(), schema::record_from_row)?.collect::<Result<Vec<_>, _>>()?;
        if filter.after_id.is_none() {
            rows.reverse();
        }
        Ok(rows)
    }
}

/// A cursor for `moat log --follow`: each [`Follow::poll`] returns the rows
/// written since the last one, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follow {
    sandbox: Option<String>,
    verdict: Option<LogVerdict>,
    last_id: i64,
}

impl Follow {
    /// Follows rows after `last_id` (0 for every row) matching the filters.
    pub fn after(last_id: i64, sandbox: Option<&str>, verdict: Option<LogVerdict>) -> Follow {
        Follow { sandbox: sandbox.map(str::to_string), verdict, last_id }
    }

    /// The id of the last row seen (or skipped by the filters).
    pub fn last_id(&self) -> i64 {
        self.last_id
    }

    /// New rows, oldest first, at most [`POLL_LIMIT`]; poll again at once if
    /// it returned that many, else after a pause.
    pub fn poll(&mut self, reader: &LogReader) -> Result<Vec<(i64, ConnectionRecord)>, ReadError> {
        let filter = Filter {
            sandbox: self.sandbox.as_deref(),
            after_id: Some(self.last_id),
            limit: POLL_LIMIT,
            verdict: self.verdict,
        };
        let rows = reader.query(&filter)?;
        if let Some((id, _)) = rows.last() {
            self.last_id = *id;
        }
        Ok(rows)
    }
}
