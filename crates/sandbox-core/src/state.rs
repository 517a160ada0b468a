//! Durable sandbox records in SQLite.
//!
//! The database holds what the user asked for (the [`SandboxSpec`] and an id);
//! whether a sandbox is running is never stored here but read from its
//! supervisor (see [`crate::supervisor::status`]), so a crash of any process
//! cannot leave a stale "running" row behind.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::db::open_database;
use crate::spec::SandboxSpec;

/// A stored sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Short stable id (names its folder).
    pub id: String,
    /// When it was created, seconds since the epoch.
    pub created_at: i64,
    /// The definition.
    pub spec: SandboxSpec,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("sandbox database error")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored row did not parse (hand-edited or from a newer Moat).
    #[error("sandbox {0:?} has an unreadable record; remove it with `moat rm -f {0}`")]
    Corrupt(String, #[source] serde_json::Error),
    /// The name is in use.
    #[error("a sandbox named {0:?} already exists; pick another --name or remove it with `moat rm {0}`")]
    NameTaken(String),
    /// The database was written by a newer Moat.
    #[error("the sandbox database has schema version {0}, newer than this Moat understands; upgrade moat")]
    TooNew(i64),
}

/// The sandbox table.
#[derive(Debug)]
pub struct Store {
    db: Connection,
}

const SCHEMA_VERSION: i64 = 1;

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let (db, version) = open_database(path)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew(version));
        }
        if version < 1 {
            db.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS sandboxes (
                     id TEXT PRIMARY KEY,
                     name TEXT NOT NULL UNIQUE,
                     created_at INTEGER NOT NULL,
                     spec TEXT NOT NULL
                 );
                 PRAGMA user_version = 1;
                 COMMIT;",
            )?;
        }
        Ok(Store { db })
    }

    /// Adds a sandbox; fails with [`StoreError::NameTaken`] if the name exists.
    pub fn insert(&self, record: &Record) -> Result<(), StoreError> {
        let spec = serde_json::to_string(&record.spec).expect("serializing a spec");
        let r = self.db.execute(
            "INSERT INTO sandboxes (id, name, created_at, spec) VALUES (?1, ?2, ?3, ?4)",
            params![record.id, record.spec.name, record.created_at, spec],
        );
        match r {
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                Err(StoreError::NameTaken(record.spec.name.clone()))
            }
            r => r.map(drop).map_err(Into::into),
        }
    }

    /// The sandbox with this name.
    pub fn get(&self, name: &str) -> Result<Option<Record>, StoreError> {
        let row = self
            .db
            .query_row("SELECT id, name, created_at, spec FROM sandboxes WHERE name = ?1", [name], raw_row)
            .optional()?;
        row.map(parse_row).transpose()
    }

    /// All sandboxes, oldest first.
    pub fn list(&self) -> Result<Vec<Record>, StoreError> {
        let mut stmt = self.db.prepare("SELECT id, name, created_at, spec FROM sandboxes ORDER BY created_at, name")?;
        let rows = stmt.query_map([], raw_row)?.collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(parse_row).collect()
    }

    /// Removes a sandbox by name; true if it existed.
    pub fn remove(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.db.execute("DELETE FROM sandboxes WHERE name = ?1", [name])? > 0)
    }
}

type RawRow = (String, String, i64, String);

fn raw_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn parse_row((id, name, created_at, spec): RawRow) -> Result<Record, StoreError> {
    let spec = serde_json::from_str(&spec).map_err(|e| StoreError::Corrupt(name, e))?;
    Ok(Record { id, created_at, spec })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str) -> Record {
        Record {
            id: id.into(),
            created_at: 1,
            spec: SandboxSpec {
                name: name.into(),
                agent: "shell".into(),
                template: None,
                workspace: "/w".into(),
                mounts: vec![],
                cpus: 1,
                memory_mib: 512,
                disk_mib: 16 * 1024,
                backend: crate::backend::BackendChoice::Auto,
                checkpoint_repo: None,
                owner: crate::owner::ShareOwner { uid: 0, gid: 0 },
                env: [("GREETING".to_string(), "hi there".to_string())].into(),
            },
        }
    }

    #[test]
    fn records_survive_reopening_and_names_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("moat.db");
        {
            let s = Store::open(&path).unwrap();
            s.insert(&record("a1", "one")).unwrap();
            s.insert(&record("b2", "two")).unwrap();
            assert!(matches!(s.insert(&record("c3", "one")), Err(StoreError::NameTaken(n)) if n == "one"));
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.get("one").unwrap(), Some(record("a1", "one")));
        assert_eq!(s.list().unwrap().len(), 2);
        assert!(s.remove("one").unwrap());
        assert!(!s.remove("one").unwrap());
        assert_eq!(s.get("one").unwrap(), None);
    }

    #[test]
    fn a_corrupt_row_names_the_sandbox_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("moat.db")).unwrap();
        s.db.execute("INSERT INTO sandboxes VALUES ('x', 'broken', 0, '{')", []).unwrap();
        let err = s.get("broken").unwrap_err();
        assert!(err.to_string().contains("moat rm -f broken"), "{err}");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("moat.db");
        Connection::open(&path).unwrap().pragma_update(None, "user_version", 9).unwrap();
        assert!(matches!(Store::open(&path), Err(StoreError::TooNew(9))));
    }
}
