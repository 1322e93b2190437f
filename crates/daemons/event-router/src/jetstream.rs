//! The router's log on a NATS JetStream cluster (`[events] backend = "jetstream"` in
//! cluster.toml): the same [`Backend`] as the SQLite log, with replication, consensus and
//! redelivery left to JetStream.
//!
//! Mapping (differences from the SQLite log are listed in `docs/router.md`):
//! * events: stream `RINGRIFT_EVENTS`, subject `ringrift.events.<TYPE>`, `replicas` from
//!   cluster.toml, file storage; the payload is the wire `Event`; `Nats-Msg-Id` = the event
//!   id with `duplicate_window` = `dedup_window_s`, so a duplicate is acked with the
//!   original's seq and `duplicate`; seq = stream sequence; retention = the stream's
//!   max age / messages / bytes.
//! * a durable consumer: a durable pull consumer (name escaped by [`token`]) with explicit
//!   acks, `ack_wait`, `max_ack_pending` and no delivery cap of the server's: this router
//!   counts the failures, the server's delivery count less the deliveries that did not
//!   count, and a delivery past `max_deliver` failures is never handed out but
//!   dead-lettered and terminated (`AckKind::Term`). Nacks, ack-wait expiries and
//!   sessions that ended holding a started event count, as in the SQLite log; a session
//!   that ends holding an event the consumer never started (still queued at it), or
//!   that ends because the router stops, counts nothing: bucket `ringrift_router_uncounted`
//!   (key `<consumer token>.<seq>`) keeps how many deliveries of it did not count, so
//!   the count survives router restarts and is shared by every router of the cluster.
//!   A session that ends naks what it holds.
//! * dead letters: stream `RINGRIFT_DLQ`, one subject per letter
//!   (`ringrift.dlq.<consumer token>.<seq>`, one message kept per subject); a state change
//!   rewrites the record. The letter id is the stream sequence of its first record.
//!   A RETRYING record is seen by the consumer's sessions (a plain subscription on its
//!   subjects, plus a scan when a session starts) and delivered from the letter's copy.

use crate::RouterConfig;
use crate::backend::{AckOp, Backend, Deliveries};
use crate::log::{
    DL_DEAD, DL_DELIVERED, DL_GIVEN_UP, DL_RETRYING, Filter, Stored, matches, router_now_ms,
    state_name,
};
use crate::metrics::Metrics;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures_util::StreamExt;
use prost::Message as _;
use ringrift_proto::{Event, wire};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::Status;

pub const EVENTS_STREAM: &str = "RINGRIFT_EVENTS";
pub const DLQ_STREAM: &str = "RINGRIFT_DLQ";
/// Deliveries that did not count as failures, per consumer and seq.
pub const UNCOUNTED_BUCKET: &str = "ringrift_router_uncounted";
/// How long an uncounted-deliveries key outlives its last change (an event acked or
/// dead-lettered removes it; this bounds what a lost removal leaves).
const UNCOUNTED_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
const EVENTS_SUBJECTS: &str = "ringrift.events.>";

/// The subject of an event type.
pub fn subject(t: i32) -> String {
    let name = wire::EventType::try_from(t)
        .map(|t| t.as_str_name())
        .unwrap_or("UNKNOWN");
    format!("ringrift.events.{name}")
}

/// A consumer name as a JetStream durable name and subject token: `[A-Za-z0-9_-]` kept,
/// every other byte `=hh` (reversible, so names never collide).
pub fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02x}"));
        }
    }
    out
}

/// The inverse of [`token`]; `None` for a name this router did not make.
pub fn untoken(t: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(t.len());
    let mut it = t.bytes();
    while let Some(b) = it.next() {
        if b == b'=' {
            let hex = [it.next()?, it.next()?];
            bytes.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    String::from_utf8(bytes).ok()
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("JetStream {what}: {e}"))
}

/// One delivery this router handed out and awaits an ack or nack for.
enum Held {
    Msg(Box<jetstream::Message>),
    Letter(Letter),
}

struct Pending {
    held: Held,
    /// The session that delivered it (its end naks what it still holds).
    session: u64,
    /// When it was handed to the session, in this router's delivery order: a cumulative
    /// ack covers only what its session delivered no later than the acked event.
    order: u64,
    /// The consumer marked it started (an in-progress ack without `queued`).
    started: bool,
    /// The consumer's newest report said it is queued, not started: if the server
    /// redelivers it (its ack wait ran out behind another event's handling), that
    /// delivery does not count.
    queued: bool,
}

/// A running durable session: `stop` ends it, `done` is cancelled once it released
/// what it held.
struct Live {
    id: u64,
    stop: tokio_util::sync::CancellationToken,
    done: tokio_util::sync::CancellationToken,
}

/// A dead letter as stored in `RINGRIFT_DLQ`.
#[derive(Clone, Debug)]
struct Letter {
    wire: wire::DeadLetter,
    event: bytes::Bytes,
}

impl Letter {
    fn subject(&self) -> String {
        format!(
            "ringrift.dlq.{}.{}",
            token(&self.wire.consumer),
            self.wire.seq
        )
    }

    fn headers(&self) -> HeaderMap {
        let l = &self.wire;
        let mut h = HeaderMap::new();
        let clean: String = l
            .reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        for (k, v) in [
            ("Rr-Letter", l.id.to_string()),
            ("Rr-Consumer", token(&l.consumer)),
            ("Rr-Seq", l.seq.to_string()),
            ("Rr-Type", l.r#type.to_string()),
            ("Rr-Reason", clean),
            ("Rr-Failures", l.failures.to_string()),
            ("Rr-Retries", l.retries.to_string()),
            ("Rr-Dead-Ms", l.dead_at_unix_ms.to_string()),
            ("Rr-Last-Retry-Ms", l.last_retry_unix_ms.to_string()),
            ("Rr-State", l.state.to_string()),
        ] {
            h.insert(k, v.as_str());
        }
        h
    }

    /// Reads a record; `seq` is its stream sequence (the id of a first record).
    fn parse(headers: Option<&HeaderMap>, payload: bytes::Bytes, seq: u64) -> Option<Letter> {
        let h = headers?;
        let get = |k: &str| h.get(k).map(|v| v.as_str().to_owned());
        let num = |k: &str| get(k).and_then(|v| v.parse::<i64>().ok());
        let id = num("Rr-Letter")
            .filter(|id| *id > 0)
            .map_or(seq, |id| id as u64);
        Some(Letter {
            wire: wire::DeadLetter {
                id,
                consumer: untoken(&get("Rr-Consumer")?)?,
                seq: num("Rr-Seq")? as u64,
                r#type: num("Rr-Type")? as i32,
                reason: get("Rr-Reason").unwrap_or_default(),
                failures: num("Rr-Failures")? as u32,
                retries: num("Rr-Retries")? as u32,
                dead_at_unix_ms: num("Rr-Dead-Ms")?,
                last_retry_unix_ms: num("Rr-Last-Retry-Ms")?,
                state: num("Rr-State")? as i32,
            },
            event: payload,
        })
    }

    fn event(&self) -> Option<wire::Event> {
        let mut ev = wire::Event::decode(self.event.as_ref()).ok()?;
        ev.seq = self.wire.seq;
        Some(ev)
    }
}

pub struct JetStreamBroker {
    cfg: RouterConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    events: stream::Stream,
    dlq: stream::Stream,
    /// [`UNCOUNTED_BUCKET`].
    uncounted: jetstream::kv::Store,
    /// Sessions that marked at least one delivery started; one that never does is read as
    /// an in-order reader, whose oldest held delivery is the one it was on.
    marking: Mutex<std::collections::HashSet<u64>>,
    /// consumer name -> stream seq -> what this router delivered and awaits.
    held: Mutex<HashMap<String, HashMap<u64, Pending>>>,
    sessions: std::sync::atomic::AtomicU64,
    /// Deliveries handed out so far ([`Pending::order`]).
    deliveries: std::sync::atomic::AtomicU64,
    /// consumer name -> its live session on this router (a new one replaces it).
    live: Mutex<HashMap<String, Live>>,
    /// Held while a publish call sends its messages, so the seqs of concurrent calls
    /// (a PublishStream's pipelined batches) follow the order the events came in.
    send_lock: tokio::sync::Mutex<()>,
    metrics: Metrics,
    closing: tokio_util::sync::CancellationToken,
}

impl JetStreamBroker {
    /// Connects to `servers` and creates (or opens) the two streams, retrying for up to
    /// 60 s while the JetStream cluster elects its leaders.
    pub async fn connect(
        cfg: RouterConfig,
        servers: &[String],
        auth: &ringrift_cluster::NatsAuth,
        replicas: usize,
    ) -> anyhow::Result<Arc<JetStreamBroker>> {
        let client = ringrift_nats::connect(
            servers,
            auth,
            "ringrift-event-router",
            ringrift_nats::FirstConnect::Background,
        )
        .await
        .map_err(|e| anyhow::anyhow!("events.servers: {e}"))?;
        let js = jetstream::new(client.clone());
        let events_cfg = stream::Config {
            name: EVENTS_STREAM.into(),
            subjects: vec![EVENTS_SUBJECTS.into()],
            num_replicas: replicas,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(cfg.dedup_window_s),
            max_age: Duration::from_secs(cfg.retention_max_age_s),
            max_messages: i64::try_from(cfg.retention_max_events).unwrap_or(i64::MAX),
            max_bytes: i64::try_from(cfg.retention_max_bytes).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let dlq_cfg = stream::Config {
            name: DLQ_STREAM.into(),
            subjects: vec!["ringrift.dlq.>".into()],
            num_replicas: replicas,
            storage: stream::StorageType::File,
            max_messages_per_subject: 1,
            duplicate_window: Duration::from_secs(cfg.dedup_window_s),
            ..Default::default()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let (events, dlq, uncounted) = loop {
            let r = async {
                let e = js.get_or_create_stream(events_cfg.clone()).await?;
                let d = js.get_or_create_stream(dlq_cfg.clone()).await?;
                let (u, _) =
                    ringrift_nats::kv_bucket(&js, UNCOUNTED_BUCKET, replicas, UNCOUNTED_MAX_AGE)
                        .await?;
                Ok::<_, async_nats::Error>((e, d, u))
            }
            .await;
            match r {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    tracing::info!(error = %e, "JetStream not ready yet; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => anyhow::bail!("JetStream streams not available after 60 s: {e}"),
            }
        };
        Ok(Arc::new(JetStreamBroker {
            cfg,
            client,
            js,
            events,
            dlq,
            uncounted,
            marking: Mutex::new(std::collections::HashSet::new()),
            held: Mutex::new(HashMap::new()),
            sessions: std::sync::atomic::AtomicU64::new(0),
            deliveries: std::sync::atomic::AtomicU64::new(0),
            live: Mutex::new(HashMap::new()),
            send_lock: tokio::sync::Mutex::new(()),
            metrics: Metrics::default(),
            closing: tokio_util::sync::CancellationToken::new(),
        }))
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<u64, Pending>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next [`Pending::order`].
    fn next_order(&self) -> u64 {
        self.deliveries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Records a delivery `session` of `consumer` awaits an ack for.
    fn hold(&self, consumer: &str, seq: u64, held: Held, session: u64) {
        let order = self.next_order();
        self.held().entry(consumer.to_owned()).or_default().insert(
            seq,
            Pending {
                held,
                session,
                order,
                started: false,
                queued: false,
            },
        );
    }

    fn marking(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<u64>> {
        self.marking.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn uncounted_key(consumer: &str, seq: u64) -> String {
        format!("{}.{seq}", token(consumer))
    }

    /// How many deliveries of `seq` to `consumer` did not count as failures, and the
    /// key's revision (from the stream leader).
    async fn uncounted(&self, consumer: &str, seq: u64) -> Result<(u32, Option<u64>), Status> {
        let key = Self::uncounted_key(consumer, seq);
        match self
            .uncounted
            .entry(&key)
            .await
            .map_err(|e| unavailable("uncounted deliveries", e))?
        {
            Some(e) if e.operation == jetstream::kv::Operation::Put => {
                let n = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|v| v.parse::<u32>().ok())
                    .ok_or_else(|| {
                        Status::internal(format!("{UNCOUNTED_BUCKET} {key}: not a count"))
                    })?;
                Ok((n, Some(e.revision)))
            }
            _ => Ok((0, None)),
        }
    }

    /// Notes one more delivery of `seq` to `consumer` that does not count as a failure.
    async fn add_uncounted(&self, consumer: &str, seq: u64) -> Result<(), Status> {
        let key = Self::uncounted_key(consumer, seq);
        for _ in 0..16 {
            let (n, rev) = self.uncounted(consumer, seq).await?;
            let body: bytes::Bytes = (n + 1).to_string().into();
            let done = match rev {
                Some(rev) => self.uncounted.update(&key, body, rev).await.is_ok(),
                None => self.uncounted.create(&key, body).await.is_ok(),
            };
            if done {
                return Ok(());
            }
        }
        Err(Status::unavailable(format!(
            "{UNCOUNTED_BUCKET} {key}: keeps changing"
        )))
    }

    /// Forgets the uncounted deliveries of a seq that left the consumer (acked or
    /// dead-lettered); only a redelivered message can have any.
    async fn forget_uncounted(&self, consumer: &str, m: &jetstream::Message) {
        let Ok(info) = m.info() else { return };
        if info.delivered <= 1 {
            return;
        }
        let key = Self::uncounted_key(consumer, info.stream_sequence);
        if let Err(e) = self.uncounted.purge(&key).await {
            tracing::debug!(consumer, key, error = %e, "uncounted deliveries not removed");
        }
    }

    /// The failed deliveries of a held message, its delivery included: the server's
    /// delivery count less those that did not count (the bucket is read only for a
    /// message delivered before).
    async fn failures(&self, consumer: &str, m: &jetstream::Message) -> Result<u32, Status> {
        let info = m.info().map_err(|e| Status::internal(e.to_string()))?;
        let delivered = u32::try_from(info.delivered).unwrap_or(u32::MAX);
        if delivered <= 1 {
            return Ok(delivered);
        }
        let (uncounted, _) = self.uncounted(consumer, info.stream_sequence).await?;
        Ok(delivered.saturating_sub(uncounted))
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self, consumer: &str, seq: u64) -> Result<Pending, Status> {
        self.held()
            .get_mut(consumer)
            .and_then(|m| m.remove(&seq))
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "seq {seq} is not awaiting an ack from consumer {consumer:?} on this router"
                ))
            })
    }

    /// Writes a letter record and returns its id (the first record's stream sequence).
    async fn write_letter(&self, l: &Letter, first: bool) -> Result<u64, Status> {
        let mut h = l.headers();
        if first {
            h.insert("Rr-Letter", "0");
            h.insert(
                async_nats::header::NATS_MESSAGE_ID,
                format!("dlq:{}:{}", token(&l.wire.consumer), l.wire.seq).as_str(),
            );
        }
        let ack = self
            .js
            .publish_with_headers(l.subject(), h, l.event.clone())
            .await
            .map_err(|e| unavailable("dead letter", e))?
            .await
            .map_err(|e| unavailable("dead letter", e))?;
        Ok(if first { ack.sequence } else { l.wire.id })
    }

    /// Dead-letters a held JetStream delivery and terminates it.
    async fn dead_letter(
        &self,
        consumer: &str,
        msg: &jetstream::Message,
        failures: u32,
        reason: &str,
    ) -> Result<(), Status> {
        let seq = msg
            .info()
            .map_err(|e| Status::internal(e.to_string()))?
            .stream_sequence;
        let t = wire::Event::decode(msg.payload.as_ref()).map_or(0, |e| e.r#type);
        let letter = Letter {
            wire: wire::DeadLetter {
                id: 0,
                consumer: consumer.to_owned(),
                seq,
                r#type: t,
                reason: reason.chars().take(2000).collect(),
                failures,
                retries: 0,
                dead_at_unix_ms: router_now_ms(),
                last_retry_unix_ms: 0,
                state: DL_DEAD,
            },
            event: msg.payload.clone(),
        };
        self.write_letter(&letter, true).await?;
        msg.double_ack_with(AckKind::Term)
            .await
            .map_err(|e| unavailable("terminate", e))?;
        self.forget_uncounted(consumer, msg).await;
        self.metrics.dead_lettered.inc();
        tracing::warn!(consumer, seq, failures, reason, "event dead-lettered");
        Ok(())
    }

    /// Every letter (newest record of each), optionally of one consumer.
    async fn letters(&self, consumer: &str) -> Result<Vec<Letter>, Status> {
        let mut dlq = self.dlq.clone();
        let info = dlq.info().await.map_err(|e| unavailable("dlq info", e))?;
        if info.state.messages == 0 {
            return Ok(Vec::new());
        }
        let filter = if consumer.is_empty() {
            "ringrift.dlq.>".to_owned()
        } else {
            format!("ringrift.dlq.{}.*", token(consumer))
        };
        read_all(&self.dlq, filter, consumer::DeliverPolicy::All, |m| {
            let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
            Letter::parse(m.headers.as_ref(), m.payload.clone(), seq)
        })
        .await
        .map(|v| v.into_iter().flatten().collect())
    }

    async fn letter(&self, id: u64) -> Result<Letter, Status> {
        self.letters("")
            .await?
            .into_iter()
            .find(|l| l.wire.id == id)
            .ok_or_else(|| Status::not_found(format!("no dead letter {id}")))
    }

    async fn set_letter_state(
        &self,
        mut l: Letter,
        state: i32,
    ) -> Result<wire::DeadLetter, Status> {
        l.wire.state = state;
        self.write_letter(&l, false).await?;
        Ok(l.wire)
    }

    /// Naks what session `session` of `consumer` still holds: a failed delivery if the
    /// consumer had started it (a session that marked nothing started: its oldest held
    /// event), otherwise (still queued at the consumer, or the router is stopping) one
    /// that does not count. Letters go back to DEAD.
    async fn end_session(&self, consumer: &str, session: u64) {
        let marked = self.marking().remove(&session);
        let charge = !self.closing.is_cancelled();
        let mine: Vec<Pending> = {
            let mut held = self.held();
            let Some(m) = held.get_mut(consumer) else {
                return;
            };
            let mut seqs: Vec<u64> = m
                .iter()
                .filter(|(_, p)| p.session == session)
                .map(|(s, _)| *s)
                .collect();
            // Naked in seq order, they are redelivered in seq order.
            seqs.sort_unstable();
            seqs.into_iter().filter_map(|s| m.remove(&s)).collect()
        };
        let oldest = mine.iter().position(|p| matches!(p.held, Held::Msg(_)));
        for (i, p) in mine.into_iter().enumerate() {
            let started = p.started || (!marked && Some(i) == oldest);
            let r = match p.held {
                Held::Msg(m) if charge && started => match self.failures(consumer, &m).await {
                    Ok(n) if n >= self.cfg.max_deliver => {
                        let why = "the consumer ended holding it";
                        self.dead_letter(consumer, &m, n, why)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    Ok(_) => m
                        .ack_with(AckKind::Nak(None))
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
                Held::Msg(m) => {
                    let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
                    match self.add_uncounted(consumer, seq).await {
                        Ok(()) => m
                            .ack_with(AckKind::Nak(None))
                            .await
                            .map_err(|e| e.to_string()),
                        // Not noted: left to its ack wait, which counts it (a failed
                        // delivery too many, never a lost event).
                        Err(e) => Err(e.to_string()),
                    }
                }
                Held::Letter(l) => self
                    .set_letter_state(l, DL_DEAD)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            if let Err(e) = r {
                tracing::warn!(consumer, error = %e, "could not release a delivery of an ended session");
            }
        }
    }

    /// Creates (or opens) the durable pull consumer of a subscription.
    async fn open_durable(
        &self,
        req: &wire::SubscribeRequest,
    ) -> Result<consumer::PullConsumer, Status> {
        let name = &req.consumer;
        let tok = token(name);
        let deliver_policy = start_policy(req.start.as_ref(), consumer::DeliverPolicy::New)?;
        let ack_wait = match req.ack_wait_ms {
            0 => Duration::from_secs_f64(self.cfg.ack_wait_s),
            ms => Duration::from_millis(ms.into()),
        };
        let max_ack_pending = match req.max_ack_pending {
            0 => self.cfg.max_ack_pending as i64,
            n => i64::from(n),
        };
        let cfg = consumer::pull::Config {
            durable_name: Some(tok.clone()),
            description: Some(format!("ringrift consumer {name:?}")),
            deliver_policy,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait,
            // No cap of the server's: this router counts failures (deliveries that did
            // not count are not failures) and dead-letters past `max_deliver`.
            max_deliver: -1,
            max_ack_pending,
            ..Default::default()
        };
        let c: consumer::PullConsumer = self
            .events
            .get_or_create_consumer(&tok, cfg.clone())
            .await
            .map_err(|e| unavailable("consumer", e))?;
        if c.cached_info().config.max_deliver == -1 {
            return Ok(c);
        }
        // Made by an older router with the server's cap (`max_deliver + 1`): lifted, or
        // an event some of whose deliveries did not count would stop being delivered.
        match self.events.create_consumer(cfg).await {
            Ok(c) => Ok(c),
            Err(e) => {
                tracing::warn!(consumer = %name, error = %e, "could not lift the server's delivery cap of an older consumer");
                Ok(c)
            }
        }
    }

    async fn durable_session(
        self: Arc<Self>,
        name: String,
        c: consumer::PullConsumer,
        filter: Filter,
        tx: mpsc::Sender<Result<wire::Event, Status>>,
    ) -> Result<(), Status> {
        let tok = token(&name);
        let mut letters = self
            .client
            .subscribe(format!("ringrift.dlq.{tok}.*"))
            .await
            .map_err(|e| unavailable("dlq watch", e))?;
        let session = self
            .sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (stop, done) = (
            tokio_util::sync::CancellationToken::new(),
            tokio_util::sync::CancellationToken::new(),
        );
        let previous = self.live().insert(
            name.clone(),
            Live {
                id: session,
                stop: stop.clone(),
                done: done.clone(),
            },
        );
        if let Some(p) = previous {
            // The newest session replaces an older one, which first hands back what it
            // holds (so redeliveries come before newer events, in order).
            p.stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), p.done.cancelled()).await;
        }
        let me = self.clone();
        let run = async {
            // Letters a retry queued while no session of this consumer ran.
            for l in me.letters(&name).await? {
                if l.wire.state == DL_RETRYING && !me.send_letter(&name, l, session, &tx).await {
                    return Ok(());
                }
            }
            loop {
                // Pull only what the subscriber's buffer can take, so nothing sits in a
                // client-side buffer when the session ends (it would hold a delivery).
                let want = tx.capacity().clamp(1, 256);
                let mut batch = c
                    .batch()
                    .max_messages(want)
                    .expires(Duration::from_secs(1))
                    .messages()
                    .await
                    .map_err(|e| unavailable("pull", e))?;
                let mut gone = false;
                loop {
                    let msg = tokio::select! {
                        _ = me.closing.cancelled(), if !gone => { gone = true; continue }
                        _ = stop.cancelled(), if !gone => { gone = true; continue }
                        _ = tx.closed(), if !gone => { gone = true; continue }
                        m = letters.next(), if !gone => {
                            let Some(m) = m else { return Err(unavailable("dlq watch", "ended")) };
                            if let Some(l) = Letter::parse(m.headers.as_ref(), m.payload.clone(), 0)
                                && l.wire.id != 0
                                && l.wire.state == DL_RETRYING
                                && !me.send_letter(&name, l, session, &tx).await
                            {
                                gone = true;
                            }
                            continue;
                        }
                        // A pull answered by a server that died never ends by itself.
                        m = tokio::time::timeout(Duration::from_secs(3), batch.next()) => match m {
                            Err(_) => break,
                            Ok(Some(Ok(msg))) => msg,
                            Ok(Some(Err(e))) => {
                                tracing::debug!(consumer = %name, error = %e, "pull hiccup");
                                break;
                            }
                            Ok(None) => break,
                        },
                    };
                    if gone {
                        // Pulled for nobody: held until the batch ended, then handed back
                        // with the rest (naked now, the open pull would take it again).
                        if let Ok(seq) = msg.info().map(|i| i.stream_sequence) {
                            me.hold(&name, seq, Held::Msg(Box::new(msg)), session);
                        }
                        continue;
                    }
                    if !me.deliver(&name, msg, session, &filter, &tx).await? {
                        gone = true;
                    }
                }
                if gone {
                    return Ok(());
                }
            }
        };
        let r: Result<(), Status> = run.await;
        self.end_session(&name, session).await;
        {
            let mut live = self.live();
            if live.get(&name).is_some_and(|l| l.id == session) {
                live.remove(&name);
            }
        }
        done.cancel();
        r
    }

    /// Hands one pulled message to a session (or dead-letters it past `max_deliver`, or
    /// acks it when the subscription's filter skips it); false when the subscriber is gone.
    async fn deliver(
        &self,
        name: &str,
        msg: jetstream::Message,
        session: u64,
        filter: &Filter,
        tx: &mpsc::Sender<Result<wire::Event, Status>>,
    ) -> Result<bool, Status> {
        let (seq, delivered) = match msg.info() {
            Ok(i) => (
                i.stream_sequence,
                u32::try_from(i.delivered).unwrap_or(u32::MAX),
            ),
            Err(e) => {
                tracing::warn!(consumer = %name, error = %e, "message without JetStream info");
                return Ok(true);
            }
        };
        let ev = match wire::Event::decode(msg.payload.as_ref()) {
            Ok(mut ev) => {
                ev.seq = seq;
                ev
            }
            Err(e) => {
                // Not ours (someone published raw bytes): never deliverable.
                tracing::warn!(seq, error = %e, "undecodable message in the events stream");
                self.dead_letter(name, &msg, delivered, &format!("undecodable: {e}"))
                    .await?;
                return Ok(true);
            }
        };
        if !matches(filter, ev.r#type) {
            msg.ack().await.map_err(|e| unavailable("ack", e))?;
            return Ok(true);
        }
        // Sent again while held, reported queued: the server's ack wait ran out while
        // the consumer had not started it; that delivery does not count.
        let waited = self
            .held()
            .get(name)
            .and_then(|m| m.get(&seq))
            .is_some_and(|p| p.queued && !p.started);
        if waited {
            self.add_uncounted(name, seq).await?;
        }
        if delivered > self.cfg.max_deliver {
            // The deliveries before this one, less those that did not count.
            let (uncounted, _) = self.uncounted(name, seq).await?;
            let failures = (delivered - 1).saturating_sub(uncounted);
            if failures >= self.cfg.max_deliver {
                self.dead_letter(
                    name,
                    &msg,
                    failures,
                    "ack wait expired or the consumer ended holding it",
                )
                .await?;
                return Ok(true);
            }
        }
        self.hold(name, seq, Held::Msg(Box::new(msg)), session);
        self.metrics.delivered.inc();
        Ok(tx.send(Ok(ev)).await.is_ok())
    }

    /// Hands a RETRYING letter to a session; false when the subscriber is gone.
    async fn send_letter(
        &self,
        consumer: &str,
        l: Letter,
        session: u64,
        tx: &mpsc::Sender<Result<wire::Event, Status>>,
    ) -> bool {
        let Some(ev) = l.event() else {
            tracing::warn!(letter = l.wire.id, "dead letter with an undecodable event");
            return true;
        };
        {
            let mut held = self.held();
            let m = held.entry(consumer.to_owned()).or_default();
            if m.contains_key(&l.wire.seq) {
                return true;
            }
            let order = self.next_order();
            m.insert(
                l.wire.seq,
                Pending {
                    held: Held::Letter(l),
                    session,
                    order,
                    started: false,
                    queued: false,
                },
            );
        }
        self.metrics.delivered.inc();
        tx.send(Ok(ev)).await.is_ok()
    }

    /// Creates the ordered consumer of an ephemeral subscription.
    async fn open_ephemeral(
        &self,
        req: &wire::SubscribeRequest,
    ) -> Result<consumer::Consumer<consumer::pull::OrderedConfig>, Status> {
        let deliver_policy = start_policy(req.start.as_ref(), consumer::DeliverPolicy::All)?;
        self.events
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: EVENTS_SUBJECTS.into(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable("consumer", e))
    }

    async fn ephemeral_session(
        self: Arc<Self>,
        c: consumer::Consumer<consumer::pull::OrderedConfig>,
        filter: Filter,
        tx: mpsc::Sender<Result<wire::Event, Status>>,
    ) -> Result<(), Status> {
        let mut messages = c.messages().await.map_err(|e| unavailable("pull", e))?;
        loop {
            let m = tokio::select! {
                _ = self.closing.cancelled() => return Ok(()),
                _ = tx.closed() => return Ok(()),
                m = messages.next() => m,
            };
            let msg = match m {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(unavailable("pull", e)),
                None => return Ok(()),
            };
            let Ok(info) = msg.info() else { continue };
            let seq = info.stream_sequence;
            let Ok(mut ev) = wire::Event::decode(msg.payload.as_ref()) else {
                continue;
            };
            if !matches(&filter, ev.r#type) {
                continue;
            }
            ev.seq = seq;
            self.metrics.delivered.inc();
            if tx.send(Ok(ev)).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// Where a subscription starts, as a JetStream deliver policy.
fn start_policy(
    start: Option<&wire::subscribe_request::Start>,
    none: consumer::DeliverPolicy,
) -> Result<consumer::DeliverPolicy, Status> {
    use wire::subscribe_request::Start;
    Ok(match start {
        None => none,
        Some(Start::Latest(_)) => consumer::DeliverPolicy::New,
        Some(Start::FromSeq(0 | 1)) => consumer::DeliverPolicy::All,
        Some(Start::FromSeq(s)) => consumer::DeliverPolicy::ByStartSequence { start_sequence: *s },
        Some(Start::FromTimeUnixMs(ms)) => consumer::DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(*ms) * 1_000_000,
            )
            .map_err(|e| Status::invalid_argument(format!("from_time_unix_ms {ms}: {e}")))?,
        },
    })
}

/// Reads a stream (from `policy`, subjects `filter`) up to the last message that existed
/// when the read started, through an ordered consumer, mapping each message.
async fn read_all<T>(
    s: &stream::Stream,
    filter: String,
    policy: consumer::DeliverPolicy,
    mut f: impl FnMut(&jetstream::Message) -> T,
) -> Result<Vec<T>, Status> {
    let c = s
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter,
            deliver_policy: policy,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable("scan", e))?;
    let mut c2 = c.clone();
    if c2
        .info()
        .await
        .map_err(|e| unavailable("scan", e))?
        .num_pending
        == 0
    {
        return Ok(Vec::new());
    }
    let mut messages = c.messages().await.map_err(|e| unavailable("scan", e))?;
    let mut out = Vec::new();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .map_err(|_| unavailable("scan", "no message in 10 s"))?;
        let msg = match m {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(unavailable("scan", e)),
            None => return Ok(out),
        };
        out.push(f(&msg));
        if msg.info().map(|i| i.pending).unwrap_or(0) == 0 {
            return Ok(out);
        }
    }
}

#[tonic::async_trait]
impl Backend for JetStreamBroker {
    async fn publish(&self, events: Vec<Event>) -> Result<Vec<Stored>, Status> {
        // Send them all, then collect the acks in order (pipelined, one round trip).
        let mut futures = Vec::with_capacity(events.len());
        let order = self.send_lock.lock().await;
        for ev in events {
            let w = wire::Event::from(ev);
            let id = w.id.clone();
            let mut h = HeaderMap::new();
            h.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
            let f = self
                .js
                .publish_with_headers(subject(w.r#type), h, w.encode_to_vec().into())
                .await
                .map_err(|e| unavailable("publish", e))?;
            futures.push((id, f));
        }
        drop(order);
        let mut out = Vec::with_capacity(futures.len());
        for (id, f) in futures {
            let ack = f.await.map_err(|e| unavailable("publish", e))?;
            if ack.duplicate {
                self.metrics.duplicates.inc();
            } else {
                self.metrics.published.inc();
            }
            out.push(Stored {
                seq: ack.sequence,
                id,
                duplicate: ack.duplicate,
            });
        }
        Ok(out)
    }

    async fn subscribe(
        self: Arc<Self>,
        req: wire::SubscribeRequest,
        filter: Filter,
    ) -> Result<Deliveries, Status> {
        let (tx, rx) = mpsc::channel(self.cfg.consumer_buffer.max(1));
        let name = req.consumer.clone();
        let err_tx = tx.clone();
        // The consumer exists when Subscribe returns, so a publish right after is seen.
        let session = if name.is_empty() {
            let c = self.open_ephemeral(&req).await?;
            futures_util::future::Either::Left(self.ephemeral_session(c, filter, tx))
        } else {
            let c = self.open_durable(&req).await?;
            futures_util::future::Either::Right(self.durable_session(name.clone(), c, filter, tx))
        };
        tokio::spawn(async move {
            if let Err(status) = session.await {
                tracing::warn!(consumer = %name, error = %status, "delivery session ended");
                let _ = err_tx.send(Err(status)).await;
            }
        });
        Ok(rx)
    }

    async fn ack(&self, consumer: &str, seq: u64, op: AckOp) -> Result<u64, Status> {
        let cumulative = match op {
            AckOp::Ack { cumulative } => cumulative,
            AckOp::Progress { .. } => false,
        };
        if let AckOp::Progress { started } = op {
            let msg = {
                let mut held = self.held();
                let p = held.get_mut(consumer).and_then(|m| m.get_mut(&seq));
                if started && let Some(p) = p.as_ref() {
                    self.marking().insert(p.session);
                }
                match p.map(|p| {
                    p.started |= started;
                    p.queued = !p.started;
                    &p.held
                }) {
                    Some(Held::Msg(m)) => Some(m.clone()),
                    Some(Held::Letter(_)) => None,
                    None => {
                        return Err(Status::failed_precondition(format!(
                            "seq {seq} is not awaiting an ack from consumer {consumer:?} on this router"
                        )));
                    }
                }
            };
            if let Some(m) = msg {
                m.ack_with(AckKind::Progress)
                    .await
                    .map_err(|e| unavailable("progress", e))?;
            }
            return Ok(seq);
        }
        let taken: Vec<Pending> = if cumulative {
            // What the subscriber has read when it acks `seq`: the events up to `seq` its
            // session delivered no later than `seq` (a redelivery of an older seq sent
            // after it may still sit unread in the stream, and is not covered).
            let mut held = self.held();
            let m = held.entry(consumer.to_owned()).or_default();
            let Some((session, order)) = m.get(&seq).map(|p| (p.session, p.order)) else {
                return Ok(seq);
            };
            let seqs: Vec<u64> = m
                .iter()
                .filter(|(s, p)| **s <= seq && p.session == session && p.order <= order)
                .map(|(s, _)| *s)
                .collect();
            seqs.into_iter().filter_map(|s| m.remove(&s)).collect()
        } else {
            vec![self.take(consumer, seq)?]
        };
        // A cumulative ack pipelines its acks and waits for the server's reply to the
        // last one: one connection's acks are applied in order, so that reply means all
        // of them are recorded.
        let mut taken = taken;
        taken.sort_by_key(|p| match &p.held {
            Held::Msg(m) => m.info().map(|i| i.stream_sequence).unwrap_or(0),
            Held::Letter(l) => l.wire.seq,
        });
        let last_msg = taken.iter().rposition(|p| matches!(p.held, Held::Msg(_)));
        for (i, p) in taken.into_iter().enumerate() {
            match p.held {
                Held::Msg(m) if Some(i) == last_msg => {
                    m.double_ack().await.map_err(|e| unavailable("ack", e))?;
                    self.forget_uncounted(consumer, &m).await;
                }
                Held::Msg(m) => {
                    m.ack().await.map_err(|e| unavailable("ack", e))?;
                    self.forget_uncounted(consumer, &m).await;
                }
                Held::Letter(l) => {
                    self.set_letter_state(l, DL_DELIVERED).await?;
                }
            }
        }
        Ok(seq)
    }

    async fn nack(
        &self,
        consumer: &str,
        seq: u64,
        reason: &str,
    ) -> Result<wire::NackResponse, Status> {
        let p = self.take(consumer, seq)?;
        match p.held {
            Held::Letter(l) => {
                self.set_letter_state(l, DL_DEAD).await?;
                Ok(wire::NackResponse {
                    failures: 0,
                    dead_lettered: true,
                })
            }
            Held::Msg(m) => {
                let failures = self.failures(consumer, &m).await?;
                if failures >= self.cfg.max_deliver {
                    self.dead_letter(consumer, &m, failures, reason).await?;
                    Ok(wire::NackResponse {
                        failures,
                        dead_lettered: true,
                    })
                } else {
                    m.double_ack_with(AckKind::Nak(None))
                        .await
                        .map_err(|e| unavailable("nak", e))?;
                    Ok(wire::NackResponse {
                        failures,
                        dead_lettered: false,
                    })
                }
            }
        }
    }

    async fn list_dead_letters(
        &self,
        consumer: String,
        include_resolved: bool,
    ) -> Result<Vec<wire::DeadLetter>, Status> {
        let mut v: Vec<wire::DeadLetter> = self
            .letters(&consumer)
            .await?
            .into_iter()
            .map(|l| l.wire)
            .filter(|l| include_resolved || l.state == DL_DEAD || l.state == DL_RETRYING)
            .collect();
        v.sort_by_key(|l| l.id);
        Ok(v)
    }

    async fn retry_dead_letter(&self, id: u64) -> Result<wire::DeadLetter, Status> {
        let mut l = self.letter(id).await?;
        if l.wire.state != DL_DEAD {
            return Err(Status::failed_precondition(format!(
                "dead letter {id} is {}, not DEAD",
                state_name(l.wire.state)
            )));
        }
        l.wire.retries += 1;
        l.wire.last_retry_unix_ms = router_now_ms();
        self.set_letter_state(l, DL_RETRYING).await
    }

    async fn resolve_dead_letter(&self, id: u64, state: i32) -> Result<wire::DeadLetter, Status> {
        if state != DL_GIVEN_UP && state != DL_DEAD {
            return Err(Status::invalid_argument("state must be GIVEN_UP or DEAD"));
        }
        let l = self.letter(id).await?;
        self.set_letter_state(l, state).await
    }

    async fn purge_dead_letters(&self, consumer: String) -> Result<u64, Status> {
        let mut n = 0;
        for l in self.letters(&consumer).await? {
            if l.wire.state != DL_RETRYING {
                self.dlq
                    .purge()
                    .filter(l.subject())
                    .await
                    .map_err(|e| unavailable("purge", e))?;
                n += 1;
            }
        }
        Ok(n)
    }

    async fn lookup(&self, ids: Vec<String>, since: i64) -> Result<HashMap<String, u64>, Status> {
        let wanted: std::collections::HashSet<String> = ids.into_iter().collect();
        let mut events = self.events.clone();
        if events
            .info()
            .await
            .map_err(|e| unavailable("info", e))?
            .state
            .messages
            == 0
        {
            return Ok(HashMap::new());
        }
        let policy = start_policy(
            Some(&wire::subscribe_request::Start::FromTimeUnixMs(
                since.max(0),
            )),
            consumer::DeliverPolicy::All,
        )?;
        let found = read_all(&self.events, EVENTS_SUBJECTS.into(), policy, |m| {
            let id = m
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str().to_owned())?;
            let seq = m.info().ok()?.stream_sequence;
            wanted.contains(&id).then_some((id, seq))
        })
        .await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn stats(&self) -> Result<wire::StatsResponse, Status> {
        let mut events = self.events.clone();
        let info = events
            .info()
            .await
            .map_err(|e| unavailable("info", e))?
            .clone();
        let head = info.state.last_sequence;
        let mut consumers = Vec::new();
        let mut list = self.events.consumers();
        let local: std::collections::HashSet<String> = self.live().keys().cloned().collect();
        while let Some(c) = list.next().await {
            let c = c.map_err(|e| unavailable("consumers", e))?;
            let Some(name) = untoken(&c.name) else {
                continue;
            };
            consumers.push(wire::ConsumerStats {
                connected: local.contains(&name),
                name,
                ack_floor: c.ack_floor.stream_sequence,
                lag: head.saturating_sub(c.ack_floor.stream_sequence),
                pending: c.num_ack_pending as u64,
            });
        }
        consumers.sort_by(|a, b| a.name.cmp(&b.name));
        let m = &self.metrics;
        Ok(wire::StatsResponse {
            head_seq: head,
            first_seq: info.state.first_sequence,
            published: m.published.get(),
            duplicates: m.duplicates.get(),
            delivered: m.delivered.get(),
            dead_lettered: m.dead_lettered.get(),
            consumers,
        })
    }

    fn health(&self) -> Result<(), String> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            s => Err(format!("not connected to NATS ({s})")),
        }
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn closing(&self) -> &tokio_util::sync::CancellationToken {
        &self.closing
    }

    fn open_sessions(&self) -> usize {
        self.live().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_never_collide() {
        for name in ["auto_export", "a.b", "x y", "a=2e", "ünï", "a-b_c"] {
            let t = token(name);
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-=".contains(&b))
            );
            assert_eq!(untoken(&t).as_deref(), Some(name));
        }
        assert_ne!(token("a.b"), token("a=2eb"));
    }
}
