//! Opening SQLite files the one way every store does: WAL, busy timeout, migrations.
//!
//! A layer of its own below handler-base (the publish outbox), the stores, the job
//! runner and the transfer watermarks, which all open their files here, so that a change
//! to the stores rebuilds no daemon that does not use them. Blocking: async callers run
//! it in `spawn_blocking`.

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// What can go wrong opening, migrating or copying a database; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    #[error("sqlite error on {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database {path} has schema version {found}, newer than this build knows ({known})")]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("{path} is not a UTF-8 path (VACUUM INTO needs one)")]
    NotUtf8 { path: PathBuf },
}

/// Adds the database path to a rusqlite error.
trait SqlContext<T> {
    fn ctx(self, path: &Path) -> Result<T, SqliteError>;
}

impl<T> SqlContext<T> for Result<T, rusqlite::Error> {
    fn ctx(self, path: &Path) -> Result<T, SqliteError> {
        self.map_err(|source| SqliteError::Sqlite {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// How long a writer waits for another writer's lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens (creating parent directories) a database in WAL mode with a busy timeout and
/// brings its schema up to date. `migrations[i]` takes the schema from version `i` to
/// `i + 1`; each runs in its own transaction together with the `user_version` bump.
pub fn open(path: &Path, migrations: &[&str]) -> Result<Connection, SqliteError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| SqliteError::Io {
            action: "create directory",
            path: parent.to_path_buf(),
            source: e,
        })?;
    }
    let mut conn = Connection::open(path).ctx(path)?;
    conn.busy_timeout(BUSY_TIMEOUT).ctx(path)?;
    retry_busy(|| conn.pragma_update(None, "journal_mode", "WAL")).ctx(path)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .ctx(path)?;
    migrate(&mut conn, path, migrations)?;
    Ok(conn)
}

/// Runs `f` again while it fails with SQLITE_BUSY, until [`BUSY_TIMEOUT`]. Switching a
/// fresh file to WAL needs an exclusive lock, and when two connections try at once
/// SQLite reports BUSY at once instead of calling the busy handler (it would deadlock),
/// so jobs started together on a new home need this.
fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

/// One connection shared by every clone of a store, plus its path for error messages.
#[derive(Clone)]
pub struct SharedDb {
    path: Arc<PathBuf>,
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SharedDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedDb")
            .field("path", &self.path)
            .finish()
    }
}

impl SharedDb {
    /// [`open`]s the file and wraps the connection for sharing.
    pub fn open(path: &Path, migrations: &[&str]) -> Result<Self, SqliteError> {
        let conn = open(path, migrations)?;
        Ok(SharedDb {
            path: Arc::new(path.to_path_buf()),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection. A panic while it was held cannot have left SQLite half-written
    /// (open transactions roll back on drop), so a poisoned lock is still safe to use.
    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Writes a consistent copy of the SQLite database `src` to `dst` (which must not exist):
/// `VACUUM INTO` from a read-only connection, i.e. the database as of one commit whatever
/// other connections write meanwhile, including pages still in its `-wal`; the copy is
/// then switched to `journal_mode=DELETE`, so it is one self-contained file. Blocking.
pub fn snapshot(src: &Path, dst: &Path) -> Result<(), SqliteError> {
    use rusqlite::OpenFlags;
    let conn = Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ctx(src)?;
    conn.busy_timeout(BUSY_TIMEOUT).ctx(src)?;
    let target = dst.to_str().ok_or_else(|| SqliteError::NotUtf8 {
        path: dst.to_path_buf(),
    })?;
    conn.execute("VACUUM INTO ?1", [target]).ctx(src)?;
    drop(conn);
    let out = Connection::open(dst).ctx(dst)?;
    out.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get::<_, String>(0))
        .ctx(dst)?;
    Ok(())
}

fn migrate(conn: &mut Connection, path: &Path, migrations: &[&str]) -> Result<(), SqliteError> {
    let known = i64::try_from(migrations.len()).unwrap_or(i64::MAX);
    loop {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .ctx(path)?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .ctx(path)?;
        if version > known {
            return Err(SqliteError::SchemaTooNew {
                path: path.to_path_buf(),
                found: version,
                known,
            });
        }
        let Some(sql) = usize::try_from(version)
            .ok()
            .and_then(|v| migrations.get(v))
        else {
            return Ok(());
        };
        tx.execute_batch(sql).ctx(path)?;
        tx.pragma_update(None, "user_version", version + 1)
            .ctx(path)?;
        tx.commit().ctx(path)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jobs started together (two selfplay slots on a fresh home) open the same new
    /// file at once; every one of them must get a WAL database with its schema.
    #[test]
    fn concurrent_first_opens_all_succeed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = ["CREATE TABLE a(x INTEGER);", "CREATE TABLE b(y INTEGER);"];
        for round in 0..50 {
            let path = dir.path().join(format!("r{round}.db"));
            let barrier = std::sync::Barrier::new(8);
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            open(&path, &m).map(|_| ())
                        })
                    })
                    .collect();
                for h in handles {
                    let r = h.join().expect("thread");
                    assert!(r.is_ok(), "round {round}: {r:?}");
                }
            });
        }
    }

    #[test]
    fn migrations_apply_once_and_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("x.db");
        let m1 = ["CREATE TABLE a(x INTEGER);"];
        let conn = open(&path, &m1).expect("open v1");
        drop(conn);
        let m2 = [
            "CREATE TABLE a(x INTEGER);",
            "ALTER TABLE a ADD COLUMN y TEXT;",
        ];
        let conn = open(&path, &m2).expect("open v2");
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(v, 2);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("mode");
        assert_eq!(mode, "wal");
        drop(conn);
        let err = open(&path, &m1).expect_err("older build must refuse a newer schema");
        assert!(
            matches!(
                err,
                SqliteError::SchemaTooNew {
                    found: 2,
                    known: 1,
                    ..
                }
            ),
            "{err}"
        );
    }
}
