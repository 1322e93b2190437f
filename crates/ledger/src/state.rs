//! A daemon's private decision state: one JSON value per (daemon, key) in
//! `$RINGRIFT_HOME/data/pipeline_state.db`, so a restarted daemon resumes its decisions
//! (watermarks, stages, what it already trained) instead of repeating them. A store is
//! opened with the daemon's own [`DaemonInfo`] and reaches only that daemon's rows: a fact
//! another daemon needs goes to the [`crate::Ledger`] (or travels in an event), never
//! through here (`tests/system/tidy.rs` checks every opening).

use handler_base::DaemonInfo;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Serialize, de::DeserializeOwned};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("pipeline state {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("pipeline state {daemon}/{key}: stored value does not parse: {error}")]
    Corrupt {
        daemon: String,
        key: String,
        error: String,
    },
    #[error("pipeline state task: {0}")]
    Join(String),
    #[error(transparent)]
    Open(#[from] ringrift_store::StoreError),
}

/// `IF NOT EXISTS`: files made before the schema was versioned already hold the table.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS state (daemon TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, updated_ms INTEGER NOT NULL, PRIMARY KEY (daemon, key))",
];

/// Cheap to clone; all SQLite work runs in `spawn_blocking`.
#[derive(Clone)]
pub struct StateStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
    daemon: String,
}

impl StateStore {
    /// Opens (creating) the state database of `home` for the daemon `own` (its `INFO`).
    pub fn open(home: &Path, own: &DaemonInfo) -> Result<StateStore, StateError> {
        Self::open_at(&home.join("data/pipeline_state.db"), own)
    }

    /// [`StateStore::open`] on a database file at `path`.
    pub fn open_at(path: &Path, own: &DaemonInfo) -> Result<StateStore, StateError> {
        // The shared opener: retries the WAL switch that racing first opens of a fresh
        // file get BUSY for, and versions the schema.
        let c = ringrift_store::db::open(path, MIGRATIONS)?;
        Ok(StateStore {
            path: path.to_owned(),
            conn: Arc::new(Mutex::new(c)),
            daemon: own.name.to_owned(),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StateError> {
        let (conn, path) = (self.conn.clone(), self.path.clone());
        tokio::task::spawn_blocking(move || {
            let c = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&c).map_err(|source| StateError::Sqlite { path, source })
        })
        .await
        .map_err(|e| StateError::Join(e.to_string()))?
    }

    /// The value stored under `key`, if any.
    pub async fn get<T: DeserializeOwned + Send + 'static>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StateError> {
        let (d, k) = (self.daemon.clone(), key.to_owned());
        let raw: Option<String> = self
            .with(move |c| {
                c.query_row(
                    "SELECT value FROM state WHERE daemon = ?1 AND key = ?2",
                    params![d, k],
                    |r| r.get(0),
                )
                .optional()
            })
            .await?;
        raw.map(|s| {
            serde_json::from_str(&s).map_err(|e| StateError::Corrupt {
                daemon: self.daemon.clone(),
                key: key.to_owned(),
                error: e.to_string(),
            })
        })
        .transpose()
    }

    /// Stores `value` under `key` (committed before this returns).
    pub async fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StateError> {
        let json = serde_json::to_string(value).map_err(|e| StateError::Corrupt {
            daemon: self.daemon.clone(),
            key: key.to_owned(),
            error: e.to_string(),
        })?;
        let (d, k) = (self.daemon.clone(), key.to_owned());
        let now = ringrift_store::now_ms();
        self.with(move |c| {
            c.execute(
                "INSERT INTO state (daemon, key, value, updated_ms) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(daemon, key) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
                params![d, k, json, now],
            )
            .map(|_| ())
        })
        .await
    }

    /// Removes `key` (committed before this returns; no error if it was absent).
    pub async fn delete(&self, key: &str) -> Result<(), StateError> {
        let (d, k) = (self.daemon.clone(), key.to_owned());
        self.with(move |c| {
            c.execute(
                "DELETE FROM state WHERE daemon = ?1 AND key = ?2",
                params![d, k],
            )
            .map(|_| ())
        })
        .await
    }

    /// Every (key, value) of this daemon.
    pub async fn all<T: DeserializeOwned + Send + 'static>(
        &self,
    ) -> Result<Vec<(String, T)>, StateError> {
        let d = self.daemon.clone();
        let rows: Vec<(String, String)> = self
            .with(move |c| {
                let mut st =
                    c.prepare("SELECT key, value FROM state WHERE daemon = ?1 ORDER BY key")?;
                let rows = st.query_map([d], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            })
            .await?;
        rows.into_iter()
            .map(|(k, v)| {
                serde_json::from_str(&v)
                    .map(|t| (k.clone(), t))
                    .map_err(|e| StateError::Corrupt {
                        daemon: self.daemon.clone(),
                        key: k,
                        error: e.to_string(),
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon of these tests, named `name`.
    fn info(name: &'static str) -> DaemonInfo {
        DaemonInfo::unregistered(name, "test")
    }
    const NAMES: [&str; 10] = ["d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9"];

    /// About ten daemons open the state file at once on a fresh home; every open must
    /// succeed (switching a new file to WAL races, and SQLite answers BUSY at once).
    #[test]
    fn concurrent_first_opens_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..200 {
            let home = dir.path().join(format!("r{round}"));
            let barrier = std::sync::Barrier::new(10);
            std::thread::scope(|s| {
                let opens: Vec<_> = (0..10)
                    .map(|i| {
                        let (home, barrier) = (&home, &barrier);
                        s.spawn(move || {
                            barrier.wait();
                            StateStore::open(home, &info(NAMES[i])).map(|_| ())
                        })
                    })
                    .collect();
                for o in opens {
                    let r = o.join().unwrap();
                    assert!(
                        r.is_ok(),
                        "round {round}: {r:?}",
                        r = r.err().map(|e| e.to_string())
                    );
                }
            });
        }
    }

    #[tokio::test]
    async fn values_survive_reopen_and_are_per_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let a = StateStore::open(dir.path(), &info("a")).unwrap();
        a.put("hex8_2p", &serde_json::json!({"watermark": 7}))
            .await
            .unwrap();
        let b = StateStore::open(dir.path(), &info("b")).unwrap();
        assert!(
            b.get::<serde_json::Value>("hex8_2p")
                .await
                .unwrap()
                .is_none()
        );
        drop(a);
        let a = StateStore::open(dir.path(), &info("a")).unwrap();
        let v: serde_json::Value = a.get("hex8_2p").await.unwrap().unwrap();
        assert_eq!(v["watermark"], 7);
        assert_eq!(a.all::<serde_json::Value>().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_value_of_the_wrong_shape_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = StateStore::open(dir.path(), &info("a")).unwrap();
        a.put("k", &"text").await.unwrap();
        let err = a.get::<u64>("k").await.unwrap_err();
        assert!(err.to_string().contains("a/k"), "{err}");
    }
}
