//! In-memory side of the router: the recent-events cache, the head sequence, durable
//! consumer state (ack floor, pending, failures, redeliveries) and delivery sessions.
//!
//! A session is one task per subscriber feeding a bounded channel; when the subscriber
//! is slow only its own task waits, and when it falls behind the cache it reads back
//! from the log. Publishers never wait for subscribers.

use crate::RouterConfig;
use crate::log::{
    DL_DEAD, DL_DELIVERED, DL_GIVEN_UP, DL_RETRYING, Filter, Stored, matches, router_now_ms,
    state_name,
};
use crate::metrics::Metrics;
use crate::recent::Recent;
use crate::store::{AckRecord, Store, StoreError};
use prost::Message;
use ringrift_proto::{Event, wire};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, watch};
use tonic::Status;

/// A deadline far enough away to mean "not waiting for an ack right now".
fn never() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

#[derive(Default)]
struct CState {
    floor: u64,
    cursor: u64,
    /// Delivered and not yet acked: seq -> ack deadline. Seqs waiting in `redeliver`
    /// or `dying` stay here (they hold the floor) with no deadline.
    pending: BTreeMap<u64, Instant>,
    /// Acked above the floor (persisted in the `acks` table).
    done: BTreeSet<u64>,
    /// Failed deliveries so far (nacks, ack-wait expiries, disconnects while holding).
    failures: HashMap<u64, u32>,
    redeliver: BTreeSet<u64>,
    /// Reached `max_deliver`; their dead letter is being written.
    dying: BTreeSet<u64>,
    /// Dead letters queued for redelivery: seq -> letter id.
    dlq_redeliver: BTreeMap<u64, u64>,
    /// Dead letters sent and not yet acked/nacked: seq -> (letter id, ack deadline).
    dlq_pending: HashMap<u64, (u64, Instant)>,
    generation: u64,
    /// Deliveries handed out so far, and for each seq its latest (session generation,
    /// delivery number): a cumulative ack covers only what the acked event's session
    /// delivered no later than it.
    deliveries: u64,
    sent: HashMap<u64, (u64, u64)>,
    /// Pending seqs of the current session the consumer marked started (an in-progress
    /// ack without `queued`): only these count as failed deliveries when the session ends
    /// holding them; one never started was still queued at the consumer.
    started: HashSet<u64>,
    /// Pending seqs of the current session whose newest report said queued (an
    /// in-progress ack with `queued`, never one without): an ack wait that runs out on
    /// one of these is no failed delivery (the consumer had not started it), it is only
    /// sent again.
    queued: HashSet<u64>,
    /// The current session marked at least one delivery started. One that never does is
    /// read as an in-order reader: its oldest held delivery is the one it was on.
    marks_started: bool,
    connected: bool,
    ack_wait: Duration,
    max_ack_pending: usize,
    /// The filter of the newest session (None until one subscribed since start-up):
    /// retention counts only matching events as lost to this consumer.
    filter: Option<Filter>,
}

/// One failed delivery of a seq, as decided under the consumer's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failed {
    /// Counted; will be delivered again.
    Retry(u64, u32),
    /// Counted and at `max_deliver`: to the dead-letter queue.
    Dead(u64, u32),
}

impl CState {
    /// Moves the floor up to just below the oldest pending event; returns it if it moved.
    fn advance_floor(&mut self) -> Option<u64> {
        let candidate = match self.pending.keys().next() {
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
        self.sent.retain(|s, _| *s > candidate);
        self.started.retain(|s| *s > candidate);
        self.queued.retain(|s| *s > candidate);
        Some(candidate)
    }

    /// Notes that `seq` was handed to the current session.
    fn note_sent(&mut self, seq: u64) {
        self.deliveries += 1;
        let at = (self.generation, self.deliveries);
        self.sent.insert(seq, at);
    }

    /// Counts a failed delivery of a pending `seq`. With `requeue` it is delivered again
    /// from `redeliver`; without, it leaves `pending` (the next session's scan resends
    /// it). `None` when `seq` is not awaiting an ack (acked meanwhile, or already queued
    /// for redelivery or for the dead-letter queue).
    fn fail(&mut self, seq: u64, max_deliver: u32, requeue: bool) -> Option<Failed> {
        if !self.pending.contains_key(&seq)
            || self.redeliver.contains(&seq)
            || self.dying.contains(&seq)
        {
            return None;
        }
        let n = self.failures.entry(seq).or_insert(0);
        *n += 1;
        let n = *n;
        // A delivery again, if any, is a new one: not started until marked.
        self.started.remove(&seq);
        self.queued.remove(&seq);
        if n >= max_deliver {
            self.dying.insert(seq);
            self.pending.insert(seq, never());
            return Some(Failed::Dead(seq, n));
        }
        if requeue {
            self.redeliver.insert(seq);
            self.pending.insert(seq, never());
        } else {
            self.pending.remove(&seq);
        }
        Some(Failed::Retry(seq, n))
    }

    /// Every pending seq whose ack deadline passed, and the dead letters likewise.
    fn expired(&self, now: Instant) -> (Vec<u64>, Vec<u64>) {
        let seqs = self
            .pending
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(s, _)| *s)
            .collect();
        let letters = self
            .dlq_pending
            .iter()
            .filter(|(_, (_, d))| *d <= now)
            .map(|(s, _)| *s)
            .collect();
        (seqs, letters)
    }

    /// The earliest ack deadline, if anything waits for an ack.
    fn next_deadline(&self) -> Option<Instant> {
        let a = self.pending.values().min().copied();
        let b = self.dlq_pending.values().map(|(_, d)| *d).min();
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sends a pending `seq` again without counting a failed delivery.
    fn requeue_uncounted(&mut self, seq: u64) {
        if !self.pending.contains_key(&seq)
            || self.redeliver.contains(&seq)
            || self.dying.contains(&seq)
        {
            return;
        }
        self.queued.remove(&seq);
        self.redeliver.insert(seq);
        self.pending.insert(seq, never());
    }

    /// Ends a session: what it held unacked and had started counts as a failed delivery
    /// (with `charge`; a router that stops charges nothing). A delivery never started (the
    /// consumer stopped with it queued) goes back uncounted: a daemon restarted N times
    /// with events queued dead-letters none of them. A session that marked nothing
    /// started counts its oldest held delivery (an in-order reader was on it), so a
    /// consumer that crashes on an event without reporting progress still uses up its
    /// deliveries.
    fn disconnect(&mut self, max_deliver: u32, charge: bool) -> (Vec<Failed>, Vec<u64>) {
        let held: Vec<u64> = self.pending.keys().copied().collect();
        let awaiting = |st: &CState, s: &u64| {
            !st.redeliver.contains(s) && !st.dying.contains(s) && st.pending.contains_key(s)
        };
        let oldest = held.iter().copied().find(|s| awaiting(self, s));
        let mut failed = Vec::new();
        for &s in &held {
            let started = self.started.contains(&s) || (!self.marks_started && Some(s) == oldest);
            if charge && started {
                failed.extend(self.fail(s, max_deliver, false));
            } else if awaiting(self, &s) {
                // Not a failed delivery: the next session's scan sends it again.
                self.pending.remove(&s);
            }
        }
        self.started.clear();
        self.queued.clear();
        self.marks_started = false;
        // Waiting for redelivery: the next session's scan sends them again.
        for s in std::mem::take(&mut self.redeliver) {
            self.pending.remove(&s);
        }
        // What left `pending` unacked no longer holds the floor, so the cursor goes back
        // below the oldest of it: the floor may pass only acked (or unwanted) seqs, and
        // an ack arriving before the next session (a late ack of the ended one) must not
        // move it to the highest seq that session was sent.
        if let Some(&oldest) = held.iter().find(|s| !self.pending.contains_key(s)) {
            self.cursor = self.cursor.min(oldest - 1).max(self.floor);
        }
        // Sent dead letters go back to DEAD (dlq_retry retries them with backoff);
        // queued ones stay queued for the next session.
        let letters = self.dlq_pending.drain().map(|(_, (id, _))| id).collect();
        (failed, letters)
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

pub struct Broker {
    pub cfg: RouterConfig,
    pub store: Store,
    cache: Arc<RwLock<Recent>>,
    head: watch::Sender<u64>,
    consumers: Mutex<HashMap<String, Arc<Consumer>>>,
    pub metrics: Metrics,
    /// Ends every delivery session (router shutdown).
    pub closing: tokio_util::sync::CancellationToken,
}

/// The commit hook the store calls: append to the cache, then publish the new head.
pub fn commit_hook(cache: Arc<RwLock<Recent>>, head: watch::Sender<u64>) -> crate::store::OnCommit {
    Box::new(move |events| {
        let last = events.last().map(|e| e.seq);
        cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(events);
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
        cache: Arc<RwLock<Recent>>,
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
                ack_wait: Duration::from_secs_f64(cfg.ack_wait_s),
                max_ack_pending: cfg.max_ack_pending,
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
        for (name, seq) in loaded.acks {
            if let Some(c) = consumers.get(&name) {
                let mut st = c.lock();
                if seq > st.floor {
                    st.done.insert(seq);
                }
            }
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
        let durable = !req.consumer.is_empty();
        let start = match req.start {
            // A new durable consumer starts at the head unless it asks for history.
            None if durable => self.head(),
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
        if !durable {
            tokio::spawn(async move { me.ephemeral_session(start, filter, tx).await });
            return Ok(rx);
        }
        let ack_wait = match req.ack_wait_ms {
            0 => Duration::from_secs_f64(self.cfg.ack_wait_s),
            ms => Duration::from_millis(ms.into()),
        };
        let max_ack_pending = match req.max_ack_pending {
            0 => self.cfg.max_ack_pending,
            n => n as usize,
        };
        let (consumer, generation_id, created, failed, letters) = {
            let mut map = self.consumers.lock().unwrap_or_else(|p| p.into_inner());
            let mut created = false;
            let c = map
                .entry(req.consumer.clone())
                .or_insert_with(|| {
                    created = true;
                    Arc::new(Consumer {
                        name: req.consumer.clone(),
                        state: Mutex::new(CState {
                            floor: start,
                            cursor: start,
                            ..Default::default()
                        }),
                        notify: Notify::new(),
                    })
                })
                .clone();
            let (generation_id, failed, letters) = {
                let mut st = c.lock();
                st.generation += 1;
                // The previous session (if its end was not seen yet) held these.
                let (failed, letters) = st.disconnect(self.cfg.max_deliver, true);
                st.cursor = st.floor;
                st.connected = true;
                st.ack_wait = ack_wait;
                st.max_ack_pending = max_ack_pending.max(1);
                st.filter = Some(filter.clone());
                (st.generation, failed, letters)
            };
            (c, generation_id, created, failed, letters)
        };
        if created {
            let rec = AckRecord {
                consumer: req.consumer.clone(),
                floor: start,
                above: Vec::new(),
            };
            self.store
                .save_acks(rec)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
        }
        self.settle(
            &consumer,
            failed,
            letters,
            "consumer reconnected while holding it",
        )
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
        consumer.notify.notify_waiters();
        tokio::spawn(async move {
            me.durable_session(&consumer, generation_id, filter, &tx)
                .await;
            // A router that stops ends every session: that is no failed delivery.
            let charge = !me.closing.is_cancelled();
            let ended = {
                let mut st = consumer.lock();
                (st.generation == generation_id).then(|| st.disconnect(me.cfg.max_deliver, charge))
            };
            if let Some((failed, letters)) = ended {
                if let Err(e) = me
                    .settle(
                        &consumer,
                        failed,
                        letters,
                        "consumer disconnected while holding it",
                    )
                    .await
                {
                    tracing::error!(consumer = %consumer.name, error = %e, "could not record failed deliveries");
                }
                // Shown as disconnected only once the failed deliveries are on disk: a
                // kill -9 right after a status that says so loses no count.
                let mut st = consumer.lock();
                if st.generation == generation_id {
                    st.connected = false;
                }
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
            Scan(u64, usize),
            /// `max_ack_pending` reached: wait for an ack or a deadline.
            Full,
        }
        let mut next_check = Instant::now();
        loop {
            let notified = c.notify.notified();
            let now = Instant::now();
            if now >= next_check {
                let (failed, letters) = {
                    let mut st = c.lock();
                    if st.generation != generation_id {
                        return;
                    }
                    next_check = now
                        + (st.ack_wait / 4).clamp(Duration::from_millis(5), Duration::from_secs(1));
                    let (seqs, dead) = st.expired(now);
                    let max = self.cfg.max_deliver;
                    // One the consumer reported queued (not started) is sent again
                    // uncounted: its wait ran out behind another event's handling.
                    let (waited, seqs): (Vec<u64>, Vec<u64>) =
                        seqs.into_iter().partition(|s| st.queued.contains(s));
                    for s in waited {
                        st.requeue_uncounted(s);
                    }
                    let failed: Vec<Failed> = seqs
                        .into_iter()
                        .filter_map(|s| st.fail(s, max, true))
                        .collect();
                    let letters: Vec<u64> = dead
                        .into_iter()
                        .filter_map(|s| st.dlq_pending.remove(&s).map(|(id, _)| id))
                        .collect();
                    (failed, letters)
                };
                if !failed.is_empty() || !letters.is_empty() {
                    self.metrics
                        .ack_wait_expired
                        .inc_by((failed.len() + letters.len()) as u64);
                    if let Err(e) = self.settle(c, failed, letters, "ack wait expired").await {
                        let _ = tx.send(Err(Status::unavailable(e.to_string()))).await;
                        return;
                    }
                    continue;
                }
            }
            let work = {
                let mut st = c.lock();
                if st.generation != generation_id {
                    return;
                }
                let deadline = now + st.ack_wait;
                let work = if let Some((seq, id)) = st.dlq_redeliver.pop_first() {
                    st.dlq_pending.insert(seq, (id, deadline));
                    st.note_sent(seq);
                    Work::Dead(seq, id)
                } else if let Some(seq) = st.redeliver.pop_first() {
                    st.pending.insert(seq, deadline);
                    st.note_sent(seq);
                    Work::Again(seq)
                } else if st.pending.len() >= st.max_ack_pending {
                    Work::Full
                } else {
                    Work::Scan(st.cursor, st.max_ack_pending - st.pending.len())
                };
                work
            };
            // Only computed when the session is about to wait (it scans `pending`).
            let wake = async {
                let deadline = c.lock().next_deadline();
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            match work {
                Work::Dead(seq, id) => match self.dead_letter_event(id).await {
                    Some(ev) => {
                        if tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                        self.metrics.delivered.inc();
                    }
                    None => {
                        c.lock().dlq_pending.remove(&seq);
                    }
                },
                Work::Again(seq) => match self.fetch(seq).await {
                    Ok(Some(ev)) => {
                        if tx.send(Ok((*ev).clone())).await.is_err() {
                            return;
                        }
                        self.metrics.delivered.inc();
                    }
                    Ok(None) => {
                        // Retention removed it: nothing left to deliver.
                        let moved = {
                            let mut st = c.lock();
                            st.pending.remove(&seq);
                            st.advance_floor()
                        };
                        if let Some(f) = moved {
                            if self.store.save_floor(&c.name, f).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                        return;
                    }
                },
                Work::Full => {
                    tokio::select! {
                        _ = notified => {},
                        _ = wake => {},
                        _ = tx.closed() => return,
                        _ = self.closing.cancelled() => return,
                    }
                }
                Work::Scan(cursor, room) => {
                    let (evs, scanned) = match self.read_after(cursor, &filter, room.min(256)).await
                    {
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
                            _ = wake => {},
                            _ = tx.closed() => return,
                            _ = self.closing.cancelled() => return,
                        }
                        continue;
                    }
                    let mut last = cursor;
                    let mut full = false;
                    for ev in evs {
                        {
                            let mut st = c.lock();
                            if st.generation != generation_id {
                                return;
                            }
                            if st.done.contains(&ev.seq)
                                || ev.seq <= st.floor
                                || st.pending.contains_key(&ev.seq)
                            {
                                last = ev.seq;
                                continue;
                            }
                            if st.pending.len() >= st.max_ack_pending {
                                full = true;
                                break;
                            }
                            let deadline = Instant::now() + st.ack_wait;
                            st.pending.insert(ev.seq, deadline);
                            st.note_sent(ev.seq);
                            st.cursor = st.cursor.max(ev.seq);
                        }
                        last = ev.seq;
                        if tx.send(Ok((*ev).clone())).await.is_err() {
                            return;
                        }
                        self.metrics.delivered.inc();
                    }
                    if !full {
                        last = last.max(scanned);
                    }
                    let moved = {
                        let mut st = c.lock();
                        if st.generation != generation_id {
                            return;
                        }
                        st.cursor = st.cursor.max(last);
                        st.advance_floor()
                    };
                    if let Some(f) = moved {
                        if self.store.save_floor(&c.name, f).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Records failed deliveries decided under the lock: counts persisted, dead ones
    /// moved to the dead-letter queue (the floor then passes them), sent dead letters
    /// returned to DEAD. If the dead letters cannot be written (a full disk), their seqs
    /// wait again with an ack deadline (`ack_wait`, at least 1 s), at which the next
    /// failure decides again, so the write is retried and the floor is not held for
    /// good (before, they stayed `dying`, holding the floor until the router restarted).
    async fn settle(
        &self,
        c: &Consumer,
        failed: Vec<Failed>,
        letters: Vec<u64>,
        reason: &str,
    ) -> Result<(), StoreError> {
        let dying: Vec<u64> = failed
            .iter()
            .filter_map(|f| match f {
                Failed::Dead(seq, _) => Some(*seq),
                Failed::Retry(..) => None,
            })
            .collect();
        let r = self.settle_once(c, failed, letters, reason).await;
        if r.is_err() && !dying.is_empty() {
            let mut st = c.lock();
            let retry = Instant::now() + st.ack_wait.max(Duration::from_secs(1));
            for seq in dying {
                if st.dying.remove(&seq) {
                    st.pending.insert(seq, retry);
                }
            }
        }
        r
    }

    async fn settle_once(
        &self,
        c: &Consumer,
        failed: Vec<Failed>,
        letters: Vec<u64>,
        reason: &str,
    ) -> Result<(), StoreError> {
        if failed.is_empty() && letters.is_empty() {
            return Ok(());
        }
        let mut dead = Vec::new();
        let mut counts = Vec::new();
        for f in &failed {
            match *f {
                Failed::Retry(seq, n) => counts.push((seq, n)),
                Failed::Dead(seq, n) => {
                    let (kind, data) = match self.fetch(seq).await? {
                        Some(e) => {
                            let mut copy = (*e).clone();
                            copy.seq = 0;
                            (e.r#type, copy.encode_to_vec())
                        }
                        None => (0, Vec::new()),
                    };
                    dead.push((seq, n, kind, data));
                }
            }
        }
        let name = c.name.clone();
        let why = reason.to_owned();
        let now = router_now_ms();
        let dead_seqs: Vec<(u64, u32)> = dead.iter().map(|(s, n, _, _)| (*s, *n)).collect();
        self.store
            .exec(move |tx| {
                let mut up = tx.prepare_cached("INSERT INTO failures (consumer, seq, count) VALUES (?1, ?2, ?3) ON CONFLICT(consumer, seq) DO UPDATE SET count = excluded.count")?;
                for (seq, n) in &counts {
                    up.execute(rusqlite::params![name, *seq as i64, n])?;
                }
                for (seq, n, kind, data) in &dead {
                    tx.execute("DELETE FROM failures WHERE consumer = ?1 AND seq = ?2", rusqlite::params![name, *seq as i64])?;
                    tx.execute(
                        "INSERT INTO dead_letters (consumer, seq, type, reason, failures, dead_ms, state, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        rusqlite::params![name, *seq as i64, kind, why, n, now, DL_DEAD, data],
                    )?;
                }
                for id in &letters {
                    tx.execute(
                        "UPDATE dead_letters SET state = ?1, reason = ?2 WHERE id = ?3 AND state = ?4",
                        rusqlite::params![DL_DEAD, why, *id as i64, DL_RETRYING],
                    )?;
                }
                Ok(0)
            })
            .await?;
        if dead_seqs.is_empty() {
            c.notify.notify_waiters();
            return Ok(());
        }
        self.metrics.dead_lettered.inc_by(dead_seqs.len() as u64);
        let moved = {
            let mut st = c.lock();
            for (seq, n) in &dead_seqs {
                tracing::warn!(consumer = %c.name, seq, deliveries = n, reason, "event dead-lettered");
                st.dying.remove(seq);
                st.pending.remove(seq);
                st.redeliver.remove(seq);
                st.failures.remove(seq);
                st.done.insert(*seq);
            }
            st.advance_floor()
        };
        if let Some(f) = moved {
            self.store.save_floor(&c.name, f).await?;
        }
        c.notify.notify_waiters();
        Ok(())
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

    /// Acks `seq` (or every delivered seq up to it); returns the floor once the ack is
    /// committed, so a router restart never redelivers an acked event. Progress only
    /// restarts the seq's ack-wait timer and, when `started`, marks it started.
    pub async fn ack(
        &self,
        consumer: &str,
        seq: u64,
        op: crate::backend::AckOp,
    ) -> Result<u64, Status> {
        let c = self
            .consumer(consumer)
            .ok_or_else(|| Status::not_found(format!("no consumer named {consumer:?}")))?;
        let cumulative = match op {
            crate::backend::AckOp::Ack { cumulative } => cumulative,
            crate::backend::AckOp::Progress { .. } => false,
        };
        if let crate::backend::AckOp::Progress { started } = op {
            let mut st = c.lock();
            let wait = st.ack_wait;
            let waiting = st.redeliver.contains(&seq) || st.dying.contains(&seq);
            if let Some(d) = st.pending.get_mut(&seq) {
                if !waiting {
                    *d = Instant::now() + wait;
                    if started {
                        st.started.insert(seq);
                        st.queued.remove(&seq);
                        st.marks_started = true;
                    } else if !st.started.contains(&seq) {
                        st.queued.insert(seq);
                    }
                }
            } else if let Some((_, d)) = st.dlq_pending.get_mut(&seq) {
                *d = Instant::now() + wait;
            } else {
                return Err(Status::failed_precondition(format!(
                    "seq {seq} is not awaiting an ack from consumer {consumer:?}"
                )));
            }
            return Ok(st.floor);
        }
        let (rec, letter) = {
            let mut st = c.lock();
            let letter = st.dlq_pending.remove(&seq).map(|(id, _)| id);
            let mut newly = Vec::new();
            if cumulative {
                // What the subscriber has read when it acks `seq`: the pending events up
                // to `seq` its session delivered no later than `seq` (one queued for
                // redelivery, or delivered again after it and maybe still unread in the
                // stream, is not covered).
                let last = st.sent.get(&seq).copied();
                let acked: Vec<u64> = st
                    .pending
                    .range(..=seq)
                    .map(|(s, _)| *s)
                    .filter(|s| !st.dying.contains(s) && !st.redeliver.contains(s))
                    .filter(|s| match (st.sent.get(s), last) {
                        (Some(&(g, n)), Some((last_g, last_n))) => g == last_g && n <= last_n,
                        _ => false,
                    })
                    .collect();
                for s in acked {
                    st.pending.remove(&s);
                    st.sent.remove(&s);
                    st.started.remove(&s);
                    st.queued.remove(&s);
                    st.done.insert(s);
                    newly.push(s);
                }
            } else if !st.dying.contains(&seq) && st.pending.remove(&seq).is_some() {
                st.redeliver.remove(&seq);
                st.sent.remove(&seq);
                st.started.remove(&seq);
                st.queued.remove(&seq);
                st.done.insert(seq);
                newly.push(seq);
            }
            st.advance_floor();
            let floor = st.floor;
            let rec = AckRecord {
                consumer: c.name.clone(),
                floor,
                above: newly.into_iter().filter(|s| *s > floor).collect(),
            };
            (rec, letter)
        };
        c.notify.notify_waiters();
        let floor = rec.floor;
        self.store
            .save_acks(rec)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        if let Some(id) = letter {
            self.store
                .exec(move |tx| {
                    tx.execute(
                        "UPDATE dead_letters SET state = ?1 WHERE id = ?2",
                        [DL_DELIVERED as i64, id as i64],
                    )
                    .map(|n| n as i64)
                })
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
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
        let reason = reason.chars().take(2000).collect::<String>();
        let (failed, letters) = {
            let mut st = c.lock();
            if let Some((id, _)) = st.dlq_pending.remove(&seq) {
                (None, vec![id])
            } else {
                match st.fail(seq, self.cfg.max_deliver, true) {
                    Some(f) => (Some(f), Vec::new()),
                    None => {
                        return Err(Status::failed_precondition(format!(
                            "seq {seq} is not awaiting an ack from consumer {consumer:?}"
                        )));
                    }
                }
            }
        };
        self.settle(&c, failed.into_iter().collect(), letters, &reason)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(match failed {
            Some(Failed::Retry(_, n)) => wire::NackResponse {
                failures: n,
                dead_lettered: false,
            },
            Some(Failed::Dead(_, n)) => wire::NackResponse {
                failures: n,
                dead_lettered: true,
            },
            None => wire::NackResponse {
                failures: 0,
                dead_lettered: true,
            },
        })
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
                if st.dlq_pending.get(&seq).map(|(l, _)| *l) == Some(id) {
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

    /// Deletes events past the retention limits, oldest first, in chunks of
    /// `retention_chunk` rows, each its own transaction (publishes commit in between);
    /// returns how many went. Events a durable consumer had not acked are counted per
    /// consumer (metric, warning, EVENTS_EXPIRED).
    pub async fn enforce_retention(&self) -> Result<u64, StoreError> {
        use rusqlite::OptionalExtension;
        let cfg = self.cfg.clone();
        let head = self.head();
        let cutoff = router_now_ms() - (cfg.retention_max_age_s as i64).saturating_mul(1000);
        let (first, by_age) = self
            .store
            .read(move |c| {
                let first: Option<i64> = c.query_row("SELECT MIN(seq) FROM events", [], |r| r.get(0))?;
                let by_age: Option<i64> = c
                    .query_row(
                        "SELECT seq FROM events WHERE stored_ms < ?1 ORDER BY stored_ms DESC, seq DESC LIMIT 1",
                        [cutoff],
                        |r| r.get(0),
                    )
                    .optional()?;
                Ok((first.unwrap_or(0) as u64, by_age.unwrap_or(0) as u64))
            })
            .await?;
        if first == 0 {
            return Ok(0);
        }
        // The age limit keeps the newest event, as `last_seq` bookkeeping expects.
        let by_age = by_age.min(head.saturating_sub(1));
        let by_count = head.saturating_sub(cfg.retention_max_events);
        let by_bytes = self.bytes_cut(first, cfg.retention_max_bytes).await?;
        let upto = by_age.max(by_count).max(by_bytes).min(head);
        let reason = if upto == by_age {
            "age"
        } else if upto == by_count {
            "count"
        } else {
            "bytes"
        };
        let chunk = cfg.retention_chunk.max(1) as u64;
        let mut lost: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        let mut removed = 0u64;
        let mut lo = first;
        while lo <= upto {
            let hi = upto.min(lo + chunk - 1);
            let rows: Vec<(u64, i32, u64)> = self
                .store
                .exec_with(move |tx| {
                    let mut st = tx.prepare_cached(
                        "DELETE FROM events WHERE seq BETWEEN ?1 AND ?2 RETURNING seq, type, length(data)",
                    )?;
                    let rows = st.query_map([lo as i64, hi as i64], |r| {
                        Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get::<_, i64>(2)? as u64 + 64))
                    })?;
                    rows.collect()
                })
                .await?;
            let bytes: u64 = rows.iter().map(|r| r.2).sum();
            let h = self.store.health();
            let _ = h.bytes.fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |b| Some(b.saturating_sub(bytes)),
            );
            removed += rows.len() as u64;
            self.metrics.retention_removed.inc_by(rows.len() as u64);
            self.count_unacked(&rows, &mut lost);
            {
                let mut c = self.cache.write().unwrap_or_else(|p| p.into_inner());
                while c.front().is_some_and(|e| e.seq <= hi) {
                    c.pop_front();
                }
            }
            lo = hi + 1;
        }
        for (consumer, (count, first_seq, last_seq)) in lost {
            tracing::warn!(%consumer, count, first_seq, last_seq, reason, "retention removed events this consumer had not acked");
            self.metrics
                .expired_unacked
                .get_or_create(&vec![("consumer".to_owned(), consumer.clone())])
                .inc_by(count);
            let mut ev = Event::new(wire::event::Payload::EventsExpired(wire::EventsExpired {
                consumer: consumer.clone(),
                count,
                first_seq,
                last_seq,
                reason: reason.into(),
            }));
            ev.id = format!("expired:{consumer}:{first_seq}:{last_seq}");
            ev.source = "event_router".into();
            self.publish(vec![ev]).await?;
        }
        Ok(removed)
    }

    /// The seq up to which the oldest events must go for the log to fit `max_bytes`
    /// (0 when it fits), from the running byte total and a walk over the oldest rows.
    async fn bytes_cut(&self, first: u64, max_bytes: u64) -> Result<u64, StoreError> {
        let total = self
            .store
            .health()
            .bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        if total <= max_bytes {
            return Ok(0);
        }
        let excess = total - max_bytes;
        self.store
            .read(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT seq, length(data) + 64 FROM events WHERE seq >= ?1 ORDER BY seq",
                )?;
                let mut rows = st.query([first as i64])?;
                let (mut sum, mut last) = (0u64, 0u64);
                while let Some(r) = rows.next()? {
                    last = r.get::<_, i64>(0)? as u64;
                    sum += r.get::<_, i64>(1)? as u64;
                    if sum >= excess {
                        break;
                    }
                }
                Ok(last)
            })
            .await
    }

    /// Adds removed events no durable consumer acked yet to `lost`
    /// (consumer -> (count, first seq, last seq)).
    fn count_unacked(
        &self,
        rows: &[(u64, i32, u64)],
        lost: &mut BTreeMap<String, (u64, u64, u64)>,
    ) {
        let consumers: Vec<Arc<Consumer>> = self
            .consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for c in consumers {
            let st = c.lock();
            for &(seq, kind, _) in rows {
                let wanted = st.filter.as_ref().is_none_or(|f| matches(f, kind));
                if seq > st.floor && !st.done.contains(&seq) && wanted {
                    let e = lost.entry(c.name.clone()).or_insert((0, seq, seq));
                    e.0 += 1;
                    e.1 = e.1.min(seq);
                    e.2 = e.2.max(seq);
                }
            }
        }
    }
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

pub const RETENTION_TICK: Duration = Duration::from_secs(60);

fn unavailable(e: StoreError) -> Status {
    Status::unavailable(e.to_string())
}

fn internal(e: StoreError) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl crate::backend::Backend for Broker {
    async fn publish(&self, events: Vec<Event>) -> Result<Vec<Stored>, Status> {
        Broker::publish(self, events).await.map_err(|e| match e {
            // The publisher keeps the events and retries (handler_base::router_client::Publisher).
            StoreError::Full(_) => {
                Status::resource_exhausted(format!("{}: {e}", ringrift_proto::STORAGE_FULL))
            }
            e => unavailable(e),
        })
    }

    async fn subscribe(
        self: Arc<Self>,
        req: wire::SubscribeRequest,
        filter: Filter,
    ) -> Result<crate::backend::Deliveries, Status> {
        Broker::subscribe(&self, req, filter).await
    }

    async fn ack(
        &self,
        consumer: &str,
        seq: u64,
        op: crate::backend::AckOp,
    ) -> Result<u64, Status> {
        Broker::ack(self, consumer, seq, op).await
    }

    async fn nack(
        &self,
        consumer: &str,
        seq: u64,
        reason: &str,
    ) -> Result<wire::NackResponse, Status> {
        Broker::nack(self, consumer, seq, reason).await
    }

    async fn list_dead_letters(
        &self,
        consumer: String,
        include_resolved: bool,
    ) -> Result<Vec<wire::DeadLetter>, Status> {
        Broker::list_dead_letters(self, consumer, include_resolved)
            .await
            .map_err(internal)
    }

    async fn retry_dead_letter(&self, id: u64) -> Result<wire::DeadLetter, Status> {
        Broker::retry_dead_letter(self, id).await
    }

    async fn resolve_dead_letter(&self, id: u64, state: i32) -> Result<wire::DeadLetter, Status> {
        Broker::resolve_dead_letter(self, id, state).await
    }

    async fn purge_dead_letters(&self, consumer: String) -> Result<u64, Status> {
        Broker::purge_dead_letters(self, consumer)
            .await
            .map_err(internal)
    }

    async fn lookup(&self, ids: Vec<String>, since: i64) -> Result<HashMap<String, u64>, Status> {
        self.store
            .read(move |c| {
                let mut found = HashMap::new();
                for chunk in ids.chunks(500) {
                    let marks = vec!["?"; chunk.len()].join(",");
                    let mut st = c.prepare(&format!(
                        "SELECT id, seq FROM events WHERE stored_ms >= ? AND id IN ({marks})"
                    ))?;
                    let params = std::iter::once(&since as &dyn rusqlite::ToSql)
                        .chain(chunk.iter().map(|id| id as &dyn rusqlite::ToSql));
                    let rows = st.query_map(rusqlite::params_from_iter(params), |row| {
                        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64))
                    })?;
                    for row in rows {
                        let (id, seq) = row?;
                        found.insert(id, seq);
                    }
                }
                Ok(found)
            })
            .await
            .map_err(internal)
    }

    async fn stats(&self) -> Result<wire::StatsResponse, Status> {
        let m = &self.metrics;
        Ok(wire::StatsResponse {
            head_seq: self.head(),
            first_seq: self.first_cached(),
            published: m.published.get(),
            duplicates: m.duplicates.get(),
            delivered: m.delivered.get(),
            dead_lettered: m.dead_lettered.get(),
            consumers: self.consumer_stats(),
        })
    }

    fn health(&self) -> Result<(), String> {
        self.store.writer_check()
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn closing(&self) -> &tokio_util::sync::CancellationToken {
        &self.closing
    }
}
