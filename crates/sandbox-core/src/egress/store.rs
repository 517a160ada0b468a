//! The network policy on disk: the chosen preset and the user's rules, in
//! SQLite, shared by the CLI (which edits it) and every supervisor (which
//! reloads it as soon as it changes).
//!
//! Rules are stored in their textual form (`allow network github.com
//! --sandbox web`), which `moat_netproxy::policy::Rule` prints and parses
//! losslessly, so `moat policy ls` output can be pasted back.

use std::path::Path;

use moat_netproxy::policy::{Preset, Rule};
use rusqlite::{params, Connection, OptionalExtension};

/// A user rule as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRule {
    /// Stable id, for `moat policy rm ID`.
    pub id: i64,
    /// The rule.
    pub rule: Rule,
    /// When it was added, seconds since the Unix epoch.
    pub created_at: i64,
}

/// What went wrong with the policy database.
#[derive(Debug, thiserror::Error)]
pub enum PolicyStoreError {
    /// SQLite failed.
    #[error("policy database")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer Moat.
    #[error("the policy database has schema version {0}, newer than this moat understands; upgrade moat")]
    TooNew(i64),
    /// A new rule would open more than its author likely meant.
    #[error(transparent)]
    Refused(#[from] moat_netproxy::policy::RuleRefused),
    /// A stored row does not parse (edited by hand, or a bug).
    #[error("stored rule {id} ({text:?}) is invalid; remove it with `moat policy rm {id}`")]
    Corrupt {
        /// The row.
        id: i64,
        /// Its text.
        text: String,
    },
}

const SCHEMA_VERSION: i64 = 1;

/// The policy database.
#[derive(Debug)]
pub struct PolicyStore {
    db: Connection,
    seen_version: Option<i64>,
}

impl PolicyStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<PolicyStore, PolicyStoreError> {
        let (db, version) = crate::db::open_database(path)?;
        if version > SCHEMA_VERSION {
            return Err(PolicyStoreError::TooNew(version));
        }
        if version < 1 {
            db.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS rules (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     rule TEXT NOT NULL UNIQUE,
                     created_at INTEGER NOT NULL
                 );
                 PRAGMA user_version = 1;
                 COMMIT;",
            )?;
        }
        Ok(PolicyStore { db, seen_version: None })
    }

    /// The chosen preset; `None` until one has been chosen (first use).
    pub fn preset(&self) -> Result<Option<Preset>, PolicyStoreError> {
        let value: Option<String> =
            self.db.query_row("SELECT value FROM settings WHERE key = 'preset'", [], |r| r.get(0)).optional()?;
        // An unknown name (written by a newer Moat) falls back to the safest preset.
        Ok(value.map(|v| v.parse().unwrap_or(Preset::DenyAll)))
    }

    /// Chooses the preset; user rules stay.
    pub fn set_preset(&self, preset: Preset) -> Result<(), PolicyStoreError> {
        self.db.execute(
            "INSERT INTO settings (key, value) VALUES ('preset', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![preset.name()],
        )?;
        Ok(())
    }

    /// Adds rules (one already present is kept, not duplicated). Returns the
    /// stored rows of `rules`, in order.
    pub fn add(&mut self, rules: &[Rule]) -> Result<Vec<StoredRule>, PolicyStoreError> {
        for rule in rules {
            rule.check_new()?;
        }
        let now = now_secs();
        let tx = self.db.transaction()?;
        for rule in rules {
            tx.execute(
                "INSERT OR IGNORE INTO rules (rule, created_at) VALUES (?1, ?2)",
                params![rule.to_string(), now],
            )?;
        }
        tx.commit()?;
        let all = self.rules()?;
        Ok(rules.iter().filter_map(|r| all.iter().find(|s| &s.rule == r).cloned()).collect())
    }

    /// Removes the given rules; returns how many existed.
    pub fn remove(&mut self, rules: &[Rule]) -> Result<usize, PolicyStoreError> {
        let tx = self.db.transaction()?;
        let mut n = 0;
        for rule in rules {
            n += tx.execute("DELETE FROM rules WHERE rule = ?1", params![rule.to_string()])?;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Removes a rule by id; `false` if there was none.
    pub fn remove_id(&self, id: i64) -> Result<bool, PolicyStoreError> {
        Ok(self.db.execute("DELETE FROM rules WHERE id = ?1", params![id])? > 0)
    }

    /// Drops every rule scoped to `sandbox` (when it is removed).
    pub fn remove_sandbox(&mut self, sandbox: &str) -> Result<usize, PolicyStoreError> {
        let doomed: Vec<Rule> = self
            .rules()?
            .into_iter()
            .filter(|s| matches!(&s.rule.scope, moat_netproxy::policy::Scope::Sandbox(n) if n == sandbox))
            .map(|s| s.rule)
            .collect();
        self.remove(&doomed)
    }

    /// Every user rule, oldest first.
    pub fn rules(&self) -> Result<Vec<StoredRule>, PolicyStoreError> {
        let mut stmt = self.db.prepare("SELECT id, rule, created_at FROM rules ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, text, created_at) = row?;
            let rule = text.parse().map_err(|_| PolicyStoreError::Corrupt { id, text })?;
            out.push(StoredRule { id, rule, created_at });
        }
        Ok(out)
    }

    /// Deletes every user rule and sets the preset; returns how many rules went.
    pub fn reset(&mut self, preset: Preset) -> Result<usize, PolicyStoreError> {
        let tx = self.db.transaction()?;
        let n = tx.execute("DELETE FROM rules", [])?;
        tx.execute(
            "INSERT INTO settings (key, value) VALUES ('preset', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![preset.name()],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// The policy to enforce: the preset (balanced until one is chosen) and
    /// every user rule.
    pub fn load(&self) -> Result<(Preset, Vec<Rule>), PolicyStoreError> {
        let preset = self.preset()?.unwrap_or_default();
        Ok((preset, self.rules()?.into_iter().map(|s| s.rule).collect()))
    }

    /// True if another connection changed the database since the last call
    /// (the first call is always true). Cheap: one pragma read.
    pub fn changed(&mut self) -> Result<bool, PolicyStoreError> {
        let v: i64 = self.db.pragma_query_value(None, "data_version", |r| r.get(0))?;
        let changed = self.seen_version != Some(v);
        self.seen_version = Some(v);
        Ok(changed)
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> Rule {
        s.parse().unwrap()
    }

    #[test]
    fn rules_round_trip_without_duplicates_and_reset_clears_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = PolicyStore::open(&dir.path().join("p.db")).unwrap();
        assert_eq!(store.preset().unwrap(), None, "no preset until one is chosen");
        assert_eq!(store.load().unwrap().0, Preset::Balanced);
        let added =
            store.add(&[rule("allow network github.com"), rule("deny network **.evil.test --sandbox web")]).unwrap();
        assert_eq!(added.len(), 2);
        store.add(&[rule("allow network github.com")]).unwrap();
        assert_eq!(store.rules().unwrap().len(), 2, "adding twice keeps one");
        store.set_preset(Preset::DenyAll).unwrap();
        drop(store);

        let mut store = PolicyStore::open(&dir.path().join("p.db")).unwrap();
        let (preset, rules) = store.load().unwrap();
        assert_eq!(preset, Preset::DenyAll);
        assert_eq!(rules, vec![rule("allow network github.com"), rule("deny network **.evil.test --sandbox web")]);
        assert_eq!(store.remove_sandbox("web").unwrap(), 1);
        assert!(store.remove_id(added[0].id).unwrap());
        assert!(!store.remove_id(added[0].id).unwrap());
        store.add(&[rule("allow network a.test")]).unwrap();
        assert_eq!(store.reset(Preset::AllowAll).unwrap(), 1);
        assert_eq!(store.load().unwrap(), (Preset::AllowAll, vec![]));
    }

    #[test]
    fn another_connection_s_change_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let mut watcher = PolicyStore::open(&path).unwrap();
        assert!(watcher.changed().unwrap());
        assert!(!watcher.changed().unwrap());
        let mut editor = PolicyStore::open(&path).unwrap();
        editor.add(&[rule("allow network example.test")]).unwrap();
        assert!(watcher.changed().unwrap(), "a commit elsewhere bumps data_version");
        assert!(!watcher.changed().unwrap());
    }

    #[test]
    fn a_hand_edited_bad_row_names_its_id_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let store = PolicyStore::open(&path).unwrap();
        Connection::open(&path)
            .unwrap()
            .execute("INSERT INTO rules (rule, created_at) VALUES ('allow nothing', 0)", [])
            .unwrap();
        let err = store.rules().unwrap_err().to_string();
        assert!(err.contains("moat policy rm 1"), "{err}");
    }

    #[test]
    fn a_new_address_rule_opening_every_port_of_private_space_is_refused_but_old_rows_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let mut store = PolicyStore::open(&path).unwrap();
        let err = store.add(&[rule("allow network a.test"), rule("allow network 10.0.0.0/8")]).unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/8:*"), "{err}");
        assert_eq!(store.rules().unwrap(), vec![], "nothing of the list was added");
        store.add(&[rule("allow network 10.0.0.0/8:*")]).unwrap();
        // A row stored before the check existed keeps working (and can be removed).
        Connection::open(&path)
            .unwrap()
            .execute("INSERT INTO rules (rule, created_at) VALUES ('allow network 192.168.0.0/16', 0)", [])
            .unwrap();
        assert_eq!(store.load().unwrap().1.len(), 2);
        assert_eq!(store.remove(&[rule("allow network 192.168.0.0/16")]).unwrap(), 1);
    }
}
