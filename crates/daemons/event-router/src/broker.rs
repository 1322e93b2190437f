//! In-memory side of the router: the recent-events cache, the head sequence, durable
//! consumer state (ack floor, pending, failures, redeliveries) and delivery sessions.
//!
//! A session is one task per subscriber feeding a bounded channel; when the subscriber
//! is slow only its own task waits, and when it falls behind the cache it reads back
//! from the log. Publishers never wait for subscribers.

use crate::RouterConfig;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError, Stored, router_now_ms};
use prost::Message;
use ringrift_proto::{Event, wire};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};
use tonic::Status;

/// Dead-letter states, as stored (`wire::DeadLetterState` values).
pub const DL_DEAD: i32 = 1;
pub const DL_RETRYING: i32 = 2;
pub const DL_GIVEN_UP: i32 = 3;
pub const DL_DELIVERED: i32 = 4;

#[derive(Default)]
struct CState {
    floor: u64,
    cursor: u64,
    pending: BTreeSet<u64>,
    done: BTreeSet<u64>,
    failures: HashMap<u64, u32>,
    redeliver: BTreeSet<u64>,
    /// Dead letters queued for redelivery: seq -> letter id.
    dlq_redeliver: BTreeMap<u64, u64>,
    /// Dead letters sent and not yet acked/nacked: seq -> letter id.
    dlq_pending: HashMap<u64, u64>,
    generation: u64,
    connected: bool,
}

impl CState {
    /// Moves the floor up to just below the oldest pending event; returns it if it moved.
    fn advance_floor(&mut self) -> Option<u64> {
        let candidate = match self.pending.first() {
            Some(p) => p - 1,
            None => self.cursor,
        };
        if candidate <= self.floor {
            return None;
        }
        self.floor = candidate;
        let keep = self.done.split_off(&(candidate + 1));
        self.done = keep;
        self.failures.retain(|s, _| *s > candidate);
        Some(candidate)
    }
}

pub struct Consumer {
    name: String,
    state: Mutex<CState>,
    notify: Notify,
}

impl Consumer {
    fn lock(&self) -> std::sync::MutexGuard<'_, CState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Which event types a subscriber wants; `None` = all.
pub type Filter = Option<Arc<HashSet<i32>>>;

fn matches(f: &Filter, t: i32) -> bool {
    f.as_ref().is_none_or(|s| s.contains(&t))
}

pub struct Broker {
    pub cfg: RouterConfig,
    pub store: Store,
    cache: Arc<RwLock<VecDeque<Arc<wire::Event>>>>,
    head: watch::Sender<u64>,
    consumers: Mutex<HashMap<String, Arc<Consumer>>>,
    pub metrics: Metrics,
    /// Ends every delivery session (router shutdown).
    pub closing: tokio_util::sync::CancellationToken,
}

/// The commit hook the store calls: append to the cache, then publish the new head.
pub fn commit_hook(
    cache: Arc<RwLock<VecDeque<Arc<wire::Event>>>>,
    head: watch::Sender<u64>,
    cap: usize,
) -> crate::store::OnCommit {
    Box::new(move |events| {
        let last = events.last().map(|e| e.seq);
        {
            let mut c = cache.write().unwrap_or_else(|p| p.into_inner());
            c.extend(events);
            while c.len() > cap {
                c.pop_front();
            }
        }
        if let Some(last) = last {
            head.send_replace(last);
        }
    })
}

impl Broker {
    pub fn new(
        cfg: RouterConfig,
        store: Store,
        loaded: crate::store::Loaded,
        cache: Arc<RwLock<VecDeque<Arc<wire::Event>>>>,
        head: watch::Sender<u64>,
        metrics: Metrics,
    ) -> Arc<Broker> {
        {
            let mut c = cache.write().unwrap_or_else(|p| p.into_inner());
            if c.is_empty() {
                c.extend(loaded.recent.iter().cloned());
            }
        }
        head.send_modify(|h| *h = (*h).max(loaded.head));
        let mut consumers = HashMap::new();
        for (name, floor) in loaded.consumers {
            let st = CState {
                floor,
                cursor: floor,
                ..Default::default()
            };
            consumers.insert(
                name.clone(),
                Arc::new(Consumer {
                    name,
                    state: Mutex::new(st),
                    notify: Notify::new(),
                }),
            );
        }
        for (name, seq, count) in loaded.failures {
            if let Some(c) = consumers.get(&name) {
                c.lock().failures.insert(seq, count);
            }
        }
        for (name, seq, id, state) in loaded.letters {
            if let Some(c) = consumers.get(&name) {
                let mut st = c.lock();
                if seq > st.floor {
                    st.done.insert(seq);
                }
                if state == DL_RETRYING {
                    st.dlq_redeliver.insert(seq, id);
                }
            }
        }
        Arc::new(Broker {
            cfg,
            store,
            cache,
            head,
            consumers: Mutex::new(consumers),
            metrics,
            closing: tokio_util::sync::CancellationToken::new(),
        })
    }

    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    pub async fn publish(&self, events: Vec<Event>) -> Result<Vec<Stored>, StoreError> {
        let n = events.len() as u64;
        let stored = self.store.publish(events).await?;
        let dups = stored.iter().filter(|s| s.duplicate).count() as u64;
        self.metrics.published.inc_by(n - dups);
        self.metrics.duplicates.inc_by(dups);
        Ok(stored)
    }

    /// Up to `limit` matching events after `cursor`, and how far the scan got.
    async fn read_after(
        &self,
        cursor: u64,
        filter: &Filter,
        limit: usize,
    ) -> Result<(Vec<Arc<wire::Event>>, u64), StoreError> {
        let head = self.head();
        if cursor >= head {
            return Ok((Vec::new(), cursor));
        }
        {
            let c = self.cache.read().unwrap_or_else(|p| p.into_inner());
            if let Some(front) = c.front() {
                if cursor + 1 >= front.seq {
                    let start = (cursor + 1 - front.seq) as usize;
                    let mut out = Vec::new();
                    let mut scanned = cursor;
                    for ev in c.iter().skip(start) {
                        scanned = ev.seq;
                        if matches(filter, ev.r#type) {
                            out.push(ev.clone());
                            if out.len() >= limit {
                                break;
                            }
                        }
                    }
                    return Ok((out, scanned));
                }
            }
        }
        let rows = self.store.read_after(cursor, 512).await?;
        let scanned = match rows.last() {
            Some(ev) => ev.seq,
            None => head,
        };
        let out = rows
            .into_iter()
            .filter(|e| matches(filter, e.r#type))
            .collect();
        Ok((out, scanned))
    }

    async fn fetch(&self, seq: u64) -> Result<Option<Arc<wire::Event>>, StoreError> {
        {
            let c = self.cache.read().unwrap_or_else(|p| p.into_inner());
            if let Some(front) = c.front() {
                if seq >= front.seq {
                    if let Some(ev) = c.get((seq - front.seq) as usize) {
                        return Ok(Some(ev.clone()));
                    }
                }
            }
        }
        self.store.get(seq).await
    }

    fn consumer(&self, name: &str) -> Option<Arc<Consumer>> {
        self.consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Starts a delivery session; returns the receiving end of its bounded channel.
    pub async fn subscribe(
        self: &Arc<Self>,
        req: wire::SubscribeRequest,
        filter: Filter,
    ) -> Result<mpsc::Receiver<Result<wire::Event, Status>>, Status> {
        let start = match req.start {
            None => 0,
            Some(wire::subscribe_request::Start::FromSeq(s)) => s.saturating_sub(1),
            Some(wire::subscribe_request::Start::Latest(_)) => self.head(),
            Some(wire::subscribe_request::Start::FromTimeUnixMs(ms)) => {
                match self.store.seq_at_time(ms).await {
                    Ok(Some(s)) => s - 1,
                    Ok(None) => self.head(),
                    Err(e) => return Err(Status::internal(e.to_string())),
                }
            }
        };
        let (tx, rx) = mpsc::channel(self.cfg.consumer_buffer.max(1));
        let me = self.clone();
        if req.consumer.is_empty() {
            tokio::spawn(async move { me.ephemeral_session(start, filter, tx).await });
            return Ok(rx);
        }
        let (consumer, generation_id) = {
            let mut map = self.consumers.lock().unwrap_or_else(|p| p.into_inner());
            let c = map
                .entry(req.consumer.clone())
                .or_insert_with(|| {
                    let st = CState {
                        floor: start,
                        cursor: start,
                        ..Default::default()
                    };
                    self.store.save_floor(&req.consumer, start);
                    Arc::new(Consumer {
                        name: req.consumer.clone(),
                        state: Mutex::new(st),
                        notify: Notify::new(),
                    })
                })
                .clone();
            let generation_id = {
                let mut st = c.lock();
                st.generation += 1;
                st.pending.clear();
                st.redeliver.clear();
                st.cursor = st.floor;
                let back: Vec<(u64, u64)> = st.dlq_pending.drain().collect();
                st.dlq_redeliver.extend(back);
                st.connected = true;
                st.generation
            };
            (c, generation_id)
        };
        consumer.notify.notify_waiters();
        tokio::spawn(async move {
            me.durable_session(&consumer, generation_id, filter, &tx)
                .await;
            let mut st = consumer.lock();
            if st.generation == generation_id {
                st.connected = false;
            }
        });
        Ok(rx)
    }

    async fn ephemeral_session(
        &self,
        mut cursor: u64,
        filter: Filter,
        tx: mpsc::Sender<Result<wire::Event, Status>>,
    ) {
        let mut head_rx = self.head.subscribe();
        loop {
            let (evs, scanned) = match self.read_after(cursor, &filter, 256).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                    return;
                }
            };
            if evs.is_empty() && scanned == cursor {
                tokio::select! {
                    r = head_rx.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                    _ = self.closing.cancelled() => return,
                }
                continue;
            }
            for ev in evs {
                if tx.send(Ok((*ev).clone())).await.is_err() {
                    return;
                }
                self.metrics.delivered.inc();
            }
            cursor = scanned;
        }
    }

    async fn durable_session(
        &self,
        c: &Consumer,
        generation_id: u64,
        filter: Filter,
        tx: &mpsc::Sender<Result<wire::Event, Status>>,
    ) {
        let mut head_rx = self.head.subscribe();
        enum Work {
            Dead(u64, u64),
            Again(u64),
            Scan(u64),
        }
        loop {
            let notified = c.notify.notified();
            let work = {
                let mut st = c.lock();
                if st.generation != generation_id {
                    return;
                }
                if let Some((seq, id)) = st.dlq_redeliver.pop_first() {
                    st.dlq_pending.insert(seq, id);
                    Work::Dead(seq, id)
                } else if let Some(seq) = st.redeliver.pop_first() {
                    Work::Again(seq)
                } else {
                    Work::Scan(st.cursor)
                }
            };
            match work {
                Work::Dead(seq, id) => {
                    let ev = self.dead_letter_event(id).await;
                    match ev {
                        Some(ev) => {
                            if tx.send(Ok(ev)).await.is_err() {
                                return;
                            }
                            self.metrics.delivered.inc();
                        }
                        None => {
                            c.lock().dlq_pending.remove(&seq);
                        }
                    }
                }
                Work::Again(seq) => match self.fetch(seq).await {
                    Ok(Some(ev)) => {
                        if tx.send(Ok((*ev).clone())).await.is_err() {
                            return;
                        }
                        self.metrics.delivered.inc();
                    }
                    Ok(None) => {
                        // Retention removed it: nothing left to deliver.
                        let mut st = c.lock();
                        st.pending.remove(&seq);
                        if let Some(f) = st.advance_floor() {
                            self.store.save_floor(&c.name, f);
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                        return;
                    }
                },
                Work::Scan(cursor) => {
                    let (evs, scanned) = match self.read_after(cursor, &filter, 256).await {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                            return;
                        }
                    };
                    if evs.is_empty() && scanned == cursor {
                        tokio::select! {
                            r = head_rx.changed() => if r.is_err() { return },
                            _ = notified => {},
                            _ = tx.closed() => return,
                            _ = self.closing.cancelled() => return,
                        }
                        continue;
                    }
                    for ev in evs {
                        {
                            let mut st = c.lock();
                            if st.generation != generation_id {
                                return;
                            }
                            if st.done.contains(&ev.seq) || ev.seq <= st.floor {
                                continue;
                            }
                            st.pending.insert(ev.seq);
                            st.cursor = st.cursor.max(ev.seq);
                        }
                        if tx.send(Ok((*ev).clone())).await.is_err() {
                            return;
                        }
                        self.metrics.delivered.inc();
                    }
                    let mut st = c.lock();
                    if st.generation != generation_id {
                        return;
                    }
                    st.cursor = st.cursor.max(scanned);
                    if let Some(f) = st.advance_floor() {
                        self.store.save_floor(&c.name, f);
                    }
                }
            }
        }
    }

    async fn dead_letter_event(&self, id: u64) -> Option<wire::Event> {
        let r = self
            .store
            .read(move |c| {
                use rusqlite::OptionalExtension;
                c.query_row(
                    "SELECT seq, data FROM dead_letters WHERE id = ?1",
                    [id as i64],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
                )
                .optional()
            })
            .await;
        match r {
            Ok(Some((seq, data))) => wire::Event::decode(data.as_slice()).ok().map(|mut e| {
                e.seq = seq as u64;
                e
            }),
            _ => None,
        }
    }

    pub fn ack(&self, consumer: &str, seq: u64, cumulative: bool) -> Result<u64, Status> {
        let c = self
            .consumer(consumer)
            .ok_or_else(|| Status::not_found(format!("no consumer named {consumer:?}")))?;
        let (floor, moved, letter) = {
            let mut st = c.lock();
            let letter = st.dlq_pending.remove(&seq);
            if cumulative {
                let acked: Vec<u64> = st.pending.range(..=seq).copied().collect();
                for s in acked {
                    st.pending.remove(&s);
                    st.redeliver.remove(&s);
                    st.done.insert(s);
                }
            } else if st.pending.remove(&seq) {
                st.redeliver.remove(&seq);
                st.done.insert(seq);
            }
            let moved = st.advance_floor();
            (st.floor, moved, letter)
        };
        if let Some(f) = moved {
            self.store.save_floor(&c.name, f);
        }
        if let Some(id) = letter {
            let store = self.store.clone();
            tokio::spawn(async move {
                let r = store
                    .exec(move |tx| {
                        tx.execute(
                            "UPDATE dead_letters SET state = ?1 WHERE id = ?2",
                            [DL_DELIVERED as i64, id as i64],
                        )
                        .map(|n| n as i64)
                    })
                    .await;
                if let Err(e) = r {
                    tracing::error!(error = %e, letter = id, "mark dead letter delivered");
                }
            });
        }
        Ok(floor)
    }

    pub async fn nack(
        &self,
        consumer: &str,
        seq: u64,
        reason: &str,
    ) -> Result<wire::NackResponse, Status> {
        let c = self
            .consumer(consumer)
            .ok_or_else(|| Status::not_found(format!("no consumer named {consumer:?}")))?;
        enum Next {
            BackToDlq(u64),
            Retry(u32),
            Dead(u32),
        }
        let next = {
            let mut st = c.lock();
            if let Some(id) = st.dlq_pending.remove(&seq) {
                Next::BackToDlq(id)
            } else if !st.pending.contains(&seq) {
                return Err(Status::failed_precondition(format!(
                    "seq {seq} is not awaiting an ack from consumer {consumer:?}"
                )));
            } else {
                let n = st.failures.entry(seq).or_insert(0);
                *n += 1;
                let n = *n;
                if n >= self.cfg.max_deliver {
                    Next::Dead(n)
                } else {
                    st.redeliver.insert(seq);
                    Next::Retry(n)
                }
            }
        };
        let name = c.name.clone();
        let reason = reason.chars().take(2000).collect::<String>();
        let map_err = |e: StoreError| Status::internal(e.to_string());
        match next {
            Next::BackToDlq(id) => {
                self.store
                    .exec(move |tx| {
                        tx.execute(
                            "UPDATE dead_letters SET state = ?1, reason = ?2 WHERE id = ?3",
                            rusqlite::params![DL_DEAD, reason, id as i64],
                        )
                        .map(|n| n as i64)
                    })
                    .await
                    .map_err(map_err)?;
                Ok(wire::NackResponse {
                    failures: 0,
                    dead_lettered: true,
                })
            }
            Next::Retry(n) => {
                self.store
                    .exec(move |tx| {
                        tx.execute(
                            "INSERT INTO failures (consumer, seq, count) VALUES (?1, ?2, ?3) ON CONFLICT(consumer, seq) DO UPDATE SET count = excluded.count",
                            rusqlite::params![name, seq as i64, n],
                        )
                        .map(|n| n as i64)
                    })
                    .await
                    .map_err(map_err)?;
                c.notify.notify_waiters();
                Ok(wire::NackResponse {
                    failures: n,
                    dead_lettered: false,
                })
            }
            Next::Dead(n) => {
                let ev = self.fetch(seq).await.map_err(map_err)?;
                let (kind, data) = match &ev {
                    Some(e) => {
                        let mut copy = (**e).clone();
                        copy.seq = 0;
                        (e.r#type, copy.encode_to_vec())
                    }
                    None => (0, Vec::new()),
                };
                let now = router_now_ms();
                self.store
                    .exec(move |tx| {
                        tx.execute("DELETE FROM failures WHERE consumer = ?1 AND seq = ?2", rusqlite::params![name, seq as i64])?;
                        tx.execute(
                            "INSERT INTO dead_letters (consumer, seq, type, reason, failures, dead_ms, state, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                            rusqlite::params![name, seq as i64, kind, reason, n, now, DL_DEAD, data],
                        )?;
                        Ok(tx.last_insert_rowid())
                    })
                    .await
                    .map_err(map_err)?;
                self.metrics.dead_lettered.inc();
                let moved = {
                    let mut st = c.lock();
                    st.pending.remove(&seq);
                    st.redeliver.remove(&seq);
                    st.failures.remove(&seq);
                    st.done.insert(seq);
                    st.advance_floor()
                };
                if let Some(f) = moved {
                    self.store.save_floor(&c.name, f);
                }
                tracing::warn!(consumer = %c.name, seq, failures = n, "event dead-lettered");
                Ok(wire::NackResponse {
                    failures: n,
                    dead_lettered: true,
                })
            }
        }
    }

    pub async fn list_dead_letters(
        &self,
        consumer: String,
        include_resolved: bool,
    ) -> Result<Vec<wire::DeadLetter>, StoreError> {
        self.store
            .read(move |c| {
                let mut st = c.prepare(
                    "SELECT id, consumer, seq, type, reason, failures, retries, dead_ms, last_retry_ms, state FROM dead_letters
                     WHERE (?1 = '' OR consumer = ?1) AND (?2 OR state IN (1, 2)) ORDER BY id",
                )?;
                let rows = st.query_map(rusqlite::params![consumer, include_resolved], letter_row)?;
                rows.collect()
            })
            .await
    }

    pub async fn dead_letter(&self, id: u64) -> Result<Option<wire::DeadLetter>, StoreError> {
        self.store
            .read(move |c| {
                use rusqlite::OptionalExtension;
                c.query_row(
                    "SELECT id, consumer, seq, type, reason, failures, retries, dead_ms, last_retry_ms, state FROM dead_letters WHERE id = ?1",
                    [id as i64],
                    letter_row,
                )
                .optional()
            })
            .await
    }

    /// Queues a dead letter for redelivery to its consumer and counts the retry.
    pub async fn retry_dead_letter(&self, id: u64) -> Result<wire::DeadLetter, Status> {
        let letter = self
            .dead_letter(id)
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::not_found(format!("no dead letter {id}")))?;
        if letter.state != DL_DEAD {
            return Err(Status::failed_precondition(format!(
                "dead letter {id} is {}, not DEAD",
                state_name(letter.state)
            )));
        }
        let c = self.consumer(&letter.consumer).ok_or_else(|| {
            Status::not_found(format!(
                "consumer {:?} of dead letter {id} is gone",
                letter.consumer
            ))
        })?;
        let now = router_now_ms();
        self.store
            .exec(move |tx| {
                tx.execute("UPDATE dead_letters SET state = ?1, retries = retries + 1, last_retry_ms = ?2 WHERE id = ?3", rusqlite::params![DL_RETRYING, now, id as i64])
                    .map(|n| n as i64)
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        c.lock().dlq_redeliver.insert(letter.seq, id);
        c.notify.notify_waiters();
        self.dead_letter(id)
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::not_found(format!("dead letter {id} vanished")))
    }

    pub async fn resolve_dead_letter(
        &self,
        id: u64,
        state: i32,
    ) -> Result<wire::DeadLetter, Status> {
        if state != DL_GIVEN_UP && state != DL_DEAD {
            return Err(Status::invalid_argument("state must be GIVEN_UP or DEAD"));
        }
        let n = self
            .store
            .exec(move |tx| {
                tx.execute(
                    "UPDATE dead_letters SET state = ?1 WHERE id = ?2 AND state != ?3",
                    rusqlite::params![state, id as i64, DL_RETRYING],
                )
                .map(|n| n as i64)
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        if n == 0 {
            return Err(Status::failed_precondition(format!(
                "dead letter {id} does not exist or is being retried"
            )));
        }
        self.dead_letter(id)
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::not_found(format!("no dead letter {id}")))
    }

    /// Letters RETRYING for longer than `timeout` without being sent (their consumer
    /// never reconnected) go back to DEAD, so dlq_retry can try them again later; letters
    /// sent and awaiting their ack are left alone. Returns how many went back.
    pub async fn expire_retrying(&self, timeout: Duration) -> Result<u64, StoreError> {
        let cutoff = router_now_ms().saturating_sub(timeout.as_millis() as i64);
        let stale: Vec<(u64, String, u64)> = self
            .store
            .read(move |c| {
                let mut st = c.prepare(
                    "SELECT id, consumer, seq FROM dead_letters WHERE state = ?1 AND last_retry_ms < ?2",
                )?;
                let rows = st.query_map(rusqlite::params![DL_RETRYING, cutoff], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get::<_, i64>(2)? as u64))
                })?;
                rows.collect()
            })
            .await?;
        let mut ids = Vec::new();
        for (id, consumer, seq) in stale {
            if let Some(c) = self.consumer(&consumer) {
                let mut st = c.lock();
                if st.dlq_pending.get(&seq) == Some(&id) {
                    continue;
                }
                if st.dlq_redeliver.get(&seq) == Some(&id) {
                    st.dlq_redeliver.remove(&seq);
                }
            }
            ids.push(id);
        }
        if ids.is_empty() {
            return Ok(0);
        }
        let n = self
            .store
            .exec(move |tx| {
                let mut n = 0;
                for id in ids {
                    n += tx.execute(
                        "UPDATE dead_letters SET state = ?1 WHERE id = ?2 AND state = ?3",
                        rusqlite::params![DL_DEAD, id as i64, DL_RETRYING],
                    )?;
                }
                Ok(n as i64)
            })
            .await?;
        Ok(n as u64)
    }

    pub async fn purge_dead_letters(&self, consumer: String) -> Result<u64, StoreError> {
        let n = self
            .store
            .exec(move |tx| {
                tx.execute(
                    "DELETE FROM dead_letters WHERE (?1 = '' OR consumer = ?1) AND state != ?2",
                    rusqlite::params![consumer, DL_RETRYING],
                )
                .map(|n| n as i64)
            })
            .await?;
        Ok(n as u64)
    }

    pub fn consumer_stats(&self) -> Vec<wire::ConsumerStats> {
        let head = self.head();
        let map = self.consumers.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = map
            .values()
            .map(|c| {
                let st = c.lock();
                wire::ConsumerStats {
                    name: c.name.clone(),
                    ack_floor: st.floor,
                    lag: head.saturating_sub(st.floor),
                    pending: st.pending.len() as u64,
                    connected: st.connected,
                }
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn first_cached(&self) -> u64 {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .front()
            .map(|e| e.seq)
            .unwrap_or(0)
    }

    /// Deletes events past the retention limits; returns how many went.
    pub async fn enforce_retention(&self) -> Result<u64, StoreError> {
        let cfg = self.cfg.clone();
        let cutoff = router_now_ms() - (cfg.retention_max_age_s as i64).saturating_mul(1000);
        let head = self.head();
        let n = self
            .store
            .exec(move |tx| {
                let mut n = tx.execute("DELETE FROM events WHERE stored_ms < ?1 AND seq < ?2", rusqlite::params![cutoff, head as i64])?;
                let keep_from = head.saturating_sub(cfg.retention_max_events) as i64;
                n += tx.execute("DELETE FROM events WHERE seq <= ?1", [keep_from])?;
                let bytes: i64 = tx.query_row("SELECT COALESCE(SUM(length(data)) + COUNT(*) * 64, 0) FROM events", [], |r| r.get(0))?;
                if bytes as u64 > cfg.retention_max_bytes {
                    // Drop the oldest tenth above the limit; the next pass continues if needed.
                    let count: i64 = tx.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
                    n += tx.execute("DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?1)", [(count / 10).max(1)])?;
                }
                Ok(n as i64)
            })
            .await?;
        Ok(n as u64)
    }
}

pub fn state_name(s: i32) -> &'static str {
    wire::DeadLetterState::try_from(s)
        .map(|s| s.as_str_name())
        .unwrap_or("UNKNOWN")
}

fn letter_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<wire::DeadLetter> {
    Ok(wire::DeadLetter {
        id: r.get::<_, i64>(0)? as u64,
        consumer: r.get(1)?,
        seq: r.get::<_, i64>(2)? as u64,
        r#type: r.get(3)?,
        reason: r.get(4)?,
        failures: r.get(5)?,
        retries: r.get(6)?,
        dead_at_unix_ms: r.get(7)?,
        last_retry_unix_ms: r.get(8)?,
        state: r.get(9)?,
    })
}

/// Builds the type filter of a subscription; prefixes must name at least one type.
pub fn build_filter(types: &[i32], prefixes: &[String]) -> Result<Filter, Status> {
    if types.is_empty() && prefixes.is_empty() {
        return Ok(None);
    }
    let mut set = HashSet::new();
    for &t in types {
        match wire::EventType::try_from(t) {
            Ok(wire::EventType::Unspecified) | Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown event type {t} in subscription"
                )));
            }
            Ok(_) => {
                set.insert(t);
            }
        }
    }
    for p in prefixes {
        let before = set.len();
        for t in all_types() {
            if t.as_str_name().starts_with(p.as_str()) {
                set.insert(t as i32);
            }
        }
        if set.len() == before && !all_types().any(|t| t.as_str_name().starts_with(p.as_str())) {
            return Err(Status::invalid_argument(format!(
                "prefix {p:?} matches no event type"
            )));
        }
    }
    Ok(Some(Arc::new(set)))
}

fn all_types() -> impl Iterator<Item = wire::EventType> {
    (1..=200).filter_map(|i| wire::EventType::try_from(i).ok())
}

pub const RETENTION_TICK: Duration = Duration::from_secs(60);
