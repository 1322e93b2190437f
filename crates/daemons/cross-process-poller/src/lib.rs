//! `cross_process_poller`: moves rows that outside programs (Python trainers, cron jobs)
//! insert into a SQLite `events` table onto the event router, exactly once per row.
//!
//! The table (created by the poller if missing; default
//! `$RINGRIFT_HOME/data/cross_process_events.db`, config `cross_process_poller.db`):
//!
//! ```sql
//! CREATE TABLE events (
//!     id           INTEGER PRIMARY KEY AUTOINCREMENT,
//!     event_type   TEXT NOT NULL,              -- catalogue name, e.g. 'TRAINING_COMPLETED'
//!     payload      TEXT NOT NULL DEFAULT '{}', -- JSON object fitting that type's payload
//!     config_key   TEXT NOT NULL DEFAULT '',   -- e.g. 'hex8_2p'
//!     source       TEXT NOT NULL DEFAULT '',   -- e.g. 'train.py@gpu-3'
//!     created_at   REAL NOT NULL DEFAULT (((julianday('now') - 2440587.5) * 86400.0)),
//!     published_at REAL,                       -- set by the poller after the router acked
//!     router_seq   INTEGER,                    -- the router's seq for the row
//!     error        TEXT,                       -- set instead when the row is invalid
//!     claimed_at   REAL                        -- set by the poller just before publishing
//! );
//! ```
//!
//! A writer only INSERTs (`event_type`, `payload`, optionally `config_key`, `source`).
//! **Exactly once:** each row is published with the id `xpp:<created_at>:<row id>` and
//! marked only after the router acked it. Before publishing, the poller records the
//! claim (`claimed_at`). A row claimed but not marked (the poller died between the ack
//! and the mark, or the publish failed) is reconciled by id before anything is
//! republished: the router's `Lookup` says whether (and at which seq) the log holds it,
//! and a found row is only marked. So a row appears on the stream once even when the
//! poller comes back after the router's dedup window (5 min) has passed; inside the
//! window the dedup answers "duplicate" as a second guard. Invalid rows (unknown type,
//! payload not fitting the type) get `error` set and are never published.
//!
//! **Batches** hold at most `batch` rows and `max_batch_bytes` encoded bytes (4 MiB,
//! half the router's 8 MiB request limit); a batch the router still refuses as too large
//! (OUT_OF_RANGE, RESOURCE_EXHAUSTED) is split in halves and retried.

use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_proto::{Event, EventType, wire};
use rusqlite::{Connection, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "cross_process_poller",
    about: "Bridge a SQLite events table written by outside programs into the router",
    cycle_interval_s: Some(1.0),
    scope: Some(Scope::Node),
};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    event_type   TEXT NOT NULL,
    payload      TEXT NOT NULL DEFAULT '{}',
    config_key   TEXT NOT NULL DEFAULT '',
    source       TEXT NOT NULL DEFAULT '',
    created_at   REAL NOT NULL DEFAULT (((julianday('now') - 2440587.5) * 86400.0)),
    published_at REAL,
    router_seq   INTEGER,
    error        TEXT,
    claimed_at   REAL
);
CREATE INDEX IF NOT EXISTS events_unpublished ON events(id) WHERE published_at IS NULL AND error IS NULL;
";

/// `[cross_process_poller]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PollerConfig {
    /// Path of the table's database; relative paths are under $RINGRIFT_HOME.
    pub db: PathBuf,
    /// Rows per pass.
    pub batch: usize,
    /// Encoded bytes per publish call.
    pub max_batch_bytes: usize,
    /// Testing only: exit right after the router acked a batch, before marking it (the
    /// crash the claim reconciliation exists for).
    pub crash_after_publish: bool,
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            db: PathBuf::from("data/cross_process_events.db"),
            batch: 500,
            max_batch_bytes: 4 << 20,
            crash_after_publish: false,
        }
    }
}

/// One row waiting to be bridged.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub event_type: String,
    pub payload: String,
    pub config_key: String,
    pub source: String,
    pub created_at: f64,
}

impl Row {
    /// The durable id the row is published under.
    pub fn event_id(&self) -> String {
        format!("xpp:{}:{}", self.created_at, self.id)
    }

    /// The event this row becomes, or why it cannot.
    pub fn to_event(&self) -> Result<Event, String> {
        let kind = match EventType::from_str_name(self.event_type.trim()) {
            Some(EventType::Unspecified) | None => {
                return Err(format!("unknown event type {:?}", self.event_type));
            }
            Some(k) => k,
        };
        let w = wire::Event {
            id: self.event_id(),
            r#type: kind as i32,
            source: if self.source.is_empty() {
                "cross_process_poller".into()
            } else {
                self.source.clone()
            },
            time_unix_ms: (self.created_at * 1000.0) as i64,
            config_key: self.config_key.clone(),
            seq: 0,
            payload: Some(wire::event::Payload::Json(self.payload.clone())),
        };
        Event::try_from(w).map_err(|e| e.to_string())
    }
}

pub fn open_db(path: &Path) -> rusqlite::Result<Connection> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let c = Connection::open(path)?;
    c.busy_timeout(Duration::from_secs(10))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.execute_batch(SCHEMA)?;
    // Tables made before claims existed get the column.
    let has_claims = c
        .prepare("SELECT 1 FROM pragma_table_info('events') WHERE name = 'claimed_at'")?
        .exists([])?;
    if !has_claims {
        if let Err(e) = c.execute_batch("ALTER TABLE events ADD COLUMN claimed_at REAL") {
            // Another opener may have added it first.
            if !e.to_string().contains("duplicate column") {
                return Err(e);
            }
        }
    }
    Ok(c)
}

const ROW_COLUMNS: &str = "id, event_type, payload, config_key, source, created_at";

fn row_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        id: r.get(0)?,
        event_type: r.get(1)?,
        payload: r.get(2)?,
        config_key: r.get(3)?,
        source: r.get(4)?,
        created_at: r.get(5)?,
    })
}

pub fn pending_rows(c: &Connection, limit: usize) -> rusqlite::Result<Vec<Row>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {ROW_COLUMNS} FROM events WHERE published_at IS NULL AND error IS NULL ORDER BY id LIMIT ?1"
    ))?;
    let rows = st.query_map([limit as i64], row_of)?;
    rows.collect()
}

/// Rows claimed for publishing and not marked (a pass that did not finish), with the
/// claim time.
pub fn claimed_rows(c: &Connection, limit: usize) -> rusqlite::Result<Vec<(Row, f64)>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {ROW_COLUMNS}, claimed_at FROM events WHERE published_at IS NULL AND error IS NULL AND claimed_at IS NOT NULL ORDER BY id LIMIT ?1"
    ))?;
    let rows = st.query_map([limit as i64], |r| Ok((row_of(r)?, r.get(6)?)))?;
    rows.collect()
}

/// Sets (`true`) or clears the claim of these rows: set just before publishing; cleared
/// for rows the router turned out not to hold, which are then plain pending rows again.
pub fn claim(c: &mut Connection, ids: &[i64], on: bool) -> rusqlite::Result<()> {
    let tx = c.transaction()?;
    {
        let mut st = tx.prepare_cached("UPDATE events SET claimed_at = CASE WHEN ?2 THEN ((julianday('now') - 2440587.5) * 86400.0) END WHERE id = ?1")?;
        for id in ids {
            st.execute(params![id, on])?;
        }
    }
    tx.commit()
}

/// Marks rows published (with their router seq) and invalid rows with their error, in one transaction.
pub fn mark(
    c: &mut Connection,
    published: &[(i64, u64)],
    invalid: &[(i64, String)],
) -> rusqlite::Result<()> {
    let tx = c.transaction()?;
    {
        let mut p = tx.prepare_cached("UPDATE events SET published_at = ((julianday('now') - 2440587.5) * 86400.0), router_seq = ?2 WHERE id = ?1")?;
        for (id, seq) in published {
            p.execute(params![id, *seq as i64])?;
        }
        let mut e = tx.prepare_cached("UPDATE events SET error = ?2 WHERE id = ?1")?;
        for (id, err) in invalid {
            e.execute(params![id, err])?;
        }
    }
    tx.commit()
}

#[derive(Debug, Default, Clone)]
struct Tally {
    bridged: u64,
    duplicates: u64,
    invalid: u64,
    reconciled: u64,
    split_batches: u64,
    backlog: usize,
}

pub struct Poller {
    cfg: PollerConfig,
    path: PathBuf,
    conn: Arc<Mutex<Option<Connection>>>,
    tally: Mutex<Tally>,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: PollerConfig = ctx.settings.section("cross_process_poller")?;
    handler_base::ensure_config!(
        cfg.batch > 0 && cfg.batch <= 10_000,
        "cross_process_poller.batch must be 1..=10000"
    );
    handler_base::ensure_config!(
        cfg.max_batch_bytes >= 64 << 10,
        "cross_process_poller.max_batch_bytes must be at least 65536 (one event's limit)"
    );
    let path = if cfg.db.is_absolute() {
        cfg.db.clone()
    } else {
        ctx.home.join(&cfg.db)
    };
    Ok(Arc::new(Poller {
        cfg,
        path,
        conn: Arc::new(Mutex::new(None)),
        tally: Mutex::new(Tally::default()),
    }))
}

impl Poller {
    /// Runs `f` on the table's connection in a blocking thread.
    async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let slot = self.conn.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut g = slot.lock().unwrap_or_else(|p| p.into_inner());
            if g.is_none() {
                *g = Some(
                    open_db(&path).map_err(|e| anyhow::anyhow!("open {}: {e}", path.display()))?,
                );
            }
            let c = g.as_mut().ok_or_else(|| anyhow::anyhow!("no connection"))?;
            f(c).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        })
        .await?
    }
}

#[async_trait::async_trait]
impl Handler for Poller {
    async fn on_start(&self, _ctx: &Context) -> anyhow::Result<()> {
        self.with_db(|_| Ok(())).await?;
        tracing::info!(db = %self.path.display(), "watching cross-process events table");
        Ok(())
    }

    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        self.reconcile(ctx).await?;
        loop {
            let limit = self.cfg.batch;
            let rows = self.with_db(move |c| pending_rows(c, limit)).await?;
            if rows.is_empty() {
                self.tally.lock().unwrap_or_else(|p| p.into_inner()).backlog = 0;
                return Ok(());
            }
            let full = rows.len() == limit;
            let mut events = Vec::new();
            let mut ids = Vec::new();
            let mut invalid = Vec::new();
            for r in &rows {
                match r.to_event() {
                    Ok(ev) => {
                        events.push(wire::Event::from(ev));
                        ids.push(r.id);
                    }
                    Err(e) => {
                        tracing::warn!(row = r.id, error = %e, "invalid cross-process event row; marked with its error");
                        invalid.push((r.id, e));
                    }
                }
            }
            let mut published = Vec::new();
            let mut dups = 0;
            if !events.is_empty() {
                let claimed = ids.clone();
                self.with_db(move |c| claim(c, &claimed, true)).await?;
                let (acks, splits) =
                    publish_sized(ctx.client.clone(), events, self.cfg.max_batch_bytes).await?;
                self.tally
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .split_batches += splits;
                for (id, ack) in ids.iter().zip(&acks) {
                    dups += ack.duplicate as u64;
                    published.push((*id, ack.seq));
                }
                if self.cfg.crash_after_publish {
                    tracing::error!(
                        rows = published.len(),
                        "crash_after_publish: exiting after the ack, before marking"
                    );
                    std::process::exit(1);
                }
            }
            let (np, ni) = (published.len() as u64, invalid.len() as u64);
            self.with_db(move |c| mark(c, &published, &invalid)).await?;
            let mut t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
            t.bridged += np;
            t.duplicates += dups;
            t.invalid += ni;
            t.backlog = if full { limit } else { 0 };
            if !full {
                return Ok(());
            }
        }
    }

    fn health_check(&self) -> HealthCheckResult {
        let t = self.tally.lock().unwrap_or_else(|p| p.into_inner()).clone();
        HealthCheckResult::running(format!("{} rows bridged", t.bridged))
            .detail("db", self.path.display())
            .detail("bridged_total", t.bridged)
            .detail("republished_duplicates", t.duplicates)
            .detail("invalid_rows", t.invalid)
            .detail("reconciled_rows", t.reconciled)
            .detail("split_batches", t.split_batches)
    }
}

impl Poller {
    /// Settles rows claimed by a pass that did not finish: those the router holds are
    /// marked with their seq, the rest lose their claim and are published normally.
    async fn reconcile(&self, ctx: &Context) -> anyhow::Result<()> {
        let claimed = self.with_db(|c| claimed_rows(c, 10_000)).await?;
        if claimed.is_empty() {
            return Ok(());
        }
        // Stored after the claim; a minute of slack for clock steps.
        let since = claimed
            .iter()
            .map(|(_, t)| *t)
            .fold(f64::INFINITY, f64::min);
        let since_ms = ((since - 60.0) * 1000.0) as i64;
        let ids: Vec<String> = claimed.iter().map(|(r, _)| r.event_id()).collect();
        let found = ctx
            .client
            .clone()
            .lookup(wire::LookupRequest {
                ids,
                since_unix_ms: since_ms,
            })
            .await?
            .into_inner()
            .seqs;
        let mut stored = Vec::new();
        let mut missing = Vec::new();
        for (r, _) in &claimed {
            match found.get(&r.event_id()) {
                Some(seq) => stored.push((r.id, *seq)),
                None => missing.push(r.id),
            }
        }
        tracing::info!(
            stored = stored.len(),
            missing = missing.len(),
            "reconciled rows claimed by an unfinished pass"
        );
        let n = stored.len() as u64;
        self.with_db(move |c| {
            mark(c, &stored, &[])?;
            claim(c, &missing, false)
        })
        .await?;
        self.tally
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reconciled += n;
        Ok(())
    }
}

/// Publishes `events` in order, in calls of at most `max_bytes` encoded bytes; a call the
/// router refuses as too large is split in halves. Returns one ack per event and how
/// many splits were needed.
async fn publish_sized(
    mut client: handler_base::router_client::Client,
    events: Vec<wire::Event>,
    max_bytes: usize,
) -> Result<(Vec<wire::PublishAck>, u64), tonic::Status> {
    use prost::Message;
    let mut chunks: std::collections::VecDeque<Vec<wire::Event>> = Default::default();
    let mut cur: Vec<wire::Event> = Vec::new();
    let mut size = 0usize;
    for ev in events {
        // Each event is a length-delimited field of the request: tag + length + body.
        let n = ev.encoded_len() + 8;
        if !cur.is_empty() && size + n > max_bytes {
            chunks.push_back(std::mem::take(&mut cur));
            size = 0;
        }
        size += n;
        cur.push(ev);
    }
    if !cur.is_empty() {
        chunks.push_back(cur);
    }
    let mut acks = Vec::new();
    let mut splits = 0;
    while let Some(chunk) = chunks.pop_front() {
        let req = wire::PublishBatchRequest {
            events: chunk.clone(),
        };
        match client.publish_batch(req).await {
            Ok(r) => acks.extend(r.into_inner().acks),
            Err(s)
                if chunk.len() > 1
                    && matches!(
                        s.code(),
                        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
                    ) =>
            {
                tracing::warn!(events = chunk.len(), error = %s.message(), "batch too large for the router; splitting it");
                splits += 1;
                let mut first = chunk;
                let second = first.split_off(first.len() / 2);
                chunks.push_front(second);
                chunks.push_front(first);
            }
            Err(s) => return Err(s),
        }
    }
    Ok((acks, splits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(t: &str, payload: &str) -> Row {
        Row {
            id: 7,
            event_type: t.into(),
            payload: payload.into(),
            config_key: "hex8_2p".into(),
            source: String::new(),
            created_at: 1.5,
        }
    }

    #[test]
    fn row_becomes_typed_event_with_stable_id() {
        let ev = row("TRAINING_COMPLETED", r#"{"model_path": "m.bin"}"#)
            .to_event()
            .unwrap();
        assert_eq!(ev.kind, EventType::TrainingCompleted);
        assert_eq!(ev.id, "xpp:1.5:7");
        assert_eq!(
            ev.id,
            row("TRAINING_COMPLETED", r#"{"model_path": "m.bin"}"#)
                .to_event()
                .unwrap()
                .id
        );
    }

    #[test]
    fn bad_rows_say_why() {
        assert!(
            row("NO_SUCH", "{}")
                .to_event()
                .unwrap_err()
                .contains("NO_SUCH")
        );
        assert!(
            row("TRAINING_COMPLETED", r#"{"model": 1}"#)
                .to_event()
                .unwrap_err()
                .contains("model")
        );
    }

    #[test]
    fn a_table_from_before_claims_gets_the_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, event_type TEXT NOT NULL, payload TEXT NOT NULL DEFAULT '{}', config_key TEXT NOT NULL DEFAULT '', source TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL DEFAULT 0, published_at REAL, router_seq INTEGER, error TEXT); INSERT INTO events (event_type) VALUES ('EXTERNAL');")
            .unwrap();
        let c = open_db(&path).unwrap();
        assert!(claimed_rows(&c, 10).unwrap().is_empty());
        assert_eq!(pending_rows(&c, 10).unwrap().len(), 1);
    }

    #[test]
    fn pending_and_mark_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = open_db(&dir.path().join("x.db")).unwrap();
        c.execute("INSERT INTO events (event_type, payload) VALUES ('EXTERNAL', '{}'), ('EXTERNAL', '{}')", []).unwrap();
        let rows = pending_rows(&c, 10).unwrap();
        assert_eq!(rows.len(), 2);
        claim(&mut c, &[rows[0].id, rows[1].id], true).unwrap();
        assert_eq!(claimed_rows(&c, 10).unwrap().len(), 2);
        claim(&mut c, &[rows[1].id], false).unwrap();
        assert_eq!(claimed_rows(&c, 10).unwrap()[0].0.id, rows[0].id);
        mark(&mut c, &[(rows[0].id, 5)], &[(rows[1].id, "bad".into())]).unwrap();
        assert!(pending_rows(&c, 10).unwrap().is_empty());
        assert!(claimed_rows(&c, 10).unwrap().is_empty());
    }
}

#[cfg(test)]
mod in_process;
