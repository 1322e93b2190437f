//! The shared work queue on JetStream, behind the same `WorkQueue` trait as the SQLite
//! queue, so selfplay queued on the coordinator is claimed by workers on other nodes.
//!
//! Layout (every bucket is a KV-shaped stream with one message per key):
//! * Stream `RINGRIFT_WORK` (work-queue retention), subjects `ringrift.work.<kind>`, one
//!   message per open item (`Nats-Msg-Id` = item id). A durable pull consumer per kind
//!   claims; its ack wait is the lease (the lease of the first claim of that kind), a
//!   heartbeat is an in-progress ack. **The server judges leases**: a message it delivers
//!   again is a lease it saw expire, never a comparison of two nodes' wall clocks.
//! * Bucket `ringrift_work_open`: the record of each open (pending or claimed) item.
//! * Bucket `ringrift_work_claims`: who holds an item (worker, the ack subject of the
//!   delivery it holds, the stream sequence of that message). Created by the claim (of two
//!   claimers one create wins), changed only by compare-and-set on its revision, so a
//!   worker whose lease was taken over cannot complete the item.
//! * Buckets `ringrift_work_completed` / `ringrift_work_failed`: finished items, kept for
//!   `QueueOptions::retention` (default 1 h) and then removed by the server (the
//!   streams' max age: no scan of ours).
//! * Bucket `ringrift_work_fence` (no max age, whatever the retention: the fence never
//!   expires): key `fence`, the highest leader fencing token a fenced enqueue carried.
//!   A fenced enqueue writes its item's record unpublished, then commits by one
//!   compare-and-set of the fence key on the revision its check read: the check and the
//!   commit are one step, so a leader deposed between them (a higher token written
//!   meanwhile) is refused with `StoreError::Fenced` and its record removed. Only a
//!   committed item is published (claimable).
//!
//! Counts come from stream info (messages per bucket: keys are removed by deleting their
//! message, so there are no tombstones): `depth` is four small requests whatever the
//! history. Reads that decide ownership (claim, heartbeat, complete, fail, held_by) go to
//! the stream leader (the buckets have `allow_direct` off, so a key's get is the
//! leader's `STREAM.MSG.GET`), never a replica that may lag.
//!
//! Finishing is a short sequence of steps made safe by its first one: the holder marks its
//! claim `finishing` (compare-and-set, the decision), then writes the finished record,
//! deletes the open record and the claim and acks. A crash between steps leaves the
//! message unacked; whoever it is delivered to next finds the `finishing` claim and ends
//! the sequence. An item is therefore counted twice (open and finished) only for the few
//! milliseconds of a finish.
//!
//! Attempts are counted in the open record: a redelivery to another worker counts the
//! lost lease as a failed attempt; a redelivery to the same worker does not (it just holds
//! the item again). Differences from SQLite, documented in docs/cluster.md: within a kind
//! the order is FIFO (priority is kept and shown but does not reorder); an expired lease
//! shows as claimed until the server delivers the item again (`requeue_expired` has no
//! lease to judge: it republishes items a crashed enqueuer left unpublished).
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
use std::time::{Duration, Instant};

pub const STREAM: &str = "RINGRIFT_WORK";
/// Records of open (pending or claimed) items.
pub const OPEN_BUCKET: &str = "ringrift_work_open";
/// Who holds a claimed item.
pub const CLAIMS_BUCKET: &str = "ringrift_work_claims";
/// Completed items, kept for `retention`.
pub const COMPLETED_BUCKET: &str = "ringrift_work_completed";
/// Failed items, kept for `retention`.
pub const FAILED_BUCKET: &str = "ringrift_work_failed";
/// The leader fence (key `fence`).
pub const FENCE_BUCKET: &str = "ringrift_work_fence";
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
/// How often at most `requeue_expired` looks for records a crashed enqueuer left
/// unpublished (a read of the open bucket), and how old such a record must be.
const SWEEP_EVERY: Duration = Duration::from_secs(300);
const UNPUBLISHED_AFTER_MS: i64 = 60_000;
/// Compare-and-set retries before a write gives up.
const CAS_TRIES: usize = 16;

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

/// An item's record, as stored in the open bucket and, once finished, in the completed
/// or failed bucket. Public so that tools (the bench) can write finished records in bulk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredItem {
    /// Status is `pending` while open (claims live in their own bucket), the final status
    /// once finished.
    pub item: WorkItem,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// What the worker reported when it completed the item.
    #[serde(default)]
    pub result: Option<serde_json::Value>,
    /// False between the record's creation and its message's publication: a record left
    /// unpublished by a crash is published by `requeue_expired`.
    #[serde(default)]
    pub published: bool,
    /// The fencing token of a fenced enqueue (`None` for a plain one). A record carrying
    /// one is published only once its commit, the compare-and-set of the fence key, is
    /// done; `requeue_expired` removes an unpublished one whose token a newer leader's
    /// has passed instead of publishing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence_token: Option<u64>,
}

/// How a holder ends its claim (written into the claim first, then carried out).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum Finish {
    Completed {
        result: serde_json::Value,
    },
    /// Out of attempts.
    Failed {
        error: String,
        attempts: u32,
    },
    /// A failed attempt with attempts left: back to pending.
    Retry {
        error: String,
        attempts: u32,
    },
}

/// Who holds an item, in the claims bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claim {
    worker: String,
    /// The ack subject of the delivery the holder holds (any process of the holder can
    /// send its in-progress acks and its final ack).
    reply: String,
    /// The stream sequence of the item's message; another message of the same item is a
    /// duplicate.
    msg_seq: u64,
    /// Shown as the item's `lease_expires_at`; the server's ack wait is what is enforced.
    lease_until_ms: i64,
    #[serde(default)]
    finishing: Option<Finish>,
}

/// How the streams and buckets are made.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// Copies of the streams and buckets (3 in a 3-node JetStream cluster).
    pub replicas: usize,
    /// How long completed and failed items are kept before the server removes them.
    pub retention: Duration,
    /// Credentials and TLS of the connection (cluster.toml `[events]`).
    pub auth: ringrift_cluster::NatsAuth,
}

/// Default of [`QueueOptions::retention`].
pub const DEFAULT_DONE_RETENTION: Duration = Duration::from_secs(3600);

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            replicas: 1,
            retention: DEFAULT_DONE_RETENTION,
            auth: ringrift_cluster::NatsAuth::default(),
        }
    }
}

/// One KV-shaped stream: its key-value handle (gets go to the leader) and its stream
/// handle (counts, deletes by sequence, scans).
struct Bucket {
    name: &'static str,
    kv: kv::Store,
    stream: stream::Stream,
}

struct Inner {
    js: jetstream::Context,
    client: async_nats::Client,
    work: stream::Stream,
    open: Bucket,
    claims: Bucket,
    completed: Bucket,
    failed: Bucket,
    fence: Bucket,
    consumers: tokio::sync::Mutex<HashMap<WorkKind, PullConsumer>>,
    last_sweep: Mutex<Option<Instant>>,
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
    /// backend = "jetstream"`: its servers, its replicas, `queue_done_retention_s`);
    /// `None` on SQLite.
    pub fn for_cluster(
        cluster: &ringrift_cluster::ClusterConfig,
        client_name: &str,
    ) -> Option<Result<Self, StoreError>> {
        match &cluster.events {
            ringrift_cluster::EventBackend::Sqlite => None,
            ringrift_cluster::EventBackend::Jetstream {
                servers,
                replicas,
                queue_done_retention,
                auth,
            } => {
                let opts = QueueOptions {
                    replicas: *replicas,
                    retention: *queue_done_retention,
                    auth: auth.clone(),
                };
                Some(Self::open(servers, client_name, opts))
            }
        }
    }

    /// Connects to `servers` and makes (or opens) the stream and the buckets. A cluster
    /// still electing its JetStream leader is waited for up to `STARTUP_WAIT`.
    pub fn open(
        servers: &[String],
        client_name: &str,
        opts: QueueOptions,
    ) -> Result<Self, StoreError> {
        if opts.retention < Duration::from_secs(1) {
            return Err(StoreError::Invalid(format!(
                "retention of finished items {:?} is under a second",
                opts.retention
            )));
        }
        let rt = OwnRuntime(Some(own_runtime()?));
        let (servers, name) = (servers.to_vec(), client_name.to_owned());
        let auth = opts.auth.clone();
        let setup = async move {
            let deadline = tokio::time::Instant::now() + STARTUP_WAIT;
            let mut pause = Duration::from_millis(250);
            loop {
                let tried = async {
                    let client =
                        crate::connect(&servers, &auth, &name, crate::FirstConnect::FailFast)
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

    /// The first half of [`WorkQueue::enqueue_fenced`]: refuses `token` if the fence holds
    /// a higher one ([`StoreError::Fenced`]) and writes the item unpublished. Public so
    /// that a test can interleave another leader between the halves.
    pub fn prepare_fenced(
        &self,
        work: &NewWork,
        token: u64,
    ) -> Result<PreparedEnqueue, StoreError> {
        let work = work.clone();
        self.run(|i| async move { i.prepare_fenced(work, token).await })
    }

    /// The second half: commits the prepared item by a compare-and-set of the fence key
    /// (its check and its write in one step), then publishes it. [`StoreError::Fenced`],
    /// and the item removed, if a higher token reached the fence since the check.
    pub fn commit_fenced(&self, prepared: PreparedEnqueue) -> Result<String, StoreError> {
        self.run(|i| async move { i.commit_fenced(prepared).await })
    }

    fn run<T: Send + 'static, F>(&self, f: impl FnOnce(Arc<Inner>) -> F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let rt = self.rt.0.as_ref().ok_or_else(|| backend("closed"))?;
        block(rt, f(self.inner.clone()))
    }
}

/// Makes (or opens) one of the queue's buckets ([`crate::kv_bucket`]).
async fn bucket(
    js: &jetstream::Context,
    name: &'static str,
    replicas: usize,
    max_age: Duration,
) -> Result<Bucket, StoreError> {
    let (kv, stream) = crate::kv_bucket(js, name, replicas, max_age)
        .await
        .map_err(backend)?;
    Ok(Bucket { name, kv, stream })
}

/// The reply to `STREAM.MSG.DELETE`.
#[derive(Deserialize)]
struct DeleteReply {
    success: bool,
}

/// The fence key's value: the highest token a fenced enqueue carried and the item whose
/// commit wrote it. An older layout stored the bare token, which still parses.
#[derive(Debug, Serialize, Deserialize)]
struct FenceValue {
    token: u64,
    #[serde(default)]
    item: Option<String>,
}

impl FenceValue {
    fn parse(raw: &[u8]) -> Result<FenceValue, StoreError> {
        let text = std::str::from_utf8(raw).map_err(|_| backend("fence value is not UTF-8"))?;
        if let Ok(token) = text.trim().parse::<u64>() {
            return Ok(FenceValue { token, item: None });
        }
        serde_json::from_str(text)
            .map_err(|e| backend(format!("fence value {text:?} does not parse: {e}")))
    }
}

/// A fenced enqueue between its check and its commit
/// ([`JetStreamWorkQueue::prepare_fenced`], [`JetStreamWorkQueue::commit_fenced`]): the
/// item's record is written but unpublished, so nothing can claim it. Dropped without a
/// commit, the record is removed by `requeue_expired` after a minute.
#[derive(Debug)]
pub struct PreparedEnqueue {
    record: StoredItem,
    record_rev: u64,
    /// The fence key's revision the check read (`None`: no fence yet).
    fence_rev: Option<u64>,
}

impl PreparedEnqueue {
    /// The id the item will have once committed.
    pub fn item_id(&self) -> &str {
        &self.record.item.item_id
    }
}

/// A new item's record (pending, unpublished), `fence_token` for a fenced enqueue.
fn new_record(work: NewWork, fence_token: Option<u64>) -> Result<StoredItem, StoreError> {
    if work.max_attempts == 0 {
        return Err(StoreError::Invalid(
            "max_attempts must be at least 1".into(),
        ));
    }
    let now = now_ms();
    Ok(StoredItem {
        item: WorkItem {
            item_id: uuid::Uuid::new_v4().to_string(),
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
        fence_token,
    })
}

impl Inner {
    async fn setup(client: async_nats::Client, opts: QueueOptions) -> Result<Inner, StoreError> {
        let js = jetstream::new(client.clone());
        let work = js
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
        let r = opts.replicas;
        let keep = opts.retention;
        Ok(Inner {
            open: bucket(&js, OPEN_BUCKET, r, Duration::ZERO).await?,
            claims: bucket(&js, CLAIMS_BUCKET, r, Duration::ZERO).await?,
            completed: bucket(&js, COMPLETED_BUCKET, r, keep).await?,
            failed: bucket(&js, FAILED_BUCKET, r, keep).await?,
            fence: bucket(&js, FENCE_BUCKET, r, Duration::ZERO).await?,
            js,
            client,
            work,
            consumers: tokio::sync::Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(None),
        })
    }

    /// `key`'s value and revision, read from the bucket's stream leader.
    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        b: &Bucket,
        key: &str,
    ) -> Result<Option<(T, u64)>, StoreError> {
        let Some(e) =
            b.kv.entry(key)
                .await
                .map_err(|e| backend(format!("{} {key}: {e}", b.name)))?
        else {
            return Ok(None);
        };
        if e.operation != kv::Operation::Put {
            return Ok(None);
        }
        let v = serde_json::from_slice(&e.value).map_err(|err| {
            backend(format!(
                "{} {key}: stored state does not parse: {err}",
                b.name
            ))
        })?;
        Ok(Some((v, e.revision)))
    }

    /// Writes `v` under `key` if it is still at `revision`; false if it changed meanwhile.
    async fn swap<T: Serialize>(
        &self,
        b: &Bucket,
        key: &str,
        v: &T,
        revision: u64,
    ) -> Result<Option<u64>, StoreError> {
        let body = serde_json::to_vec(v).map_err(backend)?;
        match b.kv.update(key, body.into(), revision).await {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(backend(format!("{} {key}: update: {e}", b.name))),
        }
    }

    /// Creates `key`; `None` if it exists already.
    async fn create<T: Serialize>(
        &self,
        b: &Bucket,
        key: &str,
        v: &T,
    ) -> Result<Option<u64>, StoreError> {
        let body = serde_json::to_vec(v).map_err(backend)?;
        match b.kv.create(key, body.into()).await {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(backend(format!("{} {key}: create: {e}", b.name))),
        }
    }

    /// Removes the message `seq` of `b` (a key at that revision); false if it is gone
    /// already (removed by someone else, or replaced by a newer revision).
    async fn remove(&self, b: &Bucket, seq: u64) -> Result<bool, StoreError> {
        let subject = format!("STREAM.MSG.DELETE.KV_{}", b.name);
        let body = serde_json::json!({ "seq": seq, "no_erase": true });
        let reply: jetstream::response::Response<DeleteReply> = self
            .js
            .request(subject, &body)
            .await
            .map_err(|e| backend(format!("{}: delete {seq}: {e}", b.name)))?;
        match reply {
            jetstream::response::Response::Ok(r) => Ok(r.success),
            jetstream::response::Response::Err { error }
                if error.error_code() == jetstream::ErrorCode::NO_MESSAGE_FOUND =>
            {
                Ok(false)
            }
            jetstream::response::Response::Err { error } => {
                Err(backend(format!("{}: delete {seq}: {error}", b.name)))
            }
        }
    }

    /// Removes `key` whatever its revision (a record nobody else may change any more).
    async fn remove_key(&self, b: &Bucket, key: &str) -> Result<(), StoreError> {
        for _ in 0..CAS_TRIES {
            let Some((_, rev)) = self.read::<serde_json::Value>(b, key).await? else {
                return Ok(());
            };
            if self.remove(b, rev).await? {
                return Ok(());
            }
        }
        Err(backend(format!("{} {key}: delete: keeps changing", b.name)))
    }

    /// Every key's latest value in `b` (an ordered consumer over the bucket). Used for the
    /// open and claims buckets only: their size is the work in flight, not the history.
    async fn scan<T: serde::de::DeserializeOwned>(
        &self,
        b: &Bucket,
    ) -> Result<Vec<(String, T, u64)>, StoreError> {
        let prefix = format!("$KV.{}.", b.name);
        let consumer = b
            .stream
            .create_consumer(jetstream::consumer::push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                filter_subject: format!("{prefix}>"),
                deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
                replay_policy: jetstream::consumer::ReplayPolicy::Instant,
                ..Default::default()
            })
            .await
            .map_err(|e| backend(format!("{}: scan: {e}", b.name)))?;
        let mut out = Vec::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(out);
        }
        let mut msgs = consumer
            .messages()
            .await
            .map_err(|e| backend(format!("{}: scan: {e}", b.name)))?;
        loop {
            let next = tokio::time::timeout(FETCH_ANSWER, msgs.next())
                .await
                .map_err(|_| backend(format!("{}: scan: no answer", b.name)))?;
            let Some(m) = next else { break };
            let m = m.map_err(|e| backend(format!("{}: scan: {e}", b.name)))?;
            let info = m
                .info()
                .map_err(|e| backend(format!("{}: scan: {e}", b.name)))?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            let key = m.subject.as_str().strip_prefix(&prefix).unwrap_or_default();
            let deleted = m
                .headers
                .as_ref()
                .and_then(|h| h.get("KV-Operation"))
                .is_some();
            if !key.is_empty() && key != FENCE_KEY && !deleted {
                let v = serde_json::from_slice(&m.payload).map_err(|err| {
                    backend(format!(
                        "{} {key}: stored state does not parse: {err}",
                        b.name
                    ))
                })?;
                out.push((key.to_owned(), v, seq));
            }
            if pending == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// Messages in `b` (its number of keys), from stream info: no record is read.
    async fn count(b: &Bucket) -> Result<u64, StoreError> {
        Ok(b.stream
            .get_info()
            .await
            .map_err(|e| backend(format!("{}: info: {e}", b.name)))?
            .state
            .messages)
    }

    async fn depth(&self) -> Result<QueueDepth, StoreError> {
        let (open, claimed, completed, failed) = tokio::try_join!(
            Self::count(&self.open),
            Self::count(&self.claims),
            Self::count(&self.completed),
            Self::count(&self.failed),
        )?;
        Ok(QueueDepth {
            pending: open.saturating_sub(claimed),
            claimed: claimed.min(open),
            completed,
            failed,
        })
    }

    async fn publish(&self, r: &StoredItem) -> Result<(), StoreError> {
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
        let r = new_record(work, None)?;
        let rev = self.create_record(&r).await?;
        self.publish_record(r, rev).await
    }

    /// Writes a new item's record, unpublished (nothing can claim it yet).
    async fn create_record(&self, r: &StoredItem) -> Result<u64, StoreError> {
        let id = &r.item.item_id;
        self.create(&self.open, id, r)
            .await?
            .ok_or_else(|| backend(format!("item id {id} exists already")))
    }

    /// Publishes the item's message (it is claimable from here on) and marks its record
    /// published; a failed publish removes the record, so nothing is left half-made.
    async fn publish_record(&self, mut r: StoredItem, rev: u64) -> Result<String, StoreError> {
        let id = r.item.item_id.clone();
        if let Err(e) = self.publish(&r).await {
            let _ = self.remove(&self.open, rev).await;
            return Err(e);
        }
        r.published = true;
        // A claim may already have moved it on; then it is published anyway.
        let _ = self.swap(&self.open, &id, &r, rev).await?;
        Ok(id)
    }

    /// The fence's token and the revision of its key, from the stream leader (`None`
    /// before the first fenced enqueue).
    async fn read_fence(&self) -> Result<Option<(u64, u64)>, StoreError> {
        let entry = self
            .fence
            .kv
            .entry(FENCE_KEY)
            .await
            .map_err(|e| backend(format!("fence: {e}")))?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                Ok(Some((FenceValue::parse(&e.value)?.token, e.revision)))
            }
            _ => Ok(None),
        }
    }

    /// The first half of a fenced enqueue: refuses a token below the fence's, and writes
    /// the item's record unpublished (nothing can claim it before the commit).
    async fn prepare_fenced(
        &self,
        work: NewWork,
        token: u64,
    ) -> Result<PreparedEnqueue, StoreError> {
        let fence = self.read_fence().await?;
        if let Some((seen, _)) = fence.filter(|&(seen, _)| token < seen) {
            return Err(StoreError::Fenced { token, seen });
        }
        let record = new_record(work, Some(token))?;
        let record_rev = self.create_record(&record).await?;
        Ok(PreparedEnqueue {
            record,
            record_rev,
            fence_rev: fence.map(|(_, rev)| rev),
        })
    }

    /// The second half, the commit: one compare-and-set of the fence key on the revision
    /// the check read, writing `token` and the item's id. It fails if anyone wrote the
    /// fence since (a newer leader raising it, or another fenced enqueue), so the check
    /// and the commit are one atomic step: a token passed between them is refused, never
    /// let through. After a failed compare-and-set the check is made again: a higher
    /// token refuses the item (its record removed), otherwise the commit is retried on
    /// the new revision. Only a committed item is published.
    async fn commit_fenced(&self, p: PreparedEnqueue) -> Result<String, StoreError> {
        let token = p
            .record
            .fence_token
            .ok_or_else(|| backend("commit of an item without a fencing token"))?;
        let id = p.record.item.item_id.clone();
        let value = FenceValue {
            token,
            item: Some(id.clone()),
        };
        let mut fence_rev = p.fence_rev;
        for _ in 0..CAS_TRIES {
            let committed = match fence_rev {
                Some(rev) => self.swap(&self.fence, FENCE_KEY, &value, rev).await?,
                None => self.create(&self.fence, FENCE_KEY, &value).await?,
            }
            .is_some();
            if committed {
                return self.publish_record(p.record, p.record_rev).await;
            }
            match self.read_fence().await? {
                Some((seen, _)) if token < seen => {
                    self.remove_key(&self.open, &id).await?;
                    return Err(StoreError::Fenced { token, seen });
                }
                now => fence_rev = now.map(|(_, rev)| rev),
            }
        }
        self.remove_key(&self.open, &id).await?;
        Err(backend("fence: too many concurrent writers"))
    }

    async fn consumer(&self, kind: WorkKind, lease: Duration) -> Result<PullConsumer, StoreError> {
        let mut cs = self.consumers.lock().await;
        if let Some(c) = cs.get(&kind) {
            return Ok(c.clone());
        }
        let name = format!("work_{}", kind.as_str());
        let c: PullConsumer = self
            .work
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

    /// Sends `kind` on an ack subject (of any delivery, from any process).
    async fn ack(&self, reply: &str, kind: jetstream::AckKind) -> Result<(), StoreError> {
        self.client
            .publish(reply.to_owned(), kind.into())
            .await
            .map_err(|e| backend(format!("ack: {e}")))
    }

    /// Decides one delivered message: claims its item for `worker`, or settles a message
    /// that no longer stands for claimable work. The server delivered it, so any lease on
    /// it has expired by the server's clock (or the holder released it).
    async fn take(
        &self,
        worker: &str,
        lease: Duration,
        msg: jetstream::Message,
    ) -> Result<Option<WorkItem>, StoreError> {
        use jetstream::AckKind::{Nak, Term};
        let id = String::from_utf8_lossy(&msg.payload).into_owned();
        let seq = msg
            .info()
            .map_err(|e| backend(format!("message of {id}: {e}")))?
            .stream_sequence;
        let reply = msg
            .reply
            .as_ref()
            .map(|r| r.to_string())
            .ok_or_else(|| backend(format!("message of {id} has no ack subject")))?;
        let Some((mut rec, rec_rev)) = self.read::<StoredItem>(&self.open, &id).await? else {
            // Finished (or a failed enqueue): end a finish a crash interrupted, drop it.
            if let Some((c, crev)) = self.read::<Claim>(&self.claims, &id).await? {
                if c.finishing.is_some() {
                    self.settle(&id, &c, crev).await?;
                } else {
                    self.remove(&self.claims, crev).await?;
                }
            }
            self.ack(&reply, Term).await?;
            return Ok(None);
        };
        let now = now_ms();
        let mine = |reply: String| Claim {
            worker: worker.to_owned(),
            reply,
            msg_seq: seq,
            lease_until_ms: now.saturating_add(ms(lease)),
            finishing: None,
        };
        let claim = match self.read::<Claim>(&self.claims, &id).await? {
            None => {
                let c = mine(reply.clone());
                if self.create(&self.claims, &id, &c).await?.is_none() {
                    // Claimed meanwhile; the message is settled when it comes back.
                    self.ack(&reply, Nak(None)).await?;
                    return Ok(None);
                }
                c
            }
            Some((c, _)) if c.msg_seq != seq => {
                // A second message of one item (republished after a crash): a duplicate.
                self.ack(&reply, Term).await?;
                return Ok(None);
            }
            Some((c, crev)) if c.finishing.is_some() => {
                let done = !matches!(c.finishing, Some(Finish::Retry { .. }));
                self.settle(&id, &c, crev).await?;
                self.ack(&reply, if done { Term } else { Nak(None) })
                    .await?;
                return Ok(None);
            }
            Some((c, crev)) if c.worker == worker => {
                // Delivered again to the worker holding it: not a failed attempt.
                let c = mine(reply.clone());
                if self.swap(&self.claims, &id, &c, crev).await?.is_none() {
                    self.ack(&reply, Nak(None)).await?;
                    return Ok(None);
                }
                c
            }
            Some((c, crev)) => {
                // The holder's lease expired on the server: that attempt failed.
                let attempts = rec.item.attempts + 1;
                let error = format!("lease expired (held by {})", c.worker);
                if attempts >= rec.item.max_attempts {
                    let mut end = mine(reply.clone());
                    end.finishing = Some(Finish::Failed { error, attempts });
                    if let Some(rev) = self.swap(&self.claims, &id, &end, crev).await? {
                        self.settle(&id, &end, rev).await?;
                        self.ack(&reply, Term).await?;
                    } else {
                        self.ack(&reply, Nak(None)).await?;
                    }
                    return Ok(None);
                }
                let c = mine(reply.clone());
                if self.swap(&self.claims, &id, &c, crev).await?.is_none() {
                    self.ack(&reply, Nak(None)).await?;
                    return Ok(None);
                }
                rec = self
                    .count_attempt(&id, attempts, &error)
                    .await?
                    .unwrap_or(rec);
                c
            }
        };
        if !rec.published {
            rec.published = true;
            let _ = self.swap(&self.open, &id, &rec, rec_rev).await?;
        }
        Ok(Some(view(rec, Some(&claim))))
    }

    /// Raises the item's attempts to `attempts` with `error` (idempotent: a record already
    /// there is left alone). The new record, or `None` if the item is gone.
    async fn count_attempt(
        &self,
        id: &str,
        attempts: u32,
        error: &str,
    ) -> Result<Option<StoredItem>, StoreError> {
        for _ in 0..CAS_TRIES {
            let Some((mut r, rev)) = self.read::<StoredItem>(&self.open, id).await? else {
                return Ok(None);
            };
            if r.item.attempts >= attempts {
                return Ok(Some(r));
            }
            r.item.attempts = attempts;
            r.item.last_error = Some(error.to_owned());
            r.updated_ms = now_ms();
            if self.swap(&self.open, id, &r, rev).await?.is_some() {
                return Ok(Some(r));
            }
        }
        Err(backend(format!("item {id}: attempts keep changing")))
    }

    /// Carries out a claim's `finishing` (any process may, any number of times): the
    /// finished record written and the open one removed, or the attempt counted; then the
    /// claim removed. The message's ack is the caller's.
    async fn settle(&self, id: &str, c: &Claim, claim_rev: u64) -> Result<(), StoreError> {
        match &c.finishing {
            None => return Err(backend(format!("item {id}: settle without an outcome"))),
            Some(Finish::Retry { error, attempts }) => {
                self.count_attempt(id, *attempts, error).await?;
            }
            Some(fin) => {
                if let Some((mut r, _)) = self.read::<StoredItem>(&self.open, id).await? {
                    r.updated_ms = now_ms();
                    r.item.claimed_by = None;
                    r.item.lease_expires_at = None;
                    let to = if let Finish::Failed { error, attempts } = fin {
                        r.item.status = WorkStatus::Failed;
                        r.item.attempts = r.item.attempts.max(*attempts);
                        r.item.last_error = Some(error.clone());
                        &self.failed
                    } else {
                        r.item.status = WorkStatus::Completed;
                        if let Finish::Completed { result } = fin {
                            r.result = Some(result.clone());
                        }
                        &self.completed
                    };
                    // Written by the first settler; a second finds it there.
                    let _ = self.create(to, id, &r).await?;
                    self.remove_key(&self.open, id).await?;
                }
            }
        }
        self.remove(&self.claims, claim_rev).await?;
        Ok(())
    }

    /// The claim of `id` if `worker` holds it and is not finishing it, from the leader.
    async fn held_claim(&self, id: &str, worker: &str) -> Result<Option<(Claim, u64)>, StoreError> {
        Ok(self
            .read::<Claim>(&self.claims, id)
            .await?
            .filter(|(c, _)| c.worker == worker && c.finishing.is_none()))
    }

    async fn heartbeat(
        &self,
        id: String,
        worker: String,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let Some((mut c, rev)) = self.held_claim(&id, &worker).await? else {
            return Ok(false);
        };
        c.lease_until_ms = now_ms().saturating_add(ms(lease));
        if self.swap(&self.claims, &id, &c, rev).await?.is_none() {
            return Ok(false);
        }
        // The server's lease: the in-progress ack restarts the message's ack wait.
        self.ack(&c.reply, jetstream::AckKind::Progress).await?;
        self.client
            .flush()
            .await
            .map_err(|e| backend(format!("progress {id}: {e}")))?;
        Ok(true)
    }

    /// Ends a held item with `outcome(attempts of the record)`; false if `worker` does not
    /// hold it.
    async fn finish(
        &self,
        id: String,
        worker: String,
        outcome: impl FnOnce(&StoredItem) -> Finish,
    ) -> Result<bool, StoreError> {
        let Some((mut c, rev)) = self.held_claim(&id, &worker).await? else {
            return Ok(false);
        };
        let Some((r, _)) = self.read::<StoredItem>(&self.open, &id).await? else {
            return Ok(false);
        };
        let fin = outcome(&r);
        let ack = match fin {
            Finish::Retry { .. } => jetstream::AckKind::Nak(None),
            _ => jetstream::AckKind::Ack,
        };
        c.finishing = Some(fin);
        // The decision: from here on the outcome is this worker's, whoever carries it out.
        let Some(rev) = self.swap(&self.claims, &id, &c, rev).await? else {
            return Ok(false);
        };
        self.settle(&id, &c, rev).await?;
        // Acked or not, the buckets decide; an unacked message returns and is settled by
        // the next claim.
        if let Err(e) = self.ack(&c.reply, ack).await {
            tracing::warn!(item = %id, error = %e, "work message not acked; it will be settled on redelivery");
        }
        Ok(true)
    }

    /// An item by id: open (with its claim) or finished.
    async fn get(&self, id: &str) -> Result<Option<WorkItem>, StoreError> {
        if let Some((r, _)) = self.read::<StoredItem>(&self.open, id).await? {
            let c = self.read::<Claim>(&self.claims, id).await?.map(|(c, _)| c);
            return Ok(Some(view(r, c.as_ref())));
        }
        for b in [&self.completed, &self.failed] {
            if let Some((r, _)) = self.read::<StoredItem>(b, id).await? {
                return Ok(Some(r.item));
            }
        }
        Ok(None)
    }

    /// Open items as the trait shows them (a scan of the open and claims buckets: the
    /// work in flight, never the finished history), oldest first.
    async fn open_views(&self) -> Result<Vec<(StoredItem, Option<Claim>)>, StoreError> {
        let (open, claims) = tokio::try_join!(
            self.scan::<StoredItem>(&self.open),
            self.scan::<Claim>(&self.claims)
        )?;
        let mut claims: HashMap<String, Claim> =
            claims.into_iter().map(|(k, c, _)| (k, c)).collect();
        let mut out: Vec<_> = open
            .into_iter()
            .map(|(k, r, _)| (r, claims.remove(&k)))
            .collect();
        out.sort_by(|a, b| {
            (a.0.created_ms, &a.0.item.item_id).cmp(&(b.0.created_ms, &b.0.item.item_id))
        });
        Ok(out)
    }

    async fn held_by(&self, worker: String) -> Result<Vec<WorkItem>, StoreError> {
        let mut out = Vec::new();
        for (id, c, _) in self.scan::<Claim>(&self.claims).await? {
            if c.worker != worker || c.finishing.is_some() {
                continue;
            }
            // The scan may come from a replica; whether it is still held is the leader's.
            let Some((c, _)) = self.held_claim(&id, &worker).await? else {
                continue;
            };
            if let Some((r, _)) = self.read::<StoredItem>(&self.open, &id).await? {
                out.push((r.created_ms, view(r, Some(&c))));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out.into_iter().map(|(_, i)| i).collect())
    }

    /// Republishes records a crash left between their creation and their message (a scan
    /// of the open bucket, at most every `SWEEP_EVERY`). Leases need nothing here: the
    /// server delivers an item again when its lease ends. Returns how many were published.
    async fn requeue_expired(&self) -> Result<usize, StoreError> {
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
                return Ok(0);
            }
            *last = Some(Instant::now());
        }
        let now = now_ms();
        let mut n = 0;
        for (id, mut r, rev) in self.scan::<StoredItem>(&self.open).await? {
            if r.published || now - r.created_ms < UNPUBLISHED_AFTER_MS {
                continue;
            }
            if let Some(token) = r.fence_token {
                // A fenced enqueue that never returned (crashed, refused, or prepared and
                // dropped): whether it committed is not known, and a newer leader may
                // have raised the fence since, so it is dropped, never published late.
                tracing::warn!(item = %id, token, "removed a fenced work item its enqueue left uncommitted");
                self.remove(&self.open, rev).await?;
                continue;
            }
            self.publish(&r).await?;
            r.published = true;
            let _ = self.swap(&self.open, &id, &r, rev).await?;
            n += 1;
        }
        if n > 0 {
            tracing::warn!(
                items = n,
                "published work items a crashed enqueue left behind"
            );
        }
        Ok(n)
    }
}

/// An open item as the trait shows it: its record with its claim.
fn view(r: StoredItem, c: Option<&Claim>) -> WorkItem {
    let mut item = r.item;
    match c {
        None => {}
        Some(c) => match &c.finishing {
            None => {
                item.status = WorkStatus::Claimed;
                item.claimed_by = Some(c.worker.clone());
                item.lease_expires_at = Some(c.lease_until_ms);
            }
            Some(Finish::Completed { .. }) => item.status = WorkStatus::Completed,
            Some(Finish::Failed { error, attempts }) => {
                item.status = WorkStatus::Failed;
                item.attempts = item.attempts.max(*attempts);
                item.last_error = Some(error.clone());
            }
            Some(Finish::Retry { error, attempts }) => {
                item.attempts = item.attempts.max(*attempts);
                item.last_error = Some(error.clone());
            }
        },
    }
    item
}

impl WorkQueue for JetStreamWorkQueue {
    fn enqueue(&self, work: &NewWork) -> Result<String, StoreError> {
        let work = work.clone();
        self.run(|i| async move { i.enqueue(work).await })
    }

    fn enqueue_fenced(&self, work: &NewWork, token: u64) -> Result<String, StoreError> {
        let work = work.clone();
        self.run(|i| async move {
            let p = i.prepare_fenced(work, token).await?;
            i.commit_fenced(p).await
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
        self.run(|i| async move { i.finish(id, w, |_| Finish::Completed { result }).await })
    }

    fn fail(&self, item_id: &str, worker: &str, error: &str) -> Result<bool, StoreError> {
        let (id, w, error) = (item_id.to_owned(), worker.to_owned(), error.to_owned());
        self.run(|i| async move {
            i.finish(id, w, move |r| {
                let attempts = r.item.attempts + 1;
                if attempts >= r.item.max_attempts {
                    Finish::Failed { error, attempts }
                } else {
                    Finish::Retry { error, attempts }
                }
            })
            .await
        })
    }

    fn requeue_expired(&self) -> Result<usize, StoreError> {
        self.run(|i| async move { i.requeue_expired().await })
    }

    fn depth(&self) -> Result<QueueDepth, StoreError> {
        self.run(|i| async move { i.depth().await })
    }

    fn get(&self, item_id: &str) -> Result<Option<WorkItem>, StoreError> {
        let id = item_id.to_owned();
        self.run(|i| async move { i.get(&id).await })
    }

    fn held_by(&self, worker: &str) -> Result<Vec<WorkItem>, StoreError> {
        let w = worker.to_owned();
        self.run(|i| async move { i.held_by(w).await })
    }

    fn open_items(
        &self,
        kind: WorkKind,
        config: Option<ringrift_store::ConfigKey>,
    ) -> Result<Vec<WorkItem>, StoreError> {
        self.run(move |i| async move {
            Ok(i.open_views()
                .await?
                .into_iter()
                .filter(|(r, _)| {
                    r.item.kind == kind && config.is_none_or(|c| r.item.config_key == Some(c))
                })
                .map(|(r, c)| view(r, c.as_ref()))
                .filter(|i| matches!(i.status, WorkStatus::Pending | WorkStatus::Claimed))
                .collect())
        })
    }

    fn oldest_pending_ms(&self) -> Result<Option<i64>, StoreError> {
        self.run(|i| async move {
            Ok(i.open_views()
                .await?
                .into_iter()
                .filter(|(_, c)| {
                    c.as_ref()
                        .is_none_or(|c| matches!(c.finishing, Some(Finish::Retry { .. })))
                })
                .map(|(r, _)| r.created_ms)
                .min())
        })
    }
}
