//! The router's SQLite log: one writer thread doing group commits, a small reader pool,
//! both off the async runtime.
//!
//! Every publish waits for the commit of the transaction that holds it (with
//! `synchronous=FULL` that includes the fsync), so an ack means durable. Events arriving
//! while a commit runs are batched into the next transaction: many publishers share one
//! fsync. Dedup ids live in the writer (the single owner of the sequence), so two
//! concurrent publishes of one id can never both be stored.

use crate::log::{Stored, router_now_ms};
use prost::Message;
use ringrift_proto::{Event, wire};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("event log {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("event log writer has stopped")]
    WriterGone,
    #[error("event log commit failed: {0}")]
    Commit(String),
    /// The disk under the log is full (SQLITE_FULL): nothing of the batch was stored.
    #[error("event log commit failed, the disk is full: {0}")]
    Full(String),
    #[error("event log task failed: {0}")]
    Join(String),
}

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `synchronous=FULL`: fsync before every ack (default).
    #[default]
    Fsync,
    /// `synchronous=NORMAL`: survives a process crash, may lose the last commits on a
    /// power cut (what NATS JetStream 2.9 does by default).
    Relaxed,
}

type ExecFn = Box<dyn FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<i64> + Send>;
/// Called by the writer after each commit with the newly stored events, in seq order.
pub type OnCommit = Box<dyn Fn(Vec<Arc<wire::Event>>) + Send>;

enum WriteOp {
    Publish(Vec<Event>, oneshot::Sender<Result<Vec<Stored>, StoreError>>),
    /// A consumer's ack floor and the seqs it acked above it; the reply (if any) comes
    /// after the commit that holds them.
    Acks(AckRecord, Option<oneshot::Sender<Result<i64, StoreError>>>),
    Exec(ExecFn, Option<oneshot::Sender<Result<i64, StoreError>>>),
}

/// What a consumer has acked: everything up to `floor`, and `above` (seqs > floor).
#[derive(Debug, Clone, Default)]
pub struct AckRecord {
    pub consumer: String,
    pub floor: u64,
    pub above: Vec<u64>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    type INTEGER NOT NULL,
    stored_ms INTEGER NOT NULL,
    data BLOB NOT NULL
);
DROP INDEX IF EXISTS events_id;
CREATE INDEX IF NOT EXISTS events_stored ON events(stored_ms);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS consumers (
    name TEXT PRIMARY KEY,
    ack_floor INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (
    consumer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (consumer, seq)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    consumer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type INTEGER NOT NULL,
    reason TEXT NOT NULL,
    failures INTEGER NOT NULL,
    retries INTEGER NOT NULL DEFAULT 0,
    dead_ms INTEGER NOT NULL,
    last_retry_ms INTEGER NOT NULL DEFAULT 0,
    state INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_consumer ON dead_letters(consumer, seq);
CREATE TABLE IF NOT EXISTS acks (
    consumer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (consumer, seq)
) WITHOUT ROWID;
";

/// Handle to the log; cheap to clone.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    writer: mpsc::Sender<WriteOp>,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// At most this many reads at once, so at most this many reader connections (and
    /// blocking threads) exist: [`Store::with_reader_limit`].
    reader_slots: Arc<tokio::sync::Semaphore>,
    /// Closed (sender dropped) when the writer thread ends, by return or panic.
    writer_alive: watch::Receiver<()>,
    health: Arc<WriterHealth>,
}

/// What the writer thread reports about itself, read by health checks and metrics.
#[derive(Debug, Default)]
pub struct WriterHealth {
    /// Commits that failed since the last one that succeeded.
    pub failed_in_row: AtomicU64,
    /// Bytes of stored events (encoded length + 64 per row), kept by the writer and by
    /// retention, so no pass has to SUM the table.
    pub bytes: AtomicU64,
    /// The `PRAGMA synchronous` value the writer's connection runs with (2 = FULL).
    pub synchronous: AtomicU64,
    /// When the transaction in progress started (Unix ms), 0 while the writer waits.
    pub busy_since_ms: AtomicI64,
    /// A writer busy with one transaction for longer than this (ms) is taken for hung.
    pub stuck_after_ms: AtomicI64,
}

fn open(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let c = Connection::open(path).map_err(err)?;
    c.busy_timeout(Duration::from_secs(10)).map_err(err)?;
    c.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
    let sync = match durability {
        Durability::Fsync => "FULL",
        Durability::Relaxed => "NORMAL",
    };
    c.pragma_update(None, "synchronous", sync).map_err(err)?;
    Ok(c)
}

/// State the router needs at start-up, read once.
#[derive(Debug, Default)]
pub struct Loaded {
    pub head: u64,
    pub first: u64,
    pub consumers: Vec<(String, u64)>,
    /// (consumer, seq) acked above the consumer's floor.
    pub acks: Vec<(String, u64)>,
    pub failures: Vec<(String, u64, u32)>,
    /// (consumer, seq, dead-letter id, state) of letters not yet delivered or purged.
    pub letters: Vec<(String, u64, u64, i32)>,
    pub recent: Vec<Arc<wire::Event>>,
}

/// Reader connections of a store unless [`Store::with_reader_limit`] says otherwise.
pub const DEFAULT_READERS: usize = 8;

impl Store {
    /// This store with at most `n` (at least 1) reads at once: more wait for a free
    /// reader connection instead of opening another one.
    pub fn with_reader_limit(mut self, n: usize) -> Store {
        self.reader_slots = Arc::new(tokio::sync::Semaphore::new(n.max(1)));
        self
    }

    /// Opens (creating) `dir/events.db`, loads start-up state and starts the writer thread.
    pub fn open(
        dir: &Path,
        durability: Durability,
        dedup_window: Duration,
        cache: crate::recent::Bounds,
        on_commit: OnCommit,
    ) -> Result<(Store, Loaded), StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Commit(format!("create {}: {e}", dir.display())))?;
        let path = dir.join("events.db");
        let conn = open(&path, durability)?;
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        conn.execute_batch(SCHEMA).map_err(err)?;
        let loaded = load(&conn, cache).map_err(err)?;
        let dedup = Dedup::load(&conn, dedup_window).map_err(err)?;
        let meta_seq: u64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'last_seq'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map_err(err)?
            .unwrap_or(0) as u64;
        let next = meta_seq.max(loaded.head) + 1;
        let health = Arc::new(WriterHealth::default());
        let bytes: i64 = conn
            .query_row(
                "SELECT COALESCE(SUM(length(data)) + COUNT(*) * 64, 0) FROM events",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        health.bytes.store(bytes as u64, Ordering::Relaxed);
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .map_err(err)?;
        health.synchronous.store(sync as u64, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(65_536);
        let (alive_tx, alive_rx) = watch::channel(());
        let wpath = path.clone();
        let w = Writer {
            conn,
            path: wpath,
            next,
            meta_seq,
            dedup,
            on_commit,
            health: health.clone(),
            carried: Vec::new(),
            _alive: alive_tx,
        };
        std::thread::Builder::new()
            .name("event-log-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|e| StoreError::Commit(format!("spawn writer: {e}")))?;
        let mut loaded = loaded;
        loaded.head = next - 1;
        Ok((
            Store {
                path,
                writer: tx,
                readers: Arc::new(Mutex::new(Vec::new())),
                reader_slots: Arc::new(tokio::sync::Semaphore::new(DEFAULT_READERS)),
                writer_alive: alive_rx,
                health,
            },
            loaded,
        ))
    }

    /// Stores events (dedup applied) and returns once they are committed.
    pub async fn publish(&self, events: Vec<Event>) -> Result<Vec<Stored>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(WriteOp::Publish(events, tx))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Records a consumer's ack floor and acks above it, and waits for the commit.
    pub async fn save_acks(&self, rec: AckRecord) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(WriteOp::Acks(rec, Some(tx)))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?.map(|_| ())
    }

    /// Queues a consumer's new ack floor for the next commit without waiting for it
    /// (it waits for room in the writer's queue: a floor update is never dropped). Used
    /// where losing the update to a crash only means scanning again.
    pub async fn save_floor(&self, consumer: &str, floor: u64) -> Result<(), StoreError> {
        let rec = AckRecord {
            consumer: consumer.to_owned(),
            floor,
            above: Vec::new(),
        };
        self.writer
            .send(WriteOp::Acks(rec, None))
            .await
            .map_err(|_| StoreError::WriterGone)
    }

    /// Resolves when the writer thread has ended (it returned or panicked).
    pub async fn writer_stopped(&self) {
        let mut rx = self.writer_alive.clone();
        while rx.changed().await.is_ok() {}
    }

    /// Whether the writer thread runs, is not stuck in one transaction and its last
    /// commit succeeded; `Err` says which not.
    pub fn writer_check(&self) -> Result<(), String> {
        if self.writer_alive.has_changed().is_err() {
            return Err("event log writer thread has stopped".into());
        }
        let failed = self.health.failed_in_row.load(Ordering::Relaxed);
        if failed > 0 {
            return Err(format!("event log commits failing ({failed} in a row)"));
        }
        let since = self.health.busy_since_ms.load(Ordering::Relaxed);
        let limit = self.health.stuck_after_ms.load(Ordering::Relaxed);
        if since > 0 && router_now_ms() - since > limit {
            return Err(format!(
                "event log writer stuck in one transaction for {} s",
                (router_now_ms() - since) / 1000
            ));
        }
        Ok(())
    }

    pub fn writer_ok(&self) -> bool {
        self.writer_check().is_ok()
    }

    pub fn health(&self) -> &WriterHealth {
        &self.health
    }

    /// Runs a write in the writer's next transaction and returns what it computed,
    /// once committed.
    pub async fn exec_with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let slot = Arc::new(Mutex::new(None));
        let put = slot.clone();
        self.exec(move |tx| {
            let v = f(tx)?;
            *put.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
            Ok(0)
        })
        .await?;
        let v = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        v.ok_or_else(|| StoreError::Commit("write produced no result".into()))
    }

    /// Runs a write in the writer's next transaction and waits for its commit.
    pub async fn exec(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<i64> + Send + 'static,
    ) -> Result<i64, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(WriteOp::Exec(Box::new(f), Some(tx)))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Runs a read on a pooled connection in a blocking thread.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let pool = self.readers.clone();
        let path = self.path.clone();
        let slot = self
            .reader_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Join("reader slots closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let conn = pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match conn {
                Some(c) => c,
                None => open(&path, Durability::Relaxed)?,
            };
            let r = f(&conn).map_err(|source| StoreError::Sqlite {
                path: path.clone(),
                source,
            });
            pool.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            r
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
    }

    /// Up to `limit` events with seq > `after`, in order.
    pub async fn read_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Arc<wire::Event>>, StoreError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT seq, data FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = st.query_map(params![after as i64, limit as i64], decode_row)?;
            rows.collect()
        })
        .await
    }

    /// The event with this seq, if still retained.
    pub async fn get(&self, seq: u64) -> Result<Option<Arc<wire::Event>>, StoreError> {
        self.read(move |c| {
            c.query_row(
                "SELECT seq, data FROM events WHERE seq = ?1",
                [seq as i64],
                decode_row,
            )
            .optional()
        })
        .await
    }

    /// The first seq stored at or after `ms` (or head + 1 when none).
    pub async fn seq_at_time(&self, ms: i64) -> Result<Option<u64>, StoreError> {
        self.read(move |c| {
            c.query_row(
                "SELECT MIN(seq) FROM events WHERE stored_ms >= ?1",
                [ms],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map(|v| v.map(|s| s as u64))
        })
        .await
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn decode_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Arc<wire::Event>> {
    let seq: i64 = r.get(0)?;
    let data: Vec<u8> = r.get(1)?;
    let mut ev = wire::Event::decode(data.as_slice()).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Blob, Box::new(e))
    })?;
    ev.seq = seq as u64;
    Ok(Arc::new(ev))
}

/// Start-up state; `recent` is the newest events within the cache's `bounds`.
fn load(c: &Connection, cache: crate::recent::Bounds) -> rusqlite::Result<Loaded> {
    let (first, head): (Option<i64>, Option<i64>) =
        c.query_row("SELECT MIN(seq), MAX(seq) FROM events", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let mut l = Loaded {
        head: head.unwrap_or(0) as u64,
        first: first.unwrap_or(0) as u64,
        ..Default::default()
    };
    let mut st = c.prepare("SELECT name, ack_floor FROM consumers")?;
    l.consumers = st
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
        .collect::<Result<_, _>>()?;
    let mut st = c.prepare("SELECT consumer, seq FROM acks")?;
    l.acks = st
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
        .collect::<Result<_, _>>()?;
    let mut st = c.prepare("SELECT consumer, seq, count FROM failures")?;
    l.failures = st
        .query_map([], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut st =
        c.prepare("SELECT consumer, seq, id, state FROM dead_letters WHERE state IN (1, 2, 3)")?;
    l.letters = st
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
                r.get(3)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    // Newest first, until either bound is reached: never more than the cache keeps.
    let mut st = c.prepare("SELECT seq, data FROM events ORDER BY seq DESC LIMIT ?1")?;
    let mut bytes = 0usize;
    for e in st.query_map(
        [i64::try_from(cache.events).unwrap_or(i64::MAX)],
        decode_row,
    )? {
        let e = e?;
        bytes += crate::recent::size(&e);
        if bytes > cache.bytes {
            break;
        }
        l.recent.push(e);
    }
    l.recent.reverse();
    Ok(l)
}

/// Publish ids seen inside the dedup window, owned by the writer thread.
struct Dedup {
    window_ms: i64,
    ids: HashMap<Arc<str>, u64>,
    order: VecDeque<(i64, Arc<str>)>,
}

impl Dedup {
    fn load(c: &Connection, window: Duration) -> rusqlite::Result<Dedup> {
        let window_ms = window.as_millis() as i64;
        let mut d = Dedup {
            window_ms,
            ids: HashMap::new(),
            order: VecDeque::new(),
        };
        let mut st =
            c.prepare("SELECT id, seq, stored_ms FROM events WHERE stored_ms >= ?1 ORDER BY seq")?;
        let rows = st.query_map([router_now_ms() - window_ms], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (id, seq, ms) = row?;
            let id: Arc<str> = id.into();
            d.ids.insert(id.clone(), seq as u64);
            d.order.push_back((ms, id));
        }
        Ok(d)
    }

    fn expire(&mut self, now: i64) {
        while let Some((t, _)) = self.order.front() {
            if now - *t < self.window_ms {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.ids.remove(&id);
            }
        }
    }

    /// Forgets the `n` ids added last (their transaction did not commit).
    fn forget_last(&mut self, n: usize) {
        for _ in 0..n {
            if let Some((_, id)) = self.order.pop_back() {
                self.ids.remove(&id);
            }
        }
    }
}

/// The writer thread's state; the only owner of the sequence and the dedup index.
struct Writer {
    conn: Connection,
    path: PathBuf,
    next: u64,
    meta_seq: u64,
    dedup: Dedup,
    on_commit: OnCommit,
    health: Arc<WriterHealth>,
    /// Ack records of transactions whose commit failed: written again with the next
    /// transaction, so a floor update (or an ack above the floor) is never dropped, even
    /// one queued without a reply (`save_floor`).
    carried: Vec<AckRecord>,
    /// Dropped when the thread ends, which tells `Store::writer_stopped`.
    _alive: watch::Sender<()>,
}

/// What one group transaction produced, answered only after its commit.
#[derive(Default)]
struct Group {
    added: usize,
    deletes_possible: bool,
    bytes: u64,
    new_events: Vec<Arc<wire::Event>>,
    replies_pub: Vec<(
        oneshot::Sender<Result<Vec<Stored>, StoreError>>,
        Vec<Stored>,
    )>,
    replies_exec: Vec<(
        Option<oneshot::Sender<Result<i64, StoreError>>>,
        Result<i64, StoreError>,
    )>,
    /// The ack floors and acks above them written by this transaction (carried to the
    /// next one if its commit fails).
    floors: HashMap<String, u64>,
    above: Vec<(String, u64)>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<WriteOp>) {
        let mut ops = Vec::new();
        let mut buf = Vec::with_capacity(1024);
        while let Some(op) = rx.blocking_recv() {
            ops.push(op);
            while ops.len() < 4096 {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            let now = router_now_ms();
            self.health.busy_since_ms.store(now, Ordering::Relaxed);
            self.dedup.expire(now);
            let (start_next, start_meta) = (self.next, self.meta_seq);
            let mut g = Group::default();
            // Ack records of a failed commit go again with this transaction.
            ops.extend(self.carried.drain(..).map(|r| WriteOp::Acks(r, None)));
            let result = self.apply(&mut ops, &mut g, &mut buf, now);
            if !g.replies_pub.is_empty() {
                // Tests make a publishing transaction hang here (debug builds, `failpoints`).
                fail::fail_point!("event_log_publish_commit");
            }
            self.health.busy_since_ms.store(0, Ordering::Relaxed);
            match result {
                Ok(()) => {
                    // Tests make the writer die here (debug builds, RINGRIFT_FAILPOINTS).
                    fail::fail_point!("event_log_after_commit");
                    self.health.failed_in_row.store(0, Ordering::Relaxed);
                    self.health.bytes.fetch_add(g.bytes, Ordering::Relaxed);
                    if !g.new_events.is_empty() {
                        (self.on_commit)(g.new_events);
                    }
                    for (reply, out) in g.replies_pub {
                        let _ = reply.send(Ok(out));
                    }
                    for (reply, r) in g.replies_exec {
                        if let Some(reply) = reply {
                            let _ = reply.send(r);
                        }
                    }
                }
                Err(e) => {
                    let n = self.health.failed_in_row.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::error!(error = %e, path = %self.path.display(), failed_in_row = n, "event log commit failed; publishes in this batch are not acked");
                    ops.clear();
                    // The floors and acks are written again with the next transaction.
                    let mut above: HashMap<String, Vec<u64>> = HashMap::new();
                    for (name, seq) in std::mem::take(&mut g.above) {
                        above.entry(name).or_default().push(seq);
                    }
                    for (consumer, floor) in std::mem::take(&mut g.floors) {
                        let above = above.remove(&consumer).unwrap_or_default();
                        self.carried.push(AckRecord {
                            consumer,
                            floor,
                            above,
                        });
                    }
                    (self.next, self.meta_seq) = (start_next, start_meta);
                    self.dedup.forget_last(g.added);
                    let full = e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull);
                    for (reply, _) in g.replies_pub {
                        let err = if full {
                            StoreError::Full(e.to_string())
                        } else {
                            StoreError::Commit(e.to_string())
                        };
                        let _ = reply.send(Err(err));
                    }
                    for (reply, _) in g.replies_exec {
                        if let Some(reply) = reply {
                            let _ = reply.send(Err(StoreError::Commit(e.to_string())));
                        }
                    }
                }
            }
        }
    }

    /// Applies `ops` in one transaction and commits it.
    fn apply(
        &mut self,
        ops: &mut Vec<WriteOp>,
        g: &mut Group,
        buf: &mut Vec<u8>,
        now: i64,
    ) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO events (seq, id, type, stored_ms, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let (floors, above) = (&mut g.floors, &mut g.above);
            for op in ops.drain(..) {
                match op {
                    WriteOp::Publish(events, reply) => {
                        let mut out = Vec::with_capacity(events.len());
                        for ev in events {
                            let seq = self.next;
                            let key: Arc<str> = ev.id.as_str().into();
                            match self.dedup.ids.entry(key) {
                                std::collections::hash_map::Entry::Occupied(e) => {
                                    out.push(Stored {
                                        seq: *e.get(),
                                        id: ev.id,
                                        duplicate: true,
                                    });
                                    continue;
                                }
                                std::collections::hash_map::Entry::Vacant(e) => {
                                    self.dedup.order.push_back((now, e.key().clone()));
                                    e.insert(seq);
                                    g.added += 1;
                                }
                            }
                            self.next += 1;
                            let mut w = wire::Event::from(ev);
                            if w.time_unix_ms == 0 {
                                w.time_unix_ms = now;
                            }
                            w.seq = 0;
                            buf.clear();
                            w.encode(buf).map_err(|e| {
                                rusqlite::Error::ToSqlConversionFailure(Box::new(e))
                            })?;
                            ins.execute(params![seq as i64, w.id, w.r#type, now, &buf[..]])?;
                            g.bytes += buf.len() as u64 + 64;
                            out.push(Stored {
                                seq,
                                id: w.id.clone(),
                                duplicate: false,
                            });
                            w.seq = seq;
                            g.new_events.push(Arc::new(w));
                        }
                        g.replies_pub.push((reply, out));
                    }
                    WriteOp::Acks(rec, reply) => {
                        let e = floors.entry(rec.consumer.clone()).or_insert(rec.floor);
                        *e = (*e).max(rec.floor);
                        above.extend(rec.above.into_iter().map(|s| (rec.consumer.clone(), s)));
                        g.replies_exec.push((reply, Ok(0)));
                    }
                    WriteOp::Exec(f, reply) => {
                        // Retention deletes events through here.
                        g.deletes_possible = true;
                        let r = f(&tx).map_err(|source| StoreError::Sqlite {
                            path: self.path.clone(),
                            source,
                        });
                        g.replies_exec.push((reply, r));
                    }
                }
            }
            let mut up = tx.prepare_cached(
                "INSERT INTO consumers (name, ack_floor, updated_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET ack_floor = MAX(ack_floor, excluded.ack_floor), updated_ms = excluded.updated_ms",
            )?;
            let mut add = tx.prepare_cached(
                "INSERT OR IGNORE INTO acks (consumer, seq) SELECT ?1, ?2 WHERE ?2 > (SELECT ack_floor FROM consumers WHERE name = ?1)",
            )?;
            let mut below =
                tx.prepare_cached("DELETE FROM acks WHERE consumer = ?1 AND seq <= ?2")?;
            for (name, floor) in floors.iter() {
                up.execute(params![name, *floor as i64, now])?;
                below.execute(params![name, *floor as i64])?;
            }
            for (name, seq) in above.iter() {
                add.execute(params![name, *seq as i64])?;
            }
            // `last_seq` keeps seqs from being reused once retention has deleted the newest
            // events (start-up takes the larger of it and MAX(seq)); so it is written, last
            // in the transaction, only when this transaction may have deleted events.
            if g.deletes_possible && self.next - 1 > self.meta_seq {
                let mut m = tx.prepare_cached("INSERT INTO meta (key, value) VALUES ('last_seq', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value")?;
                m.execute([(self.next - 1) as i64])?;
                self.meta_seq = self.next - 1;
            }
        }
        tx.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringrift_proto::wire::event::Payload;

    fn ev(id: &str) -> Event {
        let w = wire::Event {
            id: id.into(),
            r#type: wire::EventType::External as i32,
            payload: Some(Payload::Json("{}".into())),
            ..Default::default()
        };
        Event::try_from(w).expect("valid event")
    }

    fn open_store(dir: &Path) -> (Store, Loaded) {
        Store::open(
            dir,
            Durability::Relaxed,
            Duration::from_secs(300),
            crate::recent::Bounds {
                events: 100,
                bytes: usize::MAX,
            },
            Box::new(|_| {}),
        )
        .expect("open store")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seqs_continue_after_retention_emptied_the_log_and_dedup_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (s, loaded) = open_store(dir.path());
            assert_eq!(loaded.head, 0);
            let out = s
                .publish(vec![ev("a"), ev("b"), ev("a")])
                .await
                .expect("publish");
            let seqs: Vec<_> = out.iter().map(|o| (o.seq, o.duplicate)).collect();
            assert_eq!(seqs, vec![(1, false), (2, false), (1, true)]);
            // No deletion yet: last_seq is not written on the publish path.
            let meta: Option<i64> = s
                .read(|c| {
                    c.query_row("SELECT value FROM meta WHERE key = 'last_seq'", [], |r| {
                        r.get(0)
                    })
                    .optional()
                })
                .await
                .expect("read");
            assert_eq!(meta, None);
            s.publish(vec![ev("c")]).await.expect("publish");
            // Retention-style delete of every event, the newest included.
            assert_eq!(
                s.exec(|tx| tx.execute("DELETE FROM events", []).map(|n| n as i64))
                    .await
                    .expect("delete"),
                3
            );
        }
        let (s, loaded) = open_store(dir.path());
        assert_eq!(loaded.head, 3, "head survives an empty log");
        let out = s.publish(vec![ev("d")]).await.expect("publish");
        assert_eq!(
            (out[0].seq, out[0].duplicate),
            (4, false),
            "no seq is reused"
        );
        drop(s);
        let (s, loaded) = open_store(dir.path());
        assert_eq!(loaded.head, 4);
        let out = s.publish(vec![ev("d"), ev("e")]).await.expect("publish");
        assert_eq!(
            (out[0].seq, out[0].duplicate),
            (4, true),
            "dedup window reloaded from the log"
        );
        assert_eq!((out[1].seq, out[1].duplicate), (5, false));
    }

    /// A commit that fails (a trigger stands in for a full disk) keeps the ack floors and
    /// acks of its transaction, also those queued without a reply (`save_floor`), and the
    /// next commit writes them (issue 28, point 5: they were dropped, so a restart went
    /// back to an older floor).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_keeps_its_floor_updates_for_the_next() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, _) = open_store(dir.path());
        let sql =
            |q: &'static str| move |tx: &rusqlite::Transaction<'_>| tx.execute_batch(q).map(|_| 0);
        s.exec(sql("CREATE TRIGGER full BEFORE INSERT ON consumers BEGIN SELECT RAISE(ABORT, 'disk full'); END;"))
            .await
            .expect("create trigger");
        s.save_floor("quiet", 7).await.expect("queued");
        // Queued after it, so its commit failed no later than this one.
        let e = s
            .save_acks(AckRecord {
                consumer: "loud".into(),
                floor: 3,
                above: vec![5],
            })
            .await
            .expect_err("the commit fails");
        assert!(e.to_string().contains("disk full"), "{e}");
        assert!(s.writer_check().is_err(), "commits failing");
        s.exec(sql("DROP TRIGGER full")).await.expect("space again");
        let rows = s
            .read(|c| {
                let mut st = c.prepare("SELECT name, ack_floor FROM consumers ORDER BY name")?;
                let floors = st
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                let mut st = c.prepare("SELECT consumer, seq FROM acks")?;
                let acks = st
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((floors, acks))
            })
            .await
            .expect("read");
        assert_eq!(
            rows,
            (
                vec![("loud".to_owned(), 3), ("quiet".to_owned(), 7)],
                vec![("loud".to_owned(), 5)]
            )
        );
    }

    /// Reads are bounded: at most `with_reader_limit` run at once, so the pool never holds
    /// more connections (issue 28, point 5: every concurrent read opened one more).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_are_bounded_by_the_reader_limit() {
        use std::sync::atomic::AtomicUsize;
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, _) = open_store(dir.path());
        let s = s.with_reader_limit(2);
        let active = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let reads = (0..10).map(|_| {
            let (active, most) = (active.clone(), most.clone());
            s.read(move |c| {
                let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // A slow query (the work itself, not a synchronisation).
                std::thread::sleep(Duration::from_millis(100));
                active.fetch_sub(1, Ordering::SeqCst);
                c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
            })
        });
        for r in futures_util::future::join_all(reads).await {
            assert_eq!(r.expect("read"), 1);
        }
        assert!(
            most.load(Ordering::SeqCst) <= 2,
            "{} reads at once",
            most.load(Ordering::SeqCst)
        );
        assert!(s.readers.lock().unwrap().len() <= 2);
    }
}
