//! Client side of the event router, shared by every daemon, the CLI and the launcher
//! (a module of handler-base, so that those link one crate for it).
//!
//! [`Publisher`] never loses an accepted event to a router outage: events wait in a
//! bounded outbox (a SQLite file for daemons, so they also survive a crash; memory for
//! tools) and are retried with backoff (1 ms → 5 s) until the router acks them, also
//! while the router refuses the sender's token ([`Publisher::refused`] says so); only an
//! event the router judges malformed leaves the outbox, into its rejected table; a full
//! outbox refuses (`BufferFull`) instead of dropping. Each event gets a UUID before its
//! first attempt, so a retry after a lost ack is recognised by the router's dedup window
//! instead of being stored twice. Heartbeats use a latest-only slot.
//! [`Subscription`] reconnects with the same backoff and, for a named consumer, resumes
//! after the last ack (the router keeps the position). [`Bearer`] adds the shared token
//! (`authorization: Bearer …`) to every call when one is configured, and carries the
//! client TLS ([`tls::ClientTls`]): with a CA, addresses without a scheme are spoken to
//! over TLS (`https`), and the token is never sent in clear to a host that is not this
//! machine unless `allow_plaintext` ([`Bearer::endpoint`]).

use ringrift_proto::wire::{self, event_router_client::EventRouterClient};
use ringrift_proto::{Event, EventError};
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

mod outbox;
mod publisher;
pub mod tls;

pub use publisher::{MAX_BATCH_BYTES, MAX_BATCH_EVENTS, Publisher};
pub use ringrift_proto::wire::PublishAck;

/// A tonic client for `ringrift.v1.EventRouter` (sending the token when one is set).
pub type Client = EventRouterClient<InterceptedService<Channel, Bearer>>;

/// A client's credentials: adds `authorization: Bearer <token>` to every call when a
/// token is set, and the TLS of its connections ([`Bearer::endpoint`]); the token never
/// shows in `Debug` output.
#[derive(Clone, Default)]
pub struct Bearer {
    token: Option<MetadataValue<Ascii>>,
    tls: Option<tls::ClientTls>,
    allow_plaintext: bool,
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.token.is_some() {
            "Bearer(***"
        } else {
            "Bearer(none"
        })?;
        if self.tls.is_some() {
            f.write_str(", tls")?;
        }
        f.write_str(")")
    }
}

impl Bearer {
    /// No token: calls go out without `authorization`.
    pub fn none() -> Bearer {
        Bearer::default()
    }

    /// `Some(token)` (visible ASCII) sends it; `None` or an empty token sends nothing.
    pub fn new(token: Option<&str>) -> Result<Bearer, ClientError> {
        match token.filter(|t| !t.is_empty()) {
            None => Ok(Bearer::default()),
            Some(t) => MetadataValue::try_from(format!("Bearer {t}"))
                .map(|v| Bearer {
                    token: Some(v),
                    ..Bearer::default()
                })
                .map_err(|_| ClientError::BadToken),
        }
    }

    /// The token of `RINGRIFT_TOKEN`, if set (the default of [`connect`] and [`connect_lazy`]).
    pub fn from_env() -> Bearer {
        Bearer::new(std::env::var("RINGRIFT_TOKEN").ok().as_deref()).unwrap_or_default()
    }

    /// These credentials with the client TLS `tls` (`None`: plaintext only) and whether
    /// the token may cross the network in clear (`[tls] allow_plaintext`).
    pub fn with_tls(mut self, tls: Option<tls::ClientTls>, allow_plaintext: bool) -> Bearer {
        self.tls = tls;
        self.allow_plaintext = allow_plaintext;
        self
    }

    /// The client TLS, when a CA is configured.
    pub fn tls(&self) -> Option<&tls::ClientTls> {
        self.tls.as_ref()
    }

    /// Whether a token is sent.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether the token may go to `url` (`http://` or `https://` with a host): always
    /// over https, and over http only to this machine or with `allow_plaintext`.
    pub fn check_plaintext(&self, url: &str) -> Result<(), ClientError> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Ok(());
        };
        if !scheme.eq_ignore_ascii_case("http") || self.token.is_none() || self.allow_plaintext {
            return Ok(());
        }
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let host = match authority.rsplit_once(':') {
            Some((h, port)) if !port.contains(']') => h,
            _ => authority,
        };
        if tls::is_local_host(host) {
            return Ok(());
        }
        Err(ClientError::PlaintextToken {
            addr: url.to_owned(),
        })
    }

    /// `host:port` or a URL as an endpoint with these credentials' transport (no
    /// connection is made): without a scheme, `https` when a CA is configured, else
    /// `http`; the unspecified address (a listener bound to all, `0.0.0.0`/`[::]`) is
    /// this machine's loopback; `https://` (or `grpcs://`) without a CA is an error, never plaintext;
    /// `http://` to another machine while a token is set is refused unless
    /// `allow_plaintext`.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, ClientError> {
        let (scheme, rest) = match addr.split_once("://") {
            Some((s, r)) => (Some(s.to_ascii_lowercase()), r),
            None => (None, addr),
        };
        let secure = match scheme.as_deref() {
            None => self.tls.is_some(),
            Some("http") => false,
            Some("https" | "grpcs") => true,
            Some(other) => {
                return Err(ClientError::BadAddress {
                    addr: addr.to_owned(),
                    reason: format!("unknown scheme {other:?} (http or https)"),
                });
            }
        };
        // A listener's own address file may say 0.0.0.0 / [::] (bound to every address):
        // that connects to this machine, and is verified as its loopback address.
        let rest = match rest.strip_prefix("0.0.0.0:") {
            Some(port) => format!("127.0.0.1:{port}"),
            None => match rest.strip_prefix("[::]:") {
                Some(port) => format!("[::1]:{port}"),
                None => rest.to_owned(),
            },
        };
        let url = format!("{}://{rest}", if secure { "https" } else { "http" });
        let bad = |e: tonic::transport::Error| ClientError::BadAddress {
            addr: addr.to_owned(),
            reason: e.to_string(),
        };
        let ep = Endpoint::from_shared(url.clone())
            .map_err(bad)?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true);
        if secure {
            let Some(tls) = &self.tls else {
                return Err(ClientError::NoCa {
                    addr: addr.to_owned(),
                });
            };
            return ep.tls_config(tls.tonic()).map_err(bad);
        }
        self.check_plaintext(&url)?;
        Ok(ep)
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.token {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid router address {addr:?}: {reason}")]
    BadAddress { addr: String, reason: String },
    #[error("router rejected the event: {0}")]
    Rejected(String),
    #[error("publish outbox is full ({0} events waiting for the router)")]
    BufferFull(usize),
    #[error("publish outbox: {0}")]
    Outbox(String),
    #[error("publisher has stopped")]
    Closed,
    #[error("router call failed: {0}")]
    Rpc(#[from] Status),
    #[error("router sent an invalid event: {0}")]
    BadEvent(#[from] EventError),
    #[error("the auth token must be visible ASCII (no spaces or control characters)")]
    BadToken,
    #[error(
        "{addr}: the token is not sent in clear to another machine: set [tls] ca (and serve TLS), or [tls] allow_plaintext = true"
    )]
    PlaintextToken { addr: String },
    #[error("{addr}: TLS needs a CA to verify the server: set [tls] ca")]
    NoCa { addr: String },
}

/// Turns `host:port` or a URL into an endpoint without credentials (no connection is
/// made; see [`Bearer::endpoint`]).
pub fn endpoint(addr: &str) -> Result<Endpoint, ClientError> {
    Bearer::none().endpoint(addr)
}

/// A client that connects on first use and reconnects by itself after failures
/// (token from `RINGRIFT_TOKEN`, if set).
pub fn connect_lazy(addr: &str) -> Result<Client, ClientError> {
    connect_lazy_with(addr, Bearer::from_env())
}

/// [`connect_lazy`] with an explicit token.
pub fn connect_lazy_with(addr: &str, bearer: Bearer) -> Result<Client, ClientError> {
    Ok(EventRouterClient::with_interceptor(
        bearer.endpoint(addr)?.connect_lazy(),
        bearer,
    ))
}

/// A client connected now (fails fast if nothing listens; token from `RINGRIFT_TOKEN`).
pub async fn connect(addr: &str) -> Result<Client, ClientError> {
    connect_with(addr, Bearer::from_env()).await
}

/// [`connect`] with an explicit token.
pub async fn connect_with(addr: &str, bearer: Bearer) -> Result<Client, ClientError> {
    let ch = bearer
        .endpoint(addr)?
        .connect()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    Ok(EventRouterClient::with_interceptor(ch, bearer))
}

/// Exponential backoff from `start` doubling to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    start: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(start: Duration, max: Duration) -> Self {
        Backoff {
            next: start,
            start,
            max,
        }
    }
    /// The delay to wait now; doubles the next one.
    pub fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
    pub fn reset(&mut self) {
        self.next = self.start;
    }
}

/// Whether a failed call may succeed if simply tried again: not when the router refuses
/// the request itself (invalid) or the caller (token, precondition).
pub fn retriable(s: &Status) -> bool {
    !matches!(
        s.code(),
        Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::Unauthenticated
    )
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Why the router refuses a subscription, and since when (the first refusal of the
/// current run of them): set by [`Subscription::next`] when the router refuses the
/// subscribe call, cleared when a subscribe is accepted. Cheap to clone; clones share it,
/// so a health report reads what the subscription sets ([`Subscription::reporting`]).
#[derive(Clone, Default, Debug)]
pub struct Refusal(std::sync::Arc<std::sync::Mutex<Option<(std::time::Instant, String)>>>);

impl Refusal {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(std::time::Instant, String)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// The reason and how long the refusals have lasted, while they do.
    pub fn get(&self) -> Option<(Duration, String)> {
        self.lock()
            .as_ref()
            .map(|(since, why)| (since.elapsed(), why.clone()))
    }
    /// Records a refusal: the reason is replaced, the start of the run kept.
    pub fn set(&self, why: impl Into<String>) {
        let mut g = self.lock();
        let since = g.as_ref().map_or_else(std::time::Instant::now, |(s, _)| *s);
        *g = Some((since, why.into()));
    }
    /// The router accepted: the run of refusals is over.
    pub fn clear(&self) {
        *self.lock() = None;
    }
}

/// A subscription that survives router restarts. For a durable consumer, events not
/// acked before a reconnect are delivered again (at-least-once).
pub struct Subscription {
    client: Client,
    request: wire::SubscribeRequest,
    stream: Option<tonic::Streaming<wire::Event>>,
    backoff: Backoff,
    /// See [`Subscription::gated`].
    gate: Option<tokio::sync::watch::Receiver<bool>>,
    /// See [`Subscription::reporting`].
    refusal: Refusal,
}

impl Subscription {
    pub fn new(client: Client, request: wire::SubscribeRequest) -> Self {
        Subscription {
            client,
            request,
            stream: None,
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(5)),
            gate: None,
            refusal: Refusal::default(),
        }
    }

    /// Reports the router's refusals of this subscription in `refusal` (set while the
    /// subscribe calls are refused, cleared when one is accepted).
    pub fn reporting(mut self, refusal: Refusal) -> Self {
        self.refusal = refusal;
        self
    }

    /// This subscription pulls only while `gate` holds `true`. While it holds `false` no
    /// session is open, so the consumer's events wait for another subscriber of it (the
    /// leader's copy of a leader-only daemon), and [`Subscription::next`] waits; a change
    /// to `false` closes the open session (events it delivered and nobody acked go back
    /// to the consumer). A gate whose sender is gone keeps its last value.
    pub fn gated(mut self, gate: tokio::sync::watch::Receiver<bool>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Waits while the gate is closed (no session open meanwhile).
    async fn wait_open(&mut self) {
        let Some(g) = self.gate.as_mut() else {
            return;
        };
        if *g.borrow_and_update() {
            return;
        }
        self.stream = None;
        if g.wait_for(|open| *open).await.is_err() {
            // The sender is gone and left the gate closed: it never opens again.
            std::future::pending::<()>().await;
        }
    }

    /// The next event. Reconnects (with backoff) on any stream failure; only a subscribe
    /// call the router refuses (an invalid request, a wrong token: not [`retriable`]) is
    /// returned as an error, and recorded in the [`Refusal`] until one is accepted. The
    /// caller decides how long to go on trying (each call tries again at once).
    pub async fn next(&mut self) -> Result<Event, ClientError> {
        loop {
            self.wait_open().await;
            if self.stream.is_none() {
                match self.client.subscribe(self.request.clone()).await {
                    Ok(s) => {
                        self.refusal.clear();
                        self.stream = Some(s.into_inner());
                    }
                    Err(s) if !retriable(&s) => {
                        self.refusal.set(format!("{:?}: {}", s.code(), s.message()));
                        return Err(s.into());
                    }
                    Err(s) => {
                        tracing::debug!(error = %s, "subscribe failed; retrying");
                        tokio::time::sleep(self.backoff.step()).await;
                        continue;
                    }
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            // `None`: the gate closed (or its sender is gone: `gone`) while waiting.
            let (message, gone) = match self.gate.as_mut() {
                None => (Some(stream.message().await), false),
                Some(g) => tokio::select! {
                    m = stream.message() => (Some(m), false),
                    closed = g.wait_for(|open| !*open) => (None, closed.is_err()),
                },
            };
            let Some(message) = message else {
                if gone {
                    // The sender is gone with the gate open: it stays open.
                    self.gate = None;
                }
                continue;
            };
            match message {
                Ok(Some(ev)) => {
                    self.backoff.reset();
                    // After a reconnect, a non-durable subscriber continues after what it saw.
                    if self.request.consumer.is_empty() {
                        self.request.start =
                            Some(wire::subscribe_request::Start::FromSeq(ev.seq + 1));
                    }
                    return Ok(Event::try_from(ev)?);
                }
                Ok(None) | Err(_) => {
                    self.stream = None;
                    tokio::time::sleep(self.backoff.step()).await;
                }
            }
        }
    }

    /// Acks, nacks and in-progress acks for this subscription's consumer, usable beside
    /// [`Subscription::next`] from other tasks (e.g. handlers running concurrently).
    pub fn acker(&self) -> Acker {
        Acker {
            client: self.client.clone(),
            consumer: self.request.consumer.clone(),
        }
    }

    /// Acks one event (or every delivered event up to `seq` when `cumulative`).
    pub async fn ack(&mut self, seq: u64, cumulative: bool) -> Result<u64, ClientError> {
        self.acker().ack(seq, cumulative).await
    }

    /// See [`Acker::progress`].
    pub async fn progress(&mut self, seq: u64) -> Result<(), ClientError> {
        self.acker().progress(seq).await
    }

    /// See [`Acker::nack`].
    pub async fn nack(
        &mut self,
        seq: u64,
        reason: &str,
    ) -> Result<wire::NackResponse, ClientError> {
        self.acker().nack(seq, reason).await
    }
}

/// The acknowledging half of a [`Subscription`]: cheap to clone, one per task.
#[derive(Clone)]
pub struct Acker {
    client: Client,
    consumer: String,
}

impl Acker {
    /// Acks one event (or every delivered event up to `seq` when `cumulative`).
    pub async fn ack(&self, seq: u64, cumulative: bool) -> Result<u64, ClientError> {
        let req = wire::AckRequest {
            consumer: self.consumer.clone(),
            seq,
            cumulative,
            ..Default::default()
        };
        Ok(self.client.clone().ack(req).await?.into_inner().ack_floor)
    }

    /// Tells the router the consumer is working on `seq` (not an ack): its ack-wait timer
    /// restarts, so a long job is not delivered again meanwhile, and the delivery is
    /// marked started (if the session ends holding it, that is a failed delivery).
    pub async fn progress(&self, seq: u64) -> Result<(), ClientError> {
        self.progress_req(seq, false).await
    }

    /// Tells the router `seq` is still queued here, not started: its ack-wait timer
    /// restarts, and if the session ends (a restart) before it is started, that delivery
    /// does not count as a failed one.
    pub async fn progress_queued(&self, seq: u64) -> Result<(), ClientError> {
        self.progress_req(seq, true).await
    }

    async fn progress_req(&self, seq: u64, queued: bool) -> Result<(), ClientError> {
        let req = wire::AckRequest {
            consumer: self.consumer.clone(),
            seq,
            in_progress: true,
            queued,
            ..Default::default()
        };
        self.client.clone().ack(req).await?;
        Ok(())
    }

    /// Reports a failed handling; after the router's limit the event is dead-lettered.
    pub async fn nack(&self, seq: u64, reason: &str) -> Result<wire::NackResponse, ClientError> {
        let req = wire::NackRequest {
            consumer: self.consumer.clone(),
            seq,
            reason: reason.to_owned(),
        };
        Ok(self.client.clone().nack(req).await?.into_inner())
    }
}

#[cfg(test)]
mod transport_tests {
    use super::*;

    #[test]
    fn the_token_never_goes_in_clear_to_another_machine() {
        let t = Bearer::new(Some("s3cret")).unwrap();
        for remote in [
            "10.0.0.7:8780",
            "http://10.0.0.7:8780",
            "http://example.org",
        ] {
            let e = t.endpoint(remote).unwrap_err();
            assert!(
                matches!(e, ClientError::PlaintextToken { .. }),
                "{remote}: {e}"
            );
            assert!(e.to_string().contains("allow_plaintext"), "{e}");
        }
        for local in ["127.0.0.1:8780", "localhost:1", "[::1]:8780", "0.0.0.0:5"] {
            assert!(t.endpoint(local).is_ok(), "{local}");
        }
        // without a token, or with allow_plaintext, nothing is refused
        assert!(Bearer::none().endpoint("10.0.0.7:8780").is_ok());
        let open = t.clone().with_tls(None, true);
        assert!(open.endpoint("10.0.0.7:8780").is_ok());
        assert!(!format!("{t:?}").contains("s3cret"));
        let ep = t.endpoint("0.0.0.0:8780").unwrap();
        assert_eq!(ep.uri().host(), Some("127.0.0.1"));
        let ep = t.endpoint("http://[::]:8780").unwrap();
        assert_eq!(ep.uri().host(), Some("[::1]"));
    }

    #[test]
    fn https_without_a_ca_is_an_error_not_plaintext() {
        for addr in ["https://10.0.0.7:2379", "grpcs://127.0.0.1:1"] {
            let e = Bearer::none().endpoint(addr).unwrap_err();
            assert!(matches!(e, ClientError::NoCa { .. }), "{addr}: {e}");
        }
        assert!(matches!(
            Bearer::none().endpoint("ftp://x:1"),
            Err(ClientError::BadAddress { .. })
        ));
    }
}
