//! Work queue `data/work_queue.db`: prioritised items claimed with a lease.
//!
//! A claim is one `UPDATE … WHERE item_id = (SELECT … LIMIT 1) RETURNING` statement, so two
//! workers can never hold the same item. A claim carries a lease (default 1 h); a worker
//! extends it with [`WorkQueue::heartbeat`]; once it expires the item goes back to
//! pending. Failures retry until `max_attempts`, then the item is `failed`.
//! [`WorkQueue`] is the backend trait (a NATS JetStream work-queue stream with ack-wait
//! is the planned second backend); [`SqliteWorkQueue`] is the embedded default.
//!
//! Leader-only producers enqueue with [`WorkQueue::enqueue_fenced`] and their fencing
//! token (`ringrift_cluster::leader`): the queue remembers the highest token it accepted
//! (table `fence`, in the same transaction as the insert) and refuses a lower one with
//! [`StoreError::Fenced`], counting the refusal, so a deposed leader that still believes
//! it leads cannot add work.

use crate::error::SqlContext;
use crate::{ConfigKey, OffRuntime, StoreError, db};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

/// Default lease of a claim.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(3600);
/// Default number of attempts before an item is given up.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE work_items (
        item_id TEXT PRIMARY KEY NOT NULL,
        kind TEXT NOT NULL,
        config_key TEXT,
        priority INTEGER NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        claimed_by TEXT,
        lease_expires_at INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        last_error TEXT,
        result TEXT
    );
    CREATE INDEX work_items_pending ON work_items(status, priority DESC, created_at);",
    "ALTER TABLE work_items ADD COLUMN fence_token INTEGER;
    CREATE TABLE fence (
        name TEXT PRIMARY KEY NOT NULL,
        token INTEGER NOT NULL,
        refused INTEGER NOT NULL DEFAULT 0,
        last_refused INTEGER
    );",
];

/// The fence of leader-only writers ([`WorkQueue::enqueue_fenced`]).
use crate::fence::LEADER_FENCE;

/// The state of the leader fence: the highest token accepted and how many writes with a
/// lower one were refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceState {
    pub token: u64,
    pub refused: u64,
    pub last_refused: Option<u64>,
}

/// What kind of work an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkKind {
    Selfplay,
    Training,
    Tournament,
    Export,
    Evaluation,
    Distillation,
    Sync,
}

impl WorkKind {
    pub const ALL: [WorkKind; 7] = [
        WorkKind::Selfplay,
        WorkKind::Training,
        WorkKind::Tournament,
        WorkKind::Export,
        WorkKind::Evaluation,
        WorkKind::Distillation,
        WorkKind::Sync,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkKind::Selfplay => "selfplay",
            WorkKind::Training => "training",
            WorkKind::Tournament => "tournament",
            WorkKind::Export => "export",
            WorkKind::Evaluation => "evaluation",
            WorkKind::Distillation => "distillation",
            WorkKind::Sync => "sync",
        }
    }
}

impl fmt::Display for WorkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkKind {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WorkKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| StoreError::Invalid(format!("unknown work kind {s:?}")))
    }
}

/// Lifecycle state of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkStatus {
    Pending,
    Claimed,
    Completed,
    Failed,
}

impl WorkStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkStatus::Pending => "pending",
            WorkStatus::Claimed => "claimed",
            WorkStatus::Completed => "completed",
            WorkStatus::Failed => "failed",
        }
    }
}

impl FromStr for WorkStatus {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            WorkStatus::Pending,
            WorkStatus::Claimed,
            WorkStatus::Completed,
            WorkStatus::Failed,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| StoreError::Invalid(format!("unknown work status {s:?}")))
    }
}

/// A request to enqueue work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewWork {
    pub kind: WorkKind,
    pub config_key: Option<ConfigKey>,
    pub priority: i64,
    pub payload: serde_json::Value,
    pub max_attempts: u32,
}

impl NewWork {
    pub fn new(
        kind: WorkKind,
        config_key: Option<ConfigKey>,
        priority: i64,
        payload: serde_json::Value,
    ) -> Self {
        NewWork {
            kind,
            config_key,
            priority,
            payload,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

/// An item as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkItem {
    pub item_id: String,
    pub kind: WorkKind,
    pub config_key: Option<ConfigKey>,
    pub priority: i64,
    pub payload: serde_json::Value,
    pub status: WorkStatus,
    pub attempts: u32,
    pub max_attempts: u32,
    pub claimed_by: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub last_error: Option<String>,
}

/// Item counts per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDepth {
    pub pending: u64,
    pub claimed: u64,
    pub completed: u64,
    pub failed: u64,
}

/// A clock in Unix milliseconds, injectable so lease expiry is testable without sleeping.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::now_ms()
    }
}

/// Opens the node's work queue file of `home` (`data/work_queue.db`, creating `data/`).
pub fn open_home(home: &Path) -> Result<Arc<dyn WorkQueue>, StoreError> {
    Ok(Arc::new(SqliteWorkQueue::open(
        &crate::paths::work_queue_db(home),
    )?))
}

/// A shared work queue backend.
pub trait WorkQueue: Send + Sync {
    /// Adds an item; returns its id.
    fn enqueue(&self, work: &NewWork) -> Result<String, StoreError>;
    /// Adds an item on behalf of the leader holding fencing `token`; refused with
    /// [`StoreError::Fenced`] (and counted) when a higher token was accepted before.
    /// Equal or higher tokens are accepted and the highest is remembered.
    fn enqueue_fenced(&self, work: &NewWork, token: u64) -> Result<String, StoreError> {
        let _ = (work, token);
        Err(StoreError::Invalid(
            "this work-queue backend has no fenced enqueue".into(),
        ))
    }
    /// Atomically claims the best pending item (highest priority, then oldest) of one of
    /// `kinds` (any kind when empty) for `worker`, leased for `lease`.
    fn claim(
        &self,
        worker: &str,
        kinds: &[WorkKind],
        lease: Duration,
    ) -> Result<Option<WorkItem>, StoreError>;
    /// Extends the lease of an item `worker` holds. `false` if it no longer holds it.
    fn heartbeat(&self, item_id: &str, worker: &str, lease: Duration) -> Result<bool, StoreError>;
    /// Marks a held item done. `false` if `worker` no longer holds it.
    fn complete(
        &self,
        item_id: &str,
        worker: &str,
        result: &serde_json::Value,
    ) -> Result<bool, StoreError>;
    /// Records a failed attempt: back to pending, or `failed` after `max_attempts`.
    fn fail(&self, item_id: &str, worker: &str, error: &str) -> Result<bool, StoreError>;
    /// Returns items with expired leases to pending (counting the attempt); returns how many.
    fn requeue_expired(&self) -> Result<usize, StoreError>;
    fn depth(&self) -> Result<QueueDepth, StoreError>;
    fn get(&self, item_id: &str) -> Result<Option<WorkItem>, StoreError>;
    /// Items `worker` holds now (a restarted worker resumes them instead of waiting for
    /// their leases to expire).
    fn held_by(&self, worker: &str) -> Result<Vec<WorkItem>, StoreError>;
    /// Pending and claimed items of `kind` (and `config`, when given), oldest first.
    fn open_items(
        &self,
        kind: WorkKind,
        config: Option<ConfigKey>,
    ) -> Result<Vec<WorkItem>, StoreError>;
    /// Creation time (Unix ms) of the oldest pending item, if any.
    fn oldest_pending_ms(&self) -> Result<Option<i64>, StoreError>;
}

/// The SQLite work queue. Cheap to clone; clones share one connection. Several
/// processes (or several `SqliteWorkQueue`s) may open the same file.
#[derive(Clone)]
pub struct SqliteWorkQueue {
    db: db::SharedDb,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for SqliteWorkQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteWorkQueue")
            .field("path", &self.db.path())
            .finish()
    }
}

impl OffRuntime for SqliteWorkQueue {}

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
}

const ITEM_COLUMNS: &str = "item_id, kind, config_key, priority, payload, status, attempts, \
     max_attempts, claimed_by, lease_expires_at, last_error";

impl SqliteWorkQueue {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::with_clock(path, Arc::new(SystemClock))
    }

    pub fn with_clock(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        Ok(SqliteWorkQueue {
            db: db::SharedDb::open(path, MIGRATIONS)?,
            clock,
        })
    }

    pub fn path(&self) -> &Path {
        self.db.path()
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.db.lock()
    }

    /// Deletes completed items last updated before `before_ms` (retention); pending,
    /// claimed and failed items are kept. Returns how many went.
    pub fn purge_completed(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.conn()
            .execute(
                "DELETE FROM work_items WHERE status = 'completed' AND updated_at < ?1",
                [before_ms],
            )
            .ctx(self.path())
    }

    fn item_from_row(&self, r: &Row<'_>) -> Result<WorkItem, StoreError> {
        let path = self.path();
        let get = |e: rusqlite::Error| StoreError::Sqlite {
            path: path.to_path_buf(),
            source: e,
        };
        let item_id: String = r.get(0).map_err(get)?;
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("work item {item_id}: {reason}"),
        };
        let kind: String = r.get(1).map_err(get)?;
        let config: Option<String> = r.get(2).map_err(get)?;
        let payload: String = r.get(4).map_err(get)?;
        let status: String = r.get(5).map_err(get)?;
        let attempts: i64 = r.get(6).map_err(get)?;
        let max_attempts: i64 = r.get(7).map_err(get)?;
        Ok(WorkItem {
            kind: kind
                .parse()
                .map_err(|e: StoreError| corrupt(e.to_string()))?,
            config_key: config
                .map(|c| c.parse())
                .transpose()
                .map_err(|e: crate::InvalidConfigKey| corrupt(e.to_string()))?,
            priority: r.get(3).map_err(get)?,
            payload: serde_json::from_str(&payload)
                .map_err(|e| corrupt(format!("payload: {e}")))?,
            status: status
                .parse()
                .map_err(|e: StoreError| corrupt(e.to_string()))?,
            attempts: u32::try_from(attempts)
                .map_err(|_| corrupt(format!("attempts {attempts}")))?,
            max_attempts: u32::try_from(max_attempts)
                .map_err(|_| corrupt(format!("max_attempts {max_attempts}")))?,
            claimed_by: r.get(8).map_err(get)?,
            lease_expires_at: r.get(9).map_err(get)?,
            last_error: r.get(10).map_err(get)?,
            item_id,
        })
    }

    pub async fn enqueue_async(&self, work: NewWork) -> Result<String, StoreError> {
        self.off_runtime(move |q| q.enqueue(&work)).await
    }

    pub async fn claim_async(
        &self,
        worker: String,
        kinds: Vec<WorkKind>,
        lease: Duration,
    ) -> Result<Option<WorkItem>, StoreError> {
        self.off_runtime(move |q| q.claim(&worker, &kinds, lease))
            .await
    }

    pub async fn heartbeat_async(
        &self,
        item_id: String,
        worker: String,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        self.off_runtime(move |q| q.heartbeat(&item_id, &worker, lease))
            .await
    }

    pub async fn complete_async(
        &self,
        item_id: String,
        worker: String,
        result: serde_json::Value,
    ) -> Result<bool, StoreError> {
        self.off_runtime(move |q| q.complete(&item_id, &worker, &result))
            .await
    }

    pub async fn fail_async(
        &self,
        item_id: String,
        worker: String,
        error: String,
    ) -> Result<bool, StoreError> {
        self.off_runtime(move |q| q.fail(&item_id, &worker, &error))
            .await
    }

    pub async fn depth_async(&self) -> Result<QueueDepth, StoreError> {
        self.off_runtime(|q| q.depth()).await
    }

    /// Inserts one pending item (the body of both enqueues).
    fn insert_in(
        &self,
        conn: &Connection,
        work: &NewWork,
        fence_token: Option<i64>,
    ) -> Result<String, StoreError> {
        if work.max_attempts == 0 {
            return Err(StoreError::Invalid(
                "max_attempts must be at least 1".into(),
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let now = self.clock.now_ms();
        conn.execute(
            "INSERT INTO work_items (item_id, kind, config_key, priority, payload, status,
                    attempts, max_attempts, created_at, updated_at, fence_token)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?7, ?7, ?8)",
            params![
                id,
                work.kind.as_str(),
                work.config_key.map(|k| k.to_string()),
                work.priority,
                work.payload.to_string(),
                work.max_attempts,
                now,
                fence_token
            ],
        )
        .ctx(self.path())?;
        Ok(id)
    }

    /// The leader fence: the highest token accepted and the refusals (`None` before any
    /// fenced enqueue).
    pub fn fence(&self) -> Result<Option<FenceState>, StoreError> {
        let row: Option<(i64, i64, Option<i64>)> = self
            .conn()
            .query_row(
                "SELECT token, refused, last_refused FROM fence WHERE name = ?1",
                [LEADER_FENCE],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .ctx(self.path())?;
        Ok(row.map(|(t, r, l)| FenceState {
            token: u64::try_from(t).unwrap_or(0),
            refused: u64::try_from(r).unwrap_or(0),
            last_refused: l.and_then(|l| u64::try_from(l).ok()),
        }))
    }

    /// Expired claims go back to pending, or to failed when out of attempts.
    fn requeue_expired_in(&self, conn: &Connection, now: i64) -> Result<usize, StoreError> {
        conn.execute(
            "UPDATE work_items SET
                status = CASE WHEN attempts + 1 >= max_attempts THEN 'failed' ELSE 'pending' END,
                attempts = attempts + 1, claimed_by = NULL, lease_expires_at = NULL,
                last_error = 'lease expired', updated_at = ?1
             WHERE status = 'claimed' AND lease_expires_at <= ?1",
            [now],
        )
        .ctx(self.path())
    }
}

impl WorkQueue for SqliteWorkQueue {
    fn enqueue_fenced(&self, work: &NewWork, token: u64) -> Result<String, StoreError> {
        let wire_token = crate::fence::wire(token)?;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .ctx(self.path())?;
        if let Err(seen) = crate::fence::raise(&tx, self.path(), token)? {
            tx.execute(
                "UPDATE fence SET refused = refused + 1, last_refused = ?2 WHERE name = ?1",
                params![LEADER_FENCE, wire_token],
            )
            .ctx(self.path())?;
            tx.commit().ctx(self.path())?;
            return Err(StoreError::Fenced { token, seen });
        }
        let id = self.insert_in(&tx, work, Some(wire_token))?;
        tx.commit().ctx(self.path())?;
        Ok(id)
    }

    fn enqueue(&self, work: &NewWork) -> Result<String, StoreError> {
        let conn = self.conn();
        self.insert_in(&conn, work, None)
    }

    fn claim(
        &self,
        worker: &str,
        kinds: &[WorkKind],
        lease: Duration,
    ) -> Result<Option<WorkItem>, StoreError> {
        let now = self.clock.now_ms();
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .ctx(self.path())?;
        self.requeue_expired_in(&tx, now)?;
        let kinds_json =
            serde_json::to_string(&kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>())
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let sql = format!(
            "UPDATE work_items SET status = 'claimed', claimed_by = ?1, lease_expires_at = ?2,
                updated_at = ?3
             WHERE item_id = (
                SELECT item_id FROM work_items
                WHERE status = 'pending'
                  AND (?4 = '[]' OR kind IN (SELECT value FROM json_each(?4)))
                ORDER BY priority DESC, created_at, item_id LIMIT 1)
               AND status = 'pending'
             RETURNING {ITEM_COLUMNS}"
        );
        let item = {
            let mut stmt = tx.prepare_cached(&sql).ctx(self.path())?;
            let mut rows = stmt
                .query(params![
                    worker,
                    now.saturating_add(lease_ms(lease)),
                    now,
                    kinds_json
                ])
                .ctx(self.path())?;
            match rows.next().ctx(self.path())? {
                Some(row) => Some(self.item_from_row(row)?),
                None => None,
            }
        };
        tx.commit().ctx(self.path())?;
        Ok(item)
    }

    fn heartbeat(&self, item_id: &str, worker: &str, lease: Duration) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let n = self
            .conn()
            .execute(
                "UPDATE work_items SET lease_expires_at = ?1, updated_at = ?2
                 WHERE item_id = ?3 AND claimed_by = ?4 AND status = 'claimed'
                   AND lease_expires_at > ?2",
                params![now.saturating_add(lease_ms(lease)), now, item_id, worker],
            )
            .ctx(self.path())?;
        Ok(n == 1)
    }

    fn complete(
        &self,
        item_id: &str,
        worker: &str,
        result: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let n = self
            .conn()
            .execute(
                "UPDATE work_items SET status = 'completed', result = ?1, updated_at = ?2,
                    attempts = attempts + 1, lease_expires_at = NULL
                 WHERE item_id = ?3 AND claimed_by = ?4 AND status = 'claimed'",
                params![result.to_string(), now, item_id, worker],
            )
            .ctx(self.path())?;
        Ok(n == 1)
    }

    fn fail(&self, item_id: &str, worker: &str, error: &str) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let n = self
            .conn()
            .execute(
                "UPDATE work_items SET
                    status = CASE WHEN attempts + 1 >= max_attempts THEN 'failed' ELSE 'pending' END,
                    attempts = attempts + 1, claimed_by = NULL, lease_expires_at = NULL,
                    last_error = ?1, updated_at = ?2
                 WHERE item_id = ?3 AND claimed_by = ?4 AND status = 'claimed'",
                params![error, now, item_id, worker],
            )
            .ctx(self.path())?;
        Ok(n == 1)
    }

    fn requeue_expired(&self) -> Result<usize, StoreError> {
        let now = self.clock.now_ms();
        let conn = self.conn();
        self.requeue_expired_in(&conn, now)
    }

    fn depth(&self) -> Result<QueueDepth, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT status, COUNT(*) FROM work_items GROUP BY status")
            .ctx(self.path())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .ctx(self.path())?;
        let mut d = QueueDepth::default();
        for row in rows {
            let (status, n) = row.ctx(self.path())?;
            let n = u64::try_from(n).unwrap_or(0);
            match status.as_str() {
                "pending" => d.pending = n,
                "claimed" => d.claimed = n,
                "completed" => d.completed = n,
                "failed" => d.failed = n,
                other => {
                    return Err(StoreError::Corrupt {
                        path: self.path().to_path_buf(),
                        reason: format!("unknown status {other:?}"),
                    });
                }
            }
        }
        Ok(d)
    }

    fn get(&self, item_id: &str) -> Result<Option<WorkItem>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {ITEM_COLUMNS} FROM work_items WHERE item_id = ?1"
            ))
            .ctx(self.path())?;
        let mut rows = stmt.query([item_id]).ctx(self.path())?;
        match rows.next().ctx(self.path())? {
            Some(row) => Ok(Some(self.item_from_row(row)?)),
            None => Ok(None),
        }
    }

    fn oldest_pending_ms(&self) -> Result<Option<i64>, StoreError> {
        self.conn()
            .query_row(
                "SELECT MIN(created_at) FROM work_items WHERE status = 'pending'",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .ctx(self.path())
    }

    fn held_by(&self, worker: &str) -> Result<Vec<WorkItem>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {ITEM_COLUMNS} FROM work_items WHERE status = 'claimed' AND claimed_by = ?1 ORDER BY created_at"
            ))
            .ctx(self.path())?;
        let mut rows = stmt.query([worker]).ctx(self.path())?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().ctx(self.path())? {
            out.push(self.item_from_row(row)?);
        }
        Ok(out)
    }

    fn open_items(
        &self,
        kind: WorkKind,
        config: Option<ConfigKey>,
    ) -> Result<Vec<WorkItem>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {ITEM_COLUMNS} FROM work_items WHERE status IN ('pending', 'claimed') AND kind = ?1 \
                 AND (?2 IS NULL OR config_key = ?2) ORDER BY created_at"
            ))
            .ctx(self.path())?;
        let cfg = config.map(|c| c.to_string());
        let mut rows = stmt
            .query(rusqlite::params![kind.as_str(), cfg])
            .ctx(self.path())?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().ctx(self.path())? {
            out.push(self.item_from_row(row)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
