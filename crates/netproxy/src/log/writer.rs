//! [`SqliteLog`]: the [`ConnectionSink`] that stores records in SQLite
//! without ever blocking the proxy.
//!
//! [`ConnectionSink::record`] only tries to put the record on a bounded queue;
//! a writer thread takes records off in batches (letting a burst gather for a
//! few milliseconds) and inserts each batch in one transaction, then deletes
//! the oldest rows past the bounds (each sandbox's share, then the whole
//! file's). Before the queue, each sandbox's records pass its rate limit
//! ([`Rate`]). When the queue is
//! full (the disk is slow, another process holds the write lock) the record is
//! dropped and counted: [`SqliteLog::dropped`] in this process, and the
//! `dropped` table (see [`LogReader::dropped`](super::LogReader::dropped)) for
//! everyone, updated with the next batch that commits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::schema::{self, DbError, Prepared};
use super::throttle::{Admit, Rate, Throttle};
use super::{ConnectionRecord, ConnectionSink, LogVerdict};

/// How many records one transaction inserts at most.
const BATCH: usize = 256;
/// How long the writer lets records gather after the first of a quiet
/// spell: one transaction then takes a whole burst, and the proxy's threads
/// hand records over without waking the writer for each one.
const LINGER: Duration = Duration::from_millis(5);

/// How a [`SqliteLog`] is sized and shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// Rows kept in the file, shared by every process writing it; older rows
    /// are deleted as new ones arrive, every 1 % of it (so the file may
    /// briefly hold that much more per writer). At least 1.
    pub max_rows: u64,
    /// Rows one sandbox keeps: its own oldest rows go first, so a sandbox
    /// that logs a lot evicts its own records, not the others'. (Once
    /// `max_rows / max_rows_per_sandbox` sandboxes are all at their share,
    /// `max_rows` deletes the oldest rows of all.) Trimmed every 1 % of it,
    /// so a sandbox may briefly hold that much more. At least 1.
    pub max_rows_per_sandbox: u64,
    /// Records one sandbox may log; past it they are dropped, counted, and
    /// summarised in one record. `None`: no limit.
    pub rate: Option<Rate>,
    /// Records waiting for the writer thread before new ones are dropped. At least 1.
    pub queue_len: usize,
}

impl Default for LogOptions {
    fn default() -> LogOptions {
        LogOptions {
            max_rows: 100_000,
            max_rows_per_sandbox: 25_000,
            rate: Some(Rate { per_second: 100, burst: 1000 }),
            queue_len: 4096,
        }
    }
}

/// The connection log could not be opened for writing.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// SQLite could not open or set up the file.
    #[error("cannot open the connection log {}; check that its directory exists and is writable", path.display())]
    Database {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: DbError,
    },
    /// The file was set up by a newer Moat.
    #[error(
        "the connection log {} has schema version {found}, newer than this Moat understands; \
         upgrade Moat or move the file aside", path.display()
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
    },
    /// The writer thread could not be started.
    #[error("cannot start the connection log's writer thread; the system may be out of threads or memory")]
    Thread(#[source] std::io::Error),
}

#[derive(Debug)]
enum Msg {
    Record(ConnectionRecord),
    /// Answered once everything queued before it is committed (or dropped).
    Flush(mpsc::Sender<()>),
}

/// Records lost so far: the total for [`SqliteLog::dropped`], and per
/// sandbox those not yet added to the database's `dropped` table.
#[derive(Debug, Default)]
struct Drops {
    total: AtomicU64,
    /// Keyed by sandbox name, which the host chooses (not the guest), so the
    /// map holds as many entries as this process serves sandboxes.
    pending: Mutex<HashMap<String, u64>>,
}

impl Drops {
    fn add(&self, sandbox: &str, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        *pending.entry(sandbox.to_string()).or_default() += n;
    }

    fn take(&self) -> HashMap<String, u64> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts back counts that [`Drops::take`] took but could not store.
    fn restore(&self, counts: HashMap<String, u64>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for (sandbox, n) in counts {
            *pending.entry(sandbox).or_default() += n;
        }
    }
}

/// A bounded SQLite connection log, shared by every process that opens the
/// same file. Dropping it writes out everything queued, then returns.
#[derive(Debug)]
pub struct SqliteLog {
    queue: Option<SyncSender<Msg>>,
    writer: Option<JoinHandle<()>>,
    drops: Arc<Drops>,
    throttle: Option<Throttle>,
}

impl SqliteLog {
    /// Opens (creating if needed) the log at `path`, keeping at most
    /// `max_rows` rows, with the default queue length and no per-sandbox
    /// share or rate (see [`SqliteLog::open_with`] for those).
    pub fn open(path: &Path, max_rows: u64) -> Result<SqliteLog, OpenError> {
        let options = LogOptions { max_rows, max_rows_per_sandbox: max_rows, rate: None, ..LogOptions::default() };
        SqliteLog::open_with(path, options)
    }

    /// Opens (creating if needed) the log at `path`.
    pub fn open_with(path: &Path, options: LogOptions) -> Result<SqliteLog, OpenError> {
        let db_error =
            |source: rusqlite::Error| OpenError::Database { path: path.to_path_buf(), source: source.into() };
        let mut conn = Connection::open(path).map_err(db_error)?;
        match schema::prepare_for_writing(&mut conn).map_err(db_error)? {
            Prepared::Ready => {}
            Prepared::Newer(found) => return Err(OpenError::NewerSchema { path: path.to_path_buf(), found }),
        }
        let (queue, rx) = mpsc::sync_channel(options.queue_len.max(1));
        let drops = Arc::new(Drops::default());
        let max_rows = options.max_rows.max(1);
        let writer = Writer {
            conn,
            max_rows,
            per_sandbox: options.max_rows_per_sandbox.clamp(1, max_rows),
            since_trim: HashMap::new(),
            since_global_trim: 0,
            drops: Arc::clone(&drops),
        };
        let writer = std::thread::Builder::new()
            .name("moat-log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(OpenError::Thread)?;
        Ok(SqliteLog { queue: Some(queue), writer: Some(writer), drops, throttle: options.rate.map(Throttle::new) })
    }

    /// Blocks until every record handed over before this call is committed
    /// (or counted as dropped, if the database refused it).
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if let Some(queue) = &self.queue {
            if queue.send(Msg::Flush(done)).is_ok() {
                // An error means the writer is gone; nothing is left to wait for.
                let _ = wait.recv();
            }
        }
    }

    /// Records this log has lost since it was opened: the queue was full, or
    /// the database refused a batch.
    pub fn dropped(&self) -> u64 {
        self.drops.total.load(Ordering::Relaxed)
    }
}

impl SqliteLog {
    fn enqueue(&self, record: ConnectionRecord) {
        let Some(queue) = &self.queue else { return };
        match queue.try_send(Msg::Record(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(msg) | TrySendError::Disconnected(msg)) => {
                if let Msg::Record(record) = msg {
                    self.drops.add(&record.sandbox, 1);
                }
            }
        }
    }
}

impl ConnectionSink for SqliteLog {
    fn record(&self, record: ConnectionRecord) {
        let Some(throttle) = &self.throttle else { return self.enqueue(record) };
        match throttle.admit(&record.sandbox, std::time::Instant::now()) {
            Admit::Drop => self.drops.add(&record.sandbox, 1),
            Admit::Keep { dropped_before: 0 } => self.enqueue(record),
            Admit::Keep { dropped_before } => {
                let rate = throttle.rate();
                let note = format!(
                    "{dropped_before} records dropped: over the rate limit ({} a second, bursts of {}, per sandbox)",
                    rate.per_second, rate.burst
                );
                let summary =
                    ConnectionRecord::notice(&record.sandbox, record.started_ms, record.mode, LogVerdict::Failed, note);
                self.enqueue(summary);
                self.enqueue(record);
            }
        }
    }
}

impl Drop for SqliteLog {
    fn drop(&mut self) {
        // Closing the queue ends the writer's loop once it has drained it.
        drop(self.queue.take());
        if let Some(writer) = self.writer.take() {
            // A panicked writer has nothing left to write.
            let _ = writer.join();
        }
    }
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    max_rows: u64,
    per_sandbox: u64,
    /// Rows inserted per sandbox since its share was last trimmed.
    since_trim: HashMap<String, u64>,
    /// Rows inserted since the file was last trimmed.
    since_global_trim: u64,
    drops: Arc<Drops>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut records = Vec::with_capacity(BATCH);
        let mut flushes = Vec::new();
        let mut busy = false;
        // `recv` fails only once the queue is empty and the log was dropped.
        while let Ok(first) = rx.recv() {
            if !busy {
                std::thread::sleep(LINGER);
            }
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Record(r) => records.push(r),
                    Msg::Flush(done) => flushes.push(done),
                }
                if records.len() < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            // A full batch means more are waiting: no lingering before the next.
            busy = records.len() == BATCH;
            self.write(&mut records);
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
    }

    /// Commits `records` and the pending drop counts in one transaction, or
    /// counts the records as dropped. Empties `records` either way.
    fn write(&mut self, records: &mut Vec<ConnectionRecord>) {
        let drops = self.drops.take();
        if records.is_empty() && drops.is_empty() {
            return;
        }
        let shared = self.per_sandbox < self.max_rows;
        if shared {
            for r in records.iter() {
                *self.since_trim.entry(r.sandbox.clone()).or_default() += 1;
            }
        }
        // Each bound is enforced every 1 % of it: a trim walks that many
        // rows, too slow to do for every batch.
        let step = (self.per_sandbox / 100).max(1);
        let due: Vec<String> = self.since_trim.iter().filter(|(_, n)| **n >= step).map(|(s, _)| s.clone()).collect();
        self.since_global_trim += records.len() as u64;
        let global_due = self.since_global_trim >= (self.max_rows / 100).max(1);
        let result = (|| {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for r in records.iter() {
                schema::insert(&tx, r)?;
            }
            for (sandbox, n) in &drops {
                schema::add_dropped(&tx, sandbox, *n)?;
            }
            for sandbox in &due {
                schema::trim_sandbox(&tx, sandbox, self.per_sandbox)?;
            }
            if global_due {
                schema::trim(&tx, self.max_rows)?;
            }
            tx.commit()
        })();
        if result.is_ok() {
            for sandbox in &due {
                self.since_trim.remove(sandbox);
            }
            if global_due {
                self.since_global_trim = 0;
            }
        }
        if result.is_err() {
            self.drops.restore(drops);
            for r in records.iter() {
                self.drops.add(&r.sandbox, 1);
            }
        }
        records.clear();
    }
}
