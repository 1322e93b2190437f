//! [`Publisher`]: accepted events wait in an outbox (a SQLite file for daemons, memory
//! for tools) until the router acked them; state events such as heartbeats use a
//! latest-only slot instead. One background task sends batches capped by count and by
//! encoded bytes, halving a batch the router refuses as too large or invalid.
//!
//! Nothing leaves the outbox unsent but an event the router judges malformed
//! (INVALID_ARGUMENT, or OUT_OF_RANGE / RESOURCE_EXHAUSTED for that event alone), and
//! that one goes to the outbox's `rejected` table with the reason. A refusal of the
//! sender (UNAUTHENTICATED, PERMISSION_DENIED: a wrong or missing token;
//! FAILED_PRECONDITION) is configuration, not the events' fault: they stay, the loop
//! backs off and [`Publisher::refused`] says why until a send succeeds again.

use super::outbox::Outbox;
use super::{Backoff, Client, ClientError, PublishAck, now_ms};
use ringrift_proto::{Event, wire};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use tonic::Code;

/// Most events in one `PublishBatch`.
pub const MAX_BATCH_EVENTS: usize = 256;
/// Most encoded bytes in one `PublishBatch`: half the router's 8 MiB decode limit.
pub const MAX_BATCH_BYTES: usize = 4 << 20;

struct Shared {
    latest: Mutex<Option<wire::Event>>,
    wake: Notify,
    /// Why the router refuses this sender right now (None: it does not).
    refused: Mutex<Option<String>>,
}

impl Shared {
    fn take_latest(&self) -> Option<wire::Event> {
        self.latest.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
    /// Records whether the router refuses this sender; logs each change once.
    fn set_refused(&self, why: Option<String>, waiting: usize) {
        let mut g = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if *g == why {
            return;
        }
        match &why {
            Some(w) => tracing::error!(
                reason = %w,
                waiting,
                "the router refuses this publisher; events stay in the outbox and are retried with backoff"
            ),
            None => tracing::info!(
                waiting,
                "the router accepts this publisher again; sending the outbox"
            ),
        }
        *g = why;
    }

    /// Puts an unsent state event back unless a newer one took its place.
    fn restore_latest(&self, ev: wire::Event) {
        let mut g = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(ev);
        }
    }
}

/// Wakes the send loop when the last `Publisher` handle goes, so it can finish.
struct Alive(Arc<Shared>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.wake.notify_one();
    }
}

/// A buffering, retrying publisher. Cloning shares the outbox.
#[derive(Clone)]
pub struct Publisher {
    outbox: Outbox,
    shared: Arc<Shared>,
    _alive: Arc<Alive>,
    source: String,
}

impl Publisher {
    /// A publisher with an in-memory outbox of `capacity` events (lost with the process).
    /// `source` ("daemon@node") is stamped on events that have none.
    pub fn spawn(client: Client, source: impl Into<String>, capacity: usize) -> Publisher {
        let outbox = Outbox::memory(capacity).unwrap_or_else(|e| {
            tracing::error!(error = %e, "no outbox: every publish will fail");
            Outbox::closed(capacity)
        });
        Self::start(client, source.into(), outbox)
    }

    /// A publisher whose outbox is the SQLite file `path`: events accepted before a
    /// crash are sent after the next start. At most `capacity` events wait.
    pub async fn open(
        client: Client,
        source: impl Into<String>,
        path: &Path,
        capacity: usize,
    ) -> Result<Publisher, ClientError> {
        let path = path.to_owned();
        let outbox = tokio::task::spawn_blocking(move || Outbox::open(&path, capacity))
            .await
            .map_err(|e| ClientError::Outbox(format!("open outbox: {e}")))??;
        Ok(Self::start(client, source.into(), outbox))
    }

    fn start(client: Client, source: String, outbox: Outbox) -> Publisher {
        let shared = Arc::new(Shared {
            latest: Mutex::new(None),
            wake: Notify::new(),
            refused: Mutex::new(None),
        });
        let alive = Arc::new(Alive(shared.clone()));
        tokio::spawn(send_loop(
            client,
            outbox.clone(),
            shared.clone(),
            Arc::downgrade(&alive),
        ));
        Publisher {
            outbox,
            shared,
            _alive: alive,
            source,
        }
    }

    fn prepare(&self, event: Event) -> wire::Event {
        let mut w = wire::Event::from(event);
        if w.id.is_empty() {
            w.id = uuid::Uuid::new_v4().to_string();
        }
        if w.source.is_empty() {
            w.source.clone_from(&self.source);
        }
        if w.time_unix_ms == 0 {
            w.time_unix_ms = now_ms();
        }
        w
    }

    fn append(
        &self,
        event: Event,
        stored: Option<oneshot::Sender<Result<(), ClientError>>>,
        acked: Option<oneshot::Sender<Result<PublishAck, ClientError>>>,
    ) -> Result<(), ClientError> {
        self.outbox.append(self.prepare(event), stored, acked)?;
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Accepts an event without waiting (it is in the outbox within milliseconds);
    /// `BufferFull` when `capacity` events already wait for the router.
    pub fn publish(&self, event: Event) -> Result<(), ClientError> {
        self.append(event, None, None)
    }

    /// Accepts an event and waits until the outbox holds it (for a file outbox: until
    /// it survives a crash of this process).
    pub async fn publish_stored(&self, event: Event) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.append(event, Some(tx), None)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Queues an event and waits until the router has made it durable.
    pub async fn publish_acked(&self, event: Event) -> Result<PublishAck, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.append(event, None, Some(tx))?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Publishes a state event (a heartbeat) latest-only: it replaces one not sent yet
    /// and never waits in the outbox. Never fails, never blocks.
    pub fn publish_latest(&self, event: Event) {
        let w = self.prepare(event);
        *self.shared.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(w);
        self.shared.wake.notify_one();
    }

    /// Why the router refuses this publisher (a wrong or missing token, missing rights),
    /// while it does: its events wait in the outbox meanwhile. `None` once a send
    /// succeeds (or before anything was refused).
    pub fn refused(&self) -> Option<String> {
        self.shared
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Events the router refused as malformed, kept in the outbox's `rejected` table
    /// (for a file outbox, since it was created).
    pub fn rejected(&self) -> u64 {
        self.outbox.rejected()
    }

    /// Events waiting for the router right now.
    pub fn buffered(&self) -> usize {
        let latest = self
            .shared
            .latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        self.outbox.len() + usize::from(latest)
    }
}

/// Codes a smaller batch may not get: too large, or one bad event among good ones. On a
/// batch of one event they judge that event malformed: it leaves the outbox (to its
/// `rejected` table). Every other refusal keeps the events and is retried.
fn split_helps(c: Code) -> bool {
    matches!(
        c,
        Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted
    )
}

/// Refusals of the sender rather than of an event: a wrong or missing token, missing
/// rights, a router not ready for it, a router whose disk is full
/// ([`ringrift_proto::STORAGE_FULL`]). Reported by [`Publisher::refused`]; the events
/// stay in the outbox.
fn refuses_sender(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        Code::Unauthenticated | Code::PermissionDenied | Code::FailedPrecondition
    ) || storage_full(s)
}

/// The router refuses every publish because its disk is full (not this event's size).
fn storage_full(s: &tonic::Status) -> bool {
    s.code() == Code::ResourceExhausted && s.message().starts_with(ringrift_proto::STORAGE_FULL)
}

async fn send_loop(mut client: Client, outbox: Outbox, shared: Arc<Shared>, alive: Weak<Alive>) {
    let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_secs(5));
    loop {
        let latest = shared.take_latest();
        let reserve = latest.as_ref().map_or(0, prost::Message::encoded_len);
        let rows = match outbox
            .load(
                MAX_BATCH_EVENTS - usize::from(latest.is_some()),
                MAX_BATCH_BYTES.saturating_sub(reserve),
            )
            .await
        {
            Ok(rows) => rows,
            Err(ClientError::Closed) => return,
            Err(e) => {
                tracing::error!(error = %e, "outbox unreadable; retrying");
                if let Some(l) = latest {
                    shared.restore_latest(l);
                }
                tokio::time::sleep(backoff.step()).await;
                continue;
            }
        };
        if rows.is_empty() && latest.is_none() {
            if alive.upgrade().is_none() {
                return;
            }
            shared.wake.notified().await;
            continue;
        }
        let mut events: Vec<wire::Event> = latest.iter().cloned().collect();
        events.extend(rows.iter().map(|r| r.event.clone()));
        let (results, unavailable) = send(&mut client, &events).await;
        let mut results = results.into_iter().zip(&events);
        if let Some(l) = latest {
            match results.next() {
                Some((Some(Err(e)), ev)) => {
                    tracing::error!(event_id = %ev.id, error = %e, "router refused a state event as malformed; dropped (the next one replaces it)");
                }
                Some((Some(Ok(_)), _)) => {}
                _ => shared.restore_latest(l),
            }
        }
        let mut done = Vec::new();
        for (row, (r, ev)) in rows.iter().zip(results) {
            if let Some(r) = r {
                if let Err(e) = &r {
                    refused(ev, e);
                }
                done.push((row.id, r));
            }
        }
        outbox.done(done);
        if let Some(s) = unavailable {
            if refuses_sender(&s) {
                let why = format!("router refuses publishes ({:?}): {}", s.code(), s.message());
                shared.set_refused(Some(why), outbox.len());
            }
            let d = backoff.step();
            tracing::debug!(error = %s, delay_ms = d.as_millis() as u64, "router unavailable or refusing; retrying");
            tokio::time::sleep(d).await;
        } else {
            shared.set_refused(None, outbox.len());
            backoff.reset();
        }
    }
}

fn refused(ev: &wire::Event, e: &ClientError) {
    tracing::error!(event_id = %ev.id, error = %e, "router refused the event as malformed; kept in the outbox's rejected table");
}

/// Publishes `events`, splitting a batch the router refuses as too large or invalid until
/// each refusal names one event. Returns each event's answer (`None`: not answered: the
/// router is unavailable or refuses the sender, reported as the second value).
async fn send(
    client: &mut Client,
    events: &[wire::Event],
) -> (
    Vec<Option<Result<PublishAck, ClientError>>>,
    Option<tonic::Status>,
) {
    let mut results: Vec<Option<Result<PublishAck, ClientError>>> =
        (0..events.len()).map(|_| None).collect();
    let mut todo = vec![(0, events.len())];
    while let Some((a, b)) = todo.pop() {
        let req = wire::PublishBatchRequest {
            events: events[a..b].to_vec(),
        };
        match client.publish_batch(req).await {
            Ok(resp) => {
                let mut acks = resp.into_inner().acks.into_iter();
                for slot in &mut results[a..b] {
                    *slot = Some(acks.next().ok_or_else(|| {
                        ClientError::Rejected("router sent fewer acks than events".into())
                    }));
                }
            }
            Err(s) if storage_full(&s) => return (results, Some(s)),
            Err(s) if split_helps(s.code()) && b - a > 1 => {
                let m = a + (b - a) / 2;
                todo.push((m, b));
                todo.push((a, m));
            }
            Err(s) if split_helps(s.code()) => {
                results[a] = Some(Err(ClientError::Rejected(format!(
                    "event {}: {:?}: {}",
                    events[a].id,
                    s.code(),
                    s.message()
                ))));
            }
            Err(s) => return (results, Some(s)),
        }
    }
    (results, None)
}
