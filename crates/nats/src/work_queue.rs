//! The shared work queue on JetStream, behind the same `WorkQueue` trait as the SQLite
//! queue, so selfplay queued on the coordinator is claimed by workers on other nodes.
//!
//! * A stream `RINGRIFT_WORK` with work-queue retention (a message leaves once acked),
//!   subjects `ringrift.work.<kind>`, one message per item (`Nats-Msg-Id` = item id). A
//!   durable pull consumer per kind claims; its ack wait is the lease (the lease of the
//!   first claim of that kind), a heartbeat is an in-progress ack, and a worker that dies
//!   holding an item simply stops acking: JetStream delivers the message again.
//! * A key-value bucket `ringrift_work` holds each item's state (the `WorkItem`), written
//!   only by compare-and-set on its revision, so of two claimers of a redelivered message
//!   one wins, and a worker whose lease was taken over cannot complete the item. `get`,
//!   `open_items`, `depth`, `held_by` and `oldest_pending_ms` read it. The key `fence`
//!   holds the highest leader fencing token seen ([`WorkQueue::enqueue_fenced`]).
//! * Attempts are counted in the item state, not by JetStream's delivery count: a message
//!   delivered while another worker's lease is still valid is a duplicate and is nacked
//!   until that lease ends.
//!
//! Differences from SQLite, documented in docs/cluster.md: within a kind the order is
//! FIFO (priority is kept and shown but does not reorder); the bucket keeps entries for
//! `retention` (default 7 days), finished or not.
//!
//! The trait is blocking (callers run it in `spawn_blocking`); the queue owns a small
//! runtime and each call waits for its future on a channel, so it also works when called
//! from a plain thread.

use async_nats::jetstream::{self, consumer::PullConsumer, kv, stream};
use futures_util::StreamExt;
use ringrift_store::StoreError;
use ringrift_store::work_queue::{NewWork, QueueDepth, WorkItem, WorkKind, WorkQueue, WorkStatus};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const STREAM: &str = "RINGRIFT_WORK";
pub const BUCKET: &str = "ringrift_work";
const FENCE_KEY: &str = "fence";
/// How long `open` waits for a JetStream cluster that is still starting.
const STARTUP_WAIT: Duration = Duration::from_secs(30);
/// Messages looked at per claim before giving up for this call.
const CLAIM_SCAN: usize = 32;
/// How long one fetch waits for the server's answer (a message or "no messages", which
/// comes at once). The client sets no timer of its own on a fetch without `expires`, so
/// an answer that never arrives would block the claim for good; `expires` would instead
/// make the server hold an empty fetch open while other messages await their acks.
const FETCH_ANSWER: Duration = Duration::from_secs(5);
/// The most any one queue call may take; past it the call fails with an error naming
/// the limit instead of blocking its caller's thread for good.
const CALL_LIMIT: Duration = Duration::from_secs(90);

fn backend(reason: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        backend: "jetstream work queue",
        reason: reason.to_string(),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn subject(kind: WorkKind) -> String {
    format!("ringrift.work.{}", kind.as_str())
}

/// Counts a failed attempt: back to pending, or `failed` once `max_attempts` are used;
/// the claim is released.
fn failed_attempt(item: &mut WorkItem, error: String) {
    item.attempts += 1;
    item.last_error = Some(error);
    item.claimed_by = None;
    item.lease_expires_at = None;
    item.status = if item.attempts >= item.max_attempts {
        WorkStatus::Failed
    } else {
        WorkStatus::Pending
    };
}

/// One item's state in the bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    item: WorkItem,
    created_ms: i64,
    updated_ms: i64,
    /// What the worker reported when it completed the item.
    #[serde(default)]
    result: Option<serde_json::Value>,
    /// False between the record's creation and its message's publication: a record left
    /// unpublished by a crash is published by `requeue_expired`.
    published: bool,
}

/// How the stream and bucket are made.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// Copies of the stream and bucket (3 in a 3-node JetStream cluster).
    pub replicas: usize,
    /// How long the bucket keeps an entry.
    pub retention: Duration,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            replicas: 1,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

struct Inner {
    js: jetstream::Context,
    stream: stream::Stream,
    kv: kv::Store,
    consumers: tokio::sync::Mutex<HashMap<WorkKind, PullConsumer>>,
    /// Messages of the items this process holds (for progress acks and the final ack).
    held: Mutex<HashMap<String, jetstream::Message>>,
}

/// Shuts its runtime down without blocking when dropped (it may be dropped on a runtime).
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The JetStream work queue. Cheap to share (`Arc`), safe from any thread.
pub struct JetStreamWorkQueue {
    rt: OwnRuntime,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JetStreamWorkQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamWorkQueue").finish_non_exhaustive()
    }
}

fn own_runtime() -> Result<tokio::runtime::Runtime, StoreError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("jetstream-queue")
        .enable_all()
        .build()
        .map_err(|e| backend(format!("runtime: {e}")))
}

/// Runs `f` on `rt` and waits for it from this thread, at most `CALL_LIMIT`.
fn block<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    f: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let out = tokio::time::timeout(CALL_LIMIT, f)
            .await
            .unwrap_or_else(|_| {
                Err(backend(format!(
                    "no answer from JetStream within {} s",
                    CALL_LIMIT.as_secs()
                )))
            });
        let _ = tx.send(out);
    });
    rx.recv()
        .map_err(|_| backend("the queue's runtime stopped"))?
}

impl JetStreamWorkQueue {
    /// The cluster's shared queue when cluster.toml runs it on JetStream (`[events]
    /// backend = "jetstream"`: its servers, its replicas); `None` on SQLite.
    pub fn for_cluster(
        cluster: &ringrift_cluster::ClusterConfig,
        client_name: &str,
    ) -> Option<Result<Self, StoreError>> {
        match &cluster.events {
            ringrift_cluster::EventBackend::Sqlite => None,
            ringrift_cluster::EventBackend::Jetstream { servers, replicas } => {
                let opts = QueueOptions {
                    replicas: *replicas,
                    ..QueueOptions::default()
                };
                Some(Self::open(servers, client_name, opts))
            }
        }
    }

    /// Connects to `servers` and makes (or opens) the stream and the bucket. A cluster
    /// still electing its JetStream leader is waited for up to `STARTUP_WAIT`.
    pub fn open(
        servers: &[String],
        client_name: &str,
        opts: QueueOptions,
    ) -> Result<Self, StoreError> {
        let rt = OwnRuntime(Some(own_runtime()?));
        let (servers, name) = (servers.to_vec(), client_name.to_owned());
        let setup = async move {
            let deadline = tokio::time::Instant::now() + STARTUP_WAIT;
            let mut pause = Duration::from_millis(250);
            loop {
                let tried = async {
                    let client = crate::connect(&servers, &name, crate::FirstConnect::FailFast)
                        .await
                        .map_err(backend)?;
                    Inner::setup(client, opts.clone()).await
                }
                .await;
                match tried {
                    Ok(inner) => return Ok(inner),
                    Err(e) if tokio::time::Instant::now() + pause < deadline => {
                        tracing::warn!(error = %e, "JetStream work queue not ready; retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(4));
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let inner = block(rt.0.as_ref().ok_or_else(|| backend("closed"))?, setup)?;
        Ok(JetStreamWorkQueue {
            rt,
            inner: Arc::new(inner),
        })
    }

    fn run<T: Send + 'static, F>(&self, f: impl FnOnce(Arc<Inner>) -> F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let rt = self.rt.0.as_ref().ok_or_else(|| backend("closed"))?;
        block(rt, f(self.inner.clone()))
    }
}

impl Inner {
    async fn setup(client: async_nats::Client, opts: QueueOptions) -> Result<Inner, StoreError> {
        let js = jetstream::new(client);
        let stream = js
            .get_or_create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec!["ringrift.work.>".into()],
                retention: stream::RetentionPolicy::WorkQueue,
                num_replicas: opts.replicas,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| backend(format!("stream {STREAM}: {e}")))?;
        // The bucket's stream made here, as `create_key_value` would (it first asks for
        // account limits in a shape a 2.9 server does not answer).
        js.get_or_create_stream(stream::Config {
            name: format!("KV_{BUCKET}"),
            subjects: vec![format!("$KV.{BUCKET}.>")],
            max_messages_per_subject: 1,
            max_age: opts.retention,
            num_replicas: opts.replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| backend(format!("bucket {BUCKET}: {e}")))?;
        let kv = js
            .get_key_value(BUCKET)
            .await
            .map_err(|e| backend(format!("bucket {BUCKET}: {e}")))?;
        Ok(Inner {
            js,
            stream,
            kv,
            consumers: tokio::sync::Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, jetstream::Message>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn record(&self, id: &str) -> Result<Option<(Record, u64)>, StoreError> {
        let Some(e) = self.kv.entry(id).await.map_err(backend)? else {
            return Ok(None);
        };
        if e.operation != kv::Operation::Put {
            return Ok(None);
        }
        let r: Record = serde_json::from_slice(&e.value)
            .map_err(|err| backend(format!("item {id}: stored state does not parse: {err}")))?;
        Ok(Some((r, e.revision)))
    }

    /// Writes `r` if the item is still at `revision`; false if it changed meanwhile.
    async fn swap(&self, r: &Record, revision: u64) -> Result<bool, StoreError> {
        let body = serde_json::to_vec(r).map_err(backend)?;
        match self.kv.update(&r.item.item_id, body.into(), revision).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(backend(format!("update {}: {e}", r.item.item_id))),
        }
    }

    async fn publish(&self, r: &Record) -> Result<(), StoreError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", r.item.item_id.as_str());
        self.js
            .publish_with_headers(subject(r.item.kind), headers, r.item.item_id.clone().into())
            .await
            .map_err(|e| backend(format!("publish {}: {e}", r.item.item_id)))?
            .await
            .map_err(|e| backend(format!("publish {}: {e}", r.item.item_id)))?;
        Ok(())
    }

    async fn enqueue(&self, work: NewWork) -> Result<String, StoreError> {
        if work.max_attempts == 0 {
            return Err(StoreError::Invalid(
                "max_attempts must be at least 1".into(),
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        let mut r = Record {
            item: WorkItem {
                item_id: id.clone(),
                kind: work.kind,
                config_key: work.config_key,
                priority: work.priority,
                payload: work.payload,
                status: WorkStatus::Pending,
                attempts: 0,
                max_attempts: work.max_attempts,
                claimed_by: None,
                lease_expires_at: None,
                last_error: None,
            },
            created_ms: now,
            updated_ms: now,
            result: None,
            published: false,
        };
        let body = serde_json::to_vec(&r).map_err(backend)?;
        let rev = self
            .kv
            .create(&id, body.into())
            .await
            .map_err(|e| backend(format!("create {id}: {e}")))?;
        if let Err(e) = self.publish(&r).await {
            // Leave nothing half-made: no record without a message.
            let _ = self.kv.purge(&id).await;
            return Err(e);
        }
        r.published = true;
        // A claim may already have moved it on; then it is published anyway.
        let _ = self.swap(&r, rev).await?;
        Ok(id)
    }

    /// Raises the fence to `token` (compare-and-set), refusing a lower one.
    async fn fence(&self, token: u64) -> Result<(), StoreError> {
        for _ in 0..16 {
            let entry = self.kv.entry(FENCE_KEY).await.map_err(backend)?;
            let (seen, rev) = match &entry {
                Some(e) if e.operation == kv::Operation::Put => (
                    std::str::from_utf8(&e.value)
                        .ok()
                        .and_then(|s| s.trim().parse::<u64>().ok())
                        .ok_or_else(|| backend("fence value does not parse"))?,
                    Some(e.revision),
                ),
                _ => (0, None),
            };
            if token < seen {
                return Err(StoreError::Fenced { token, seen });
            }
            let body = token.to_string();
            let ok = match rev {
                Some(rev) => self.kv.update(FENCE_KEY, body.into(), rev).await.is_ok(),
                None => self.kv.create(FENCE_KEY, body.into()).await.is_ok(),
            };
            if ok {
                return Ok(());
            }
        }
        Err(backend("fence: too many concurrent writers"))
    }

    async fn consumer(&self, kind: WorkKind, lease: Duration) -> Result<PullConsumer, StoreError> {
        let mut cs = self.consumers.lock().await;
        if let Some(c) = cs.get(&kind) {
            return Ok(c.clone());
        }
        let name = format!("work_{}", kind.as_str());
        let c: PullConsumer = self
            .stream
            .get_or_create_consumer(
                &name,
                jetstream::consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: subject(kind),
                    ack_wait: lease.max(Duration::from_secs(1)),
                    max_deliver: -1,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| backend(format!("consumer {name}: {e}")))?;
        cs.insert(kind, c.clone());
        Ok(c)
    }

    async fn claim(
        &self,
        worker: String,
        kinds: Vec<WorkKind>,
        lease: Duration,
    ) -> Result<Option<WorkItem>, StoreError> {
        let kinds = if kinds.is_empty() {
            WorkKind::ALL.to_vec()
        } else {
            kinds
        };
        let mut scanned = 0;
        for kind in kinds {
            let consumer = self.consumer(kind, lease).await?;
            while scanned < CLAIM_SCAN {
                let mut batch = consumer
                    .fetch()
                    .max_messages(1)
                    .messages()
                    .await
                    .map_err(|e| backend(format!("fetch {}: {e}", kind.as_str())))?;
                let Ok(next) = tokio::time::timeout(FETCH_ANSWER, batch.next()).await else {
                    // A message the server sent after this gives up comes back after its
                    // ack wait (the lease); the item's state is untouched.
                    tracing::warn!(
                        kind = kind.as_str(),
                        "no answer to a work fetch within {} s",
                        FETCH_ANSWER.as_secs()
                    );
                    break;
                };
                let Some(msg) = next else { break };
                let msg = msg.map_err(|e| backend(format!("fetch {}: {e}", kind.as_str())))?;
                scanned += 1;
                if let Some(item) = self.take(&worker, lease, msg).await? {
                    return Ok(Some(item));
                }
            }
        }
        Ok(None)
    }

    /// Decides one delivered message: claims its item for `worker`, or settles a message
    /// that no longer stands for claimable work.
    async fn take(
        &self,
        worker: &str,
        lease: Duration,
        msg: jetstream::Message,
    ) -> Result<Option<WorkItem>, StoreError> {
        let id = String::from_utf8_lossy(&msg.payload).into_owned();
        let (m, i) = (&msg, &id);
        let ack = |kind| async move {
            m.ack_with(kind)
                .await
                .map_err(|e| backend(format!("ack {i}: {e}")))
        };
        let Some((mut r, rev)) = self.record(&id).await? else {
            // Its record is gone (retention or a failed enqueue): nothing to run.
            ack(jetstream::AckKind::Term).await?;
            return Ok(None);
        };
        let now = now_ms();
        match r.item.status {
            WorkStatus::Completed | WorkStatus::Failed => {
                ack(jetstream::AckKind::Term).await?;
                return Ok(None);
            }
            WorkStatus::Claimed => {
                let until = r.item.lease_expires_at.unwrap_or(0);
                if until > now && r.item.claimed_by.as_deref() != Some(worker) {
                    // A duplicate while another worker's lease holds: ask again after it.
                    let wait = Duration::from_millis((until - now) as u64 + 100);
                    ack(jetstream::AckKind::Nak(Some(wait))).await?;
                    return Ok(None);
                }
                // The holder's lease ran out: that attempt failed.
                failed_attempt(&mut r.item, "lease expired".into());
                if r.item.status == WorkStatus::Failed {
                    r.updated_ms = now;
                    if self.swap(&r, rev).await? {
                        ack(jetstream::AckKind::Term).await?;
                    } else {
                        ack(jetstream::AckKind::Nak(None)).await?;
                    }
                    return Ok(None);
                }
            }
            WorkStatus::Pending => {}
        }
        r.item.status = WorkStatus::Claimed;
        r.item.claimed_by = Some(worker.to_owned());
        r.item.lease_expires_at = Some(now + ms(lease));
        r.updated_ms = now;
        r.published = true;
        if !self.swap(&r, rev).await? {
            // Someone else moved it first; the message comes back if it still matters.
            ack(jetstream::AckKind::Nak(None)).await?;
            return Ok(None);
        }
        self.held().insert(id, msg);
        Ok(Some(r.item))
    }

    /// The item if `worker` holds it now, with its revision.
    async fn held_record(
        &self,
        id: &str,
        worker: &str,
    ) -> Result<Option<(Record, u64)>, StoreError> {
        Ok(self.record(id).await?.filter(|(r, _)| {
            r.item.status == WorkStatus::Claimed && r.item.claimed_by.as_deref() == Some(worker)
        }))
    }

    async fn heartbeat(
        &self,
        id: String,
        worker: String,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let Some((mut r, rev)) = self.held_record(&id, &worker).await? else {
            return Ok(false);
        };
        r.item.lease_expires_at = Some(now_ms() + ms(lease));
        r.updated_ms = now_ms();
        if !self.swap(&r, rev).await? {
            return Ok(false);
        }
        let msg = self.held().get(&id).cloned();
        if let Some(m) = msg {
            m.ack_with(jetstream::AckKind::Progress)
                .await
                .map_err(|e| backend(format!("progress {id}: {e}")))?;
        }
        Ok(true)
    }

    /// Moves a held item to `status` (completed or back to pending / failed).
    async fn finish(
        &self,
        id: String,
        worker: String,
        apply: impl FnOnce(&mut Record),
    ) -> Result<bool, StoreError> {
        let Some((mut r, rev)) = self.held_record(&id, &worker).await? else {
            return Ok(false);
        };
        apply(&mut r);
        r.updated_ms = now_ms();
        if !self.swap(&r, rev).await? {
            return Ok(false);
        }
        let msg = self.held().remove(&id);
        if let Some(m) = msg {
            let kind = if r.item.status == WorkStatus::Pending {
                jetstream::AckKind::Nak(None)
            } else {
                jetstream::AckKind::Ack
            };
            // Acked or not, the record decides; an unacked message returns and is settled
            // by the next claim.
            if let Err(e) = m.ack_with(kind).await {
                tracing::warn!(item = %id, error = %e, "work message not acked; it will be settled on redelivery");
            }
        }
        Ok(true)
    }

    /// Every item with its revision, oldest first.
    async fn all_with_revisions(&self) -> Result<Vec<(Record, u64)>, StoreError> {
        let mut keys = self.kv.keys().await.map_err(backend)?;
        let mut out = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(backend)?;
            if k == FENCE_KEY {
                continue;
            }
            if let Some(r) = self.record(&k).await? {
                out.push(r);
            }
        }
        out.sort_by_key(|(r, _)| (r.created_ms, r.item.item_id.clone()));
        Ok(out)
    }

    async fn all(&self) -> Result<Vec<Record>, StoreError> {
        Ok(self
            .all_with_revisions()
            .await?
            .into_iter()
            .map(|(r, _)| r)
            .collect())
    }

    /// Expired leases back to pending (or failed); records a crash left unpublished
    /// published.
    async fn requeue_expired(&self) -> Result<usize, StoreError> {
        let now = now_ms();
        let mut n = 0;
        // Each write is a compare-and-set on the revision read here, so a record that
        // changed since is left to whoever changed it.
        for (mut cur, rev) in self.all_with_revisions().await? {
            if cur.item.status == WorkStatus::Claimed
                && cur.item.lease_expires_at.unwrap_or(0) <= now
            {
                failed_attempt(&mut cur.item, "lease expired".into());
                cur.updated_ms = now;
                if self.swap(&cur, rev).await? {
                    n += 1;
                }
            } else if cur.item.status == WorkStatus::Pending && !cur.published {
                self.publish(&cur).await?;
                cur.published = true;
                let _ = self.swap(&cur, rev).await?;
            }
        }
        Ok(n)
    }
}

impl WorkQueue for JetStreamWorkQueue {
    fn enqueue(&self, work: &NewWork) -> Result<String, StoreError> {
        let work = work.clone();
        self.run(|i| async move { i.enqueue(work).await })
    }

    fn enqueue_fenced(&self, work: &NewWork, token: u64) -> Result<String, StoreError> {
        let work = work.clone();
        self.run(|i| async move {
            i.fence(token).await?;
            i.enqueue(work).await
        })
    }

    fn claim(
        &self,
        worker: &str,
        kinds: &[WorkKind],
        lease: Duration,
    ) -> Result<Option<WorkItem>, StoreError> {
        let (w, k) = (worker.to_owned(), kinds.to_vec());
        self.run(|i| async move { i.claim(w, k, lease).await })
    }

    fn heartbeat(&self, item_id: &str, worker: &str, lease: Duration) -> Result<bool, StoreError> {
        let (id, w) = (item_id.to_owned(), worker.to_owned());
        self.run(|i| async move { i.heartbeat(id, w, lease).await })
    }

    fn complete(
        &self,
        item_id: &str,
        worker: &str,
        result: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let (id, w, result) = (item_id.to_owned(), worker.to_owned(), result.clone());
        self.run(|i| async move {
            i.finish(id, w, |r| {
                r.item.status = WorkStatus::Completed;
                r.item.lease_expires_at = None;
                r.result = Some(result);
            })
            .await
        })
    }

    fn fail(&self, item_id: &str, worker: &str, error: &str) -> Result<bool, StoreError> {
        let (id, w, e) = (item_id.to_owned(), worker.to_owned(), error.to_owned());
        self.run(|i| async move {
            i.finish(id, w, move |r| failed_attempt(&mut r.item, e))
                .await
        })
    }

    fn requeue_expired(&self) -> Result<usize, StoreError> {
        self.run(|i| async move { i.requeue_expired().await })
    }

    fn depth(&self) -> Result<QueueDepth, StoreError> {
        self.run(|i| async move {
            let mut d = QueueDepth::default();
            for r in i.all().await? {
                match r.item.status {
                    WorkStatus::Pending => d.pending += 1,
                    WorkStatus::Claimed => d.claimed += 1,
                    WorkStatus::Completed => d.completed += 1,
                    WorkStatus::Failed => d.failed += 1,
                }
            }
            Ok(d)
        })
    }

    fn get(&self, item_id: &str) -> Result<Option<WorkItem>, StoreError> {
        let id = item_id.to_owned();
        self.run(|i| async move { Ok(i.record(&id).await?.map(|(r, _)| r.item)) })
    }

    fn held_by(&self, worker: &str) -> Result<Vec<WorkItem>, StoreError> {
        let w = worker.to_owned();
        self.run(|i| async move {
            Ok(i.all()
                .await?
                .into_iter()
                .filter(|r| {
                    r.item.status == WorkStatus::Claimed && r.item.claimed_by.as_deref() == Some(&w)
                })
                .map(|r| r.item)
                .collect())
        })
    }

    fn open_items(
        &self,
        kind: WorkKind,
        config: Option<ringrift_store::ConfigKey>,
    ) -> Result<Vec<WorkItem>, StoreError> {
        self.run(move |i| async move {
            Ok(i.all()
                .await?
                .into_iter()
                .filter(|r| {
                    r.item.kind == kind
                        && matches!(r.item.status, WorkStatus::Pending | WorkStatus::Claimed)
                        && config.is_none_or(|c| r.item.config_key == Some(c))
                })
                .map(|r| r.item)
                .collect())
        })
    }

    fn oldest_pending_ms(&self) -> Result<Option<i64>, StoreError> {
        self.run(|i| async move {
            Ok(i.all()
                .await?
                .into_iter()
                .filter(|r| r.item.status == WorkStatus::Pending)
                .map(|r| r.created_ms)
                .min())
        })
    }
}
