//! The leader fence of a SQLite store (the work queue, the Elo store): a `fence` table
//! row `leader` holding the highest fencing token a write carried. A write raises it in
//! the same transaction as itself, so a deposed leader's write (a lower token) is refused
//! whole, never half applied.

use crate::StoreError;
use crate::error::SqlContext;
use rusqlite::{OptionalExtension, Transaction, params};
use std::path::Path;

/// The row of the leader's fence.
pub(crate) const LEADER_FENCE: &str = "leader";

/// A token as SQLite stores it.
pub(crate) fn wire(token: u64) -> Result<i64, StoreError> {
    i64::try_from(token)
        .map_err(|_| StoreError::Invalid(format!("fencing token {token} is out of range")))
}

/// Raises the fence to `token` within `tx`; `Err` with the higher token it holds (nothing
/// written) when a newer leader wrote before.
pub(crate) fn raise(
    tx: &Transaction<'_>,
    path: &Path,
    token: u64,
) -> Result<Result<(), u64>, StoreError> {
    if let Some(seen) = read(tx, path)?.filter(|&seen| seen > token) {
        return Ok(Err(seen));
    }
    let wire_token = wire(token)?;
    tx.execute(
        "INSERT INTO fence (name, token) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET token = excluded.token",
        params![LEADER_FENCE, wire_token],
    )
    .ctx(path)?;
    Ok(Ok(()))
}

/// The highest token the fence holds (`None` before any fenced write).
pub(crate) fn read(conn: &rusqlite::Connection, path: &Path) -> Result<Option<u64>, StoreError> {
    let token: Option<i64> = conn
        .query_row(
            "SELECT token FROM fence WHERE name = ?1",
            [LEADER_FENCE],
            |r| r.get(0),
        )
        .optional()
        .ctx(path)?;
    Ok(token.and_then(|t| u64::try_from(t).ok()))
}
