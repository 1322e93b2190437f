//! The one way every store opens a SQLite file (WAL, busy timeout, migrations), from
//! `ringrift-sqlite`, with errors as [`StoreError`]s.

use crate::StoreError;
use rusqlite::Connection;
use std::path::Path;

pub use ringrift_sqlite::{BUSY_TIMEOUT, SharedDb, SqliteError};

/// [`ringrift_sqlite::open`]: opens (creating parent directories) a database in WAL mode
/// with a busy timeout and brings its schema up to date.
pub fn open(path: &Path, migrations: &[&str]) -> Result<Connection, StoreError> {
    Ok(ringrift_sqlite::open(path, migrations)?)
}

/// [`ringrift_sqlite::snapshot`]: a consistent, self-contained copy of `src` at `dst`.
pub fn snapshot(src: &Path, dst: &Path) -> Result<(), StoreError> {
    Ok(ringrift_sqlite::snapshot(src, dst)?)
}
