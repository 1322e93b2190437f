//! The publisher's outbox: accepted events wait in a SQLite table (a file under the
//! daemon's home, or memory) until the router acked them. One dedicated thread owns the
//! connection, so no SQLite call ever runs on a tokio worker; consecutive appends share a
//! transaction (group commit). An event the router refused as malformed (or one that no
//! longer decodes) moves to the `rejected` table with the reason, in the transaction that
//! takes it out of `outbox`: nothing accepted is ever deleted unsent.

use super::{ClientError, PublishAck};
use prost::Message;
use ringrift_proto::wire;
use rusqlite::Connection;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use tokio::sync::oneshot;

const SCHEMA: &str = "CREATE TABLE outbox (id INTEGER PRIMARY KEY, event BLOB NOT NULL)";
/// Schema v2: the local dead letters. `event` is the stored bytes as they were (an
/// encoded `wire::Event`), `reason` the router's answer, `rejected_ms` Unix ms.
const REJECTED: &str = "CREATE TABLE rejected (id INTEGER PRIMARY KEY, event BLOB NOT NULL, \
    reason TEXT NOT NULL, rejected_ms INTEGER NOT NULL)";

type Reply<T> = oneshot::Sender<Result<T, ClientError>>;

/// An event read back from the outbox, with its row id.
pub(crate) struct Row {
    pub id: i64,
    pub event: wire::Event,
}

enum Cmd {
    Append {
        event: Box<wire::Event>,
        stored: Option<Reply<()>>,
        acked: Option<Reply<PublishAck>>,
    },
    Load {
        max_count: usize,
        max_bytes: usize,
        reply: Reply<Vec<Row>>,
    },
    /// The router answered for these rows: delete them (a refused one moves to
    /// `rejected`) and tell whoever waits.
    Done(Vec<(i64, Result<PublishAck, ClientError>)>),
}

/// Cheap to clone: a handle to the outbox thread.
#[derive(Clone)]
pub(crate) struct Outbox {
    tx: std_mpsc::Sender<Cmd>,
    queued: Arc<AtomicUsize>,
    /// Rows in the `rejected` table.
    rejected: Arc<AtomicU64>,
    bound: usize,
}

fn outbox_err(what: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Outbox(format!("{what}: {e}"))
}

impl Outbox {
    /// An outbox in memory (lost with the process).
    pub fn memory(bound: usize) -> Result<Outbox, ClientError> {
        let c = Connection::open_in_memory().map_err(|e| outbox_err("open memory outbox", e))?;
        c.execute_batch(SCHEMA)
            .and_then(|_| c.execute_batch(REJECTED))
            .map_err(|e| outbox_err("create outbox table", e))?;
        Self::start(c, bound)
    }

    /// An outbox that refuses everything (`Closed`): the fallback when none can be made.
    pub fn closed(bound: usize) -> Outbox {
        let (tx, _) = std_mpsc::channel();
        Outbox {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            rejected: Arc::new(AtomicU64::new(0)),
            bound,
        }
    }

    /// An outbox in the SQLite file `path` (created with its folder). Blocking: call it
    /// off the async runtime.
    /// WAL with `synchronous = NORMAL` (`ringrift_sqlite::open`): a commit survives
    /// the process being killed (not a power cut) without an fsync per publish.
    pub fn open(path: &Path, bound: usize) -> Result<Outbox, ClientError> {
        let c =
            ringrift_sqlite::open(path, &[SCHEMA, REJECTED]).map_err(|e| outbox_err("open", e))?;
        Self::start(c, bound)
    }

    fn start(c: Connection, bound: usize) -> Result<Outbox, ClientError> {
        let n: i64 = c
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
            .map_err(|e| outbox_err("count outbox", e))?;
        let r: i64 = c
            .query_row("SELECT count(*) FROM rejected", [], |r| r.get(0))
            .map_err(|e| outbox_err("count rejected events", e))?;
        let queued = Arc::new(AtomicUsize::new(usize::try_from(n).unwrap_or(0)));
        let rejected = Arc::new(AtomicU64::new(u64::try_from(r).unwrap_or(0)));
        let (tx, rx) = std_mpsc::channel();
        let q = queued.clone();
        let rj = rejected.clone();
        std::thread::Builder::new()
            .name("outbox".into())
            .spawn(move || Worker::new(c, q, rj).run(rx))
            .map_err(|e| outbox_err("start outbox thread", e))?;
        Ok(Outbox {
            tx,
            queued,
            rejected,
            bound,
        })
    }

    /// Events the router refused as malformed, kept in the `rejected` table.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Acquire)
    }

    /// Events accepted and not yet acked by the router.
    pub fn len(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Takes a place for one event, or `BufferFull` at the bound.
    fn reserve(&self) -> Result<(), ClientError> {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.bound).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| ClientError::BufferFull(self.bound))
    }

    /// Accepts an event; `stored` hears when it is committed, `acked` when the router
    /// acked it.
    pub fn append(
        &self,
        event: wire::Event,
        stored: Option<Reply<()>>,
        acked: Option<Reply<PublishAck>>,
    ) -> Result<(), ClientError> {
        self.reserve()?;
        self.tx
            .send(Cmd::Append {
                event: Box::new(event),
                stored,
                acked,
            })
            .map_err(|_| {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                ClientError::Closed
            })
    }

    /// The oldest events, at most `max_count` and `max_bytes` encoded (at least one).
    pub async fn load(&self, max_count: usize, max_bytes: usize) -> Result<Vec<Row>, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Load {
                max_count,
                max_bytes,
                reply,
            })
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    pub fn done(&self, rows: Vec<(i64, Result<PublishAck, ClientError>)>) {
        if !rows.is_empty() {
            let _ = self.tx.send(Cmd::Done(rows));
        }
    }
}

struct Worker {
    c: Connection,
    queued: Arc<AtomicUsize>,
    rejected: Arc<AtomicU64>,
    /// `publish_acked` callers by row id.
    waiters: HashMap<i64, Reply<PublishAck>>,
    /// The open transaction: its appended rows and their `stored` replies.
    in_tx: Option<Vec<(i64, Option<Reply<()>>)>>,
}

impl Worker {
    fn new(c: Connection, queued: Arc<AtomicUsize>, rejected: Arc<AtomicU64>) -> Worker {
        Worker {
            c,
            queued,
            rejected,
            waiters: HashMap::new(),
            in_tx: None,
        }
    }

    fn run(mut self, rx: std_mpsc::Receiver<Cmd>) {
        while let Ok(first) = rx.recv() {
            self.handle(first);
            while let Ok(more) = rx.try_recv() {
                self.handle(more);
            }
            self.commit();
        }
        self.commit();
    }

    fn begin(&mut self) -> Result<(), rusqlite::Error> {
        if self.in_tx.is_none() {
            self.c.execute_batch("BEGIN")?;
            self.in_tx = Some(Vec::new());
        }
        Ok(())
    }

    fn release(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Append {
                event,
                stored,
                acked,
            } => {
                let blob = event.encode_to_vec();
                let r = self.begin().and_then(|_| {
                    self.c
                        .prepare_cached("INSERT INTO outbox (event) VALUES (?1)")?
                        .execute([&blob])?;
                    Ok(self.c.last_insert_rowid())
                });
                match r {
                    Ok(id) => {
                        if let Some(a) = acked {
                            self.waiters.insert(id, a);
                        }
                        if let Some(rows) = self.in_tx.as_mut() {
                            rows.push((id, stored));
                        }
                    }
                    Err(e) => {
                        self.release(1);
                        let err = || outbox_err("store event", &e);
                        tracing::error!(error = %e, event_id = %event.id, "outbox: event not stored");
                        if let Some(s) = stored {
                            let _ = s.send(Err(err()));
                        }
                        if let Some(a) = acked {
                            let _ = a.send(Err(err()));
                        }
                    }
                }
            }
            Cmd::Load {
                max_count,
                max_bytes,
                reply,
            } => {
                // Readers see only committed rows' effects in order; commit first so a
                // loaded row is never one a failed commit takes back.
                self.commit();
                let _ = reply.send(self.load(max_count, max_bytes));
            }
            Cmd::Done(rows) => {
                let now = super::now_ms();
                // In a savepoint: a failure takes back this command's moves only, never
                // the appends sharing the open transaction.
                let r = self.begin().and_then(|_| {
                    self.c.execute_batch("SAVEPOINT done")?;
                    let mut keep = self.c.prepare_cached(
                        "INSERT INTO rejected (event, reason, rejected_ms) \
                         SELECT event, ?2, ?3 FROM outbox WHERE id = ?1",
                    )?;
                    let mut del = self.c.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
                    let (mut n, mut kept) = (0, 0u64);
                    for (id, result) in &rows {
                        if let Err(e) = result {
                            kept += keep.execute(rusqlite::params![id, e.to_string(), now])? as u64;
                        }
                        n += del.execute([id])?;
                    }
                    Ok((n, kept))
                });
                let r = match r {
                    Ok(v) => self.c.execute_batch("RELEASE done").map(|_| v),
                    Err(e) => {
                        let _ = self.c.execute_batch("ROLLBACK TO done; RELEASE done");
                        Err(e)
                    }
                };
                match r {
                    Ok((n, kept)) => {
                        self.release(n);
                        self.rejected.fetch_add(kept, Ordering::AcqRel);
                    }
                    // The rows stay and are sent again; the router's dedup absorbs that.
                    Err(e) => tracing::error!(error = %e, "outbox: delete of sent events failed"),
                }
                for (id, result) in rows {
                    if let Some(w) = self.waiters.remove(&id) {
                        let _ = w.send(result);
                    }
                }
            }
        }
    }

    fn commit(&mut self) {
        let Some(rows) = self.in_tx.take() else {
            return;
        };
        match self.c.execute_batch("COMMIT") {
            Ok(()) => {
                for (_, stored) in rows {
                    if let Some(s) = stored {
                        let _ = s.send(Ok(()));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "outbox: commit failed; its events are refused");
                let _ = self.c.execute_batch("ROLLBACK");
                self.release(rows.len());
                for (id, stored) in rows {
                    if let Some(s) = stored {
                        let _ = s.send(Err(outbox_err("commit", &e)));
                    }
                    if let Some(w) = self.waiters.remove(&id) {
                        let _ = w.send(Err(outbox_err("commit", &e)));
                    }
                }
            }
        }
    }

    fn load(&mut self, max_count: usize, max_bytes: usize) -> Result<Vec<Row>, ClientError> {
        let mut out = Vec::new();
        let mut corrupt = Vec::new();
        let mut total = 0;
        {
            let mut st = self
                .c
                .prepare_cached("SELECT id, event FROM outbox ORDER BY id LIMIT ?1")
                .map_err(|e| outbox_err("read outbox", e))?;
            let limit = i64::try_from(max_count.max(1)).unwrap_or(i64::MAX);
            let mut rows = st
                .query([limit])
                .map_err(|e| outbox_err("read outbox", e))?;
            while let Some(r) = rows.next().map_err(|e| outbox_err("read outbox", e))? {
                let id: i64 = r.get(0).map_err(|e| outbox_err("read outbox", e))?;
                let blob: Vec<u8> = r.get(1).map_err(|e| outbox_err("read outbox", e))?;
                if !out.is_empty() && total + blob.len() > max_bytes {
                    break;
                }
                match wire::Event::decode(blob.as_slice()) {
                    Ok(event) => {
                        total += blob.len();
                        out.push(Row { id, event });
                    }
                    Err(e) => corrupt.push((id, e)),
                }
            }
        }
        if !corrupt.is_empty() {
            let rows = corrupt
                .into_iter()
                .map(|(id, e)| {
                    tracing::error!(row = id, error = %e, "outbox: undecodable event moved to the rejected table");
                    (id, Err(outbox_err("decode stored event", e)))
                })
                .collect();
            self.handle(Cmd::Done(rows));
            self.commit();
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str) -> wire::Event {
        wire::Event {
            id: id.into(),
            ..Default::default()
        }
    }

    async fn store(o: &Outbox, id: &str) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        o.append(ev(id), Some(tx), None)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    async fn ids(o: &Outbox, max_bytes: usize) -> Vec<String> {
        let rows = o.load(10, max_bytes).await.unwrap();
        rows.into_iter().map(|r| r.event.id).collect()
    }

    #[tokio::test]
    async fn a_file_outbox_keeps_events_in_order_across_a_reopen_and_refuses_past_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/outbox/d.db");
        let o = Outbox::open(&path, 3).unwrap();
        for id in ["a", "b", "c"] {
            store(&o, id).await.unwrap();
        }
        assert!(matches!(
            store(&o, "d").await,
            Err(ClientError::BufferFull(3))
        ));
        drop(o);

        let o = Outbox::open(&path, 3).unwrap();
        assert_eq!(o.len(), 3, "accepted events survive");
        assert_eq!(ids(&o, 1 << 20).await, ["a", "b", "c"]);
        assert_eq!(ids(&o, 1).await, ["a"], "the byte cap still sends one");
        let first = o.load(1, 1 << 20).await.unwrap().remove(0);
        o.done(vec![(first.id, Ok(PublishAck::default()))]);
        assert_eq!(ids(&o, 1 << 20).await, ["b", "c"], "acked events are gone");
        assert_eq!(o.len(), 2);
        store(&o, "d").await.unwrap();
    }

    #[tokio::test]
    async fn an_event_refused_as_malformed_moves_to_the_rejected_table_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/outbox/d.db");
        let o = Outbox::open(&path, 10).unwrap();
        for id in ["good", "bad"] {
            store(&o, id).await.unwrap();
        }
        let rows = o.load(10, 1 << 20).await.unwrap();
        o.done(vec![
            (rows[0].id, Ok(PublishAck::default())),
            (
                rows[1].id,
                Err(ClientError::Rejected("event bad: no payload".into())),
            ),
        ]);
        assert!(ids(&o, 1 << 20).await.is_empty(), "both left the outbox");
        assert_eq!((o.len(), o.rejected()), (0, 1));
        drop(o);
        let o = Outbox::open(&path, 10).unwrap();
        assert_eq!(o.rejected(), 1, "counted again after a reopen");
        drop(o);
        let c = Connection::open(&path).unwrap();
        let (blob, reason): (Vec<u8>, String) = c
            .query_row("SELECT event, reason FROM rejected", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(wire::Event::decode(blob.as_slice()).unwrap().id, "bad");
        assert!(reason.contains("no payload"), "{reason}");
    }
}
