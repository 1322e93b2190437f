//! `ringrift-event-router`: the durable gRPC event bus.
//!
//! **Guarantees.** `Publish` returns only after the event is committed to the SQLite WAL
//! log under `$RINGRIFT_HOME/events/` (fsync'd unless `durability = "relaxed"`), so no
//! acked event is lost by a crash of any process. The same holds for each ack of
//! `PublishBatch` and of `PublishStream` (one ack per event, in order, sent after the
//! commit that holds it; an invalid event there gets an ack with `error` set instead). Each event gets a `seq` (gap-free
//! except for retention). Duplicates by id inside the dedup window (5 min) are acked with
//! `duplicate = true` and not stored.
//!
//! **Delivery.** A named consumer gets every matching event after its ack floor, in seq
//! order, at least once; after a reconnect (of it or of the router) delivery resumes
//! after the floor. A nacked event is redelivered first; after `max_deliver` (5) failures
//! it goes to the dead-letter queue and the consumer moves on. A failure is a nack, an
//! expired ack wait, or a session that ended holding an event the consumer had started;
//! an event still queued at a consumer that stopped, or held when the router stops, is
//! delivered again without a failure counted. An unnamed subscriber is
//! ephemeral: no acks, no resume.
//!
//! **Slow consumers.** Each subscriber has its own task and a bounded buffer
//! (`consumer_buffer`, 256). A slow one only stalls its own task, which later reads back
//! from the in-memory cache or the log; publishers and other consumers never wait.
//!
//! **Backends.** The above describes the SQLite log (the default). With `[events] backend =
//! "jetstream"` in cluster.toml the same service runs on a NATS JetStream stream shared by
//! every node's router ([`jetstream`]); both implement [`backend::Backend`], and
//! `docs/router.md` lists where JetStream's semantics differ.

pub mod backend;
#[cfg(test)]
mod bad_requests;
mod broker;
#[cfg(test)]
mod in_process;
pub mod jetstream;
pub mod log;
pub mod metrics;
pub mod recent;
mod service;
pub mod store;

use backend::Backend;
use broker::{Broker, RETENTION_TICK};
use handler_base::scope::Scope;
use handler_base::{ConfigError, DaemonInfo, ServiceContext};
use log::router_now_ms;
use ringrift_proto::wire::event_router_server::EventRouterServer;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use store::{Durability, Store};
use tokio::sync::watch;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "event_router",
    about: "Durable gRPC event bus (publish, subscribe, ack, dead letters)",
    cycle_interval_s: None,
    scope: Some(Scope::Node),
};

/// `[event_router]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// host:port; port 0 picks one and writes it to `run/event_router.addr`.
    pub listen: String,
    pub durability: Durability,
    pub max_deliver: u32,
    /// Default ack wait of a durable consumer (a subscription may set its own).
    pub ack_wait_s: f64,
    /// Default most unacked deliveries per durable consumer.
    pub max_ack_pending: usize,
    pub dedup_window_s: u64,
    pub retention_max_age_s: u64,
    pub retention_max_events: u64,
    pub retention_max_bytes: u64,
    pub retention_interval_s: f64,
    /// A writer busy with one transaction longer than this is reported stuck (health,
    /// heartbeat, no systemd watchdog ping).
    pub writer_stuck_s: f64,
    /// Rows deleted per retention transaction (publishes commit between chunks).
    pub retention_chunk: usize,
    /// Recent events kept in memory for subscribers that are caught up...
    pub cache_events: usize,
    /// ...and at most this many bytes of them (256 MiB; events up to 64 KiB each).
    pub cache_bytes: u64,
    /// Reader connections of the log (reads at once; more wait for one).
    pub reader_connections: usize,
    /// Events buffered per subscriber before its session waits.
    pub consumer_buffer: usize,
    /// A dead letter RETRYING this long without being sent (its consumer never came
    /// back) returns to DEAD.
    pub dlq_retrying_timeout_s: f64,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            listen: "127.0.0.1:8780".into(),
            durability: Durability::Fsync,
            max_deliver: 5,
            ack_wait_s: 30.0,
            max_ack_pending: 1000,
            dedup_window_s: 300,
            retention_max_age_s: 7 * 24 * 3600,
            retention_max_events: 10_000_000,
            retention_max_bytes: 4 << 30,
            retention_interval_s: RETENTION_TICK.as_secs_f64(),
            retention_chunk: 256,
            writer_stuck_s: 30.0,
            cache_events: 100_000,
            cache_bytes: 256 << 20,
            reader_connections: store::DEFAULT_READERS,
            consumer_buffer: 256,
            dlq_retrying_timeout_s: 900.0,
        }
    }
}

impl RouterConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| {
            Err(ConfigError::Section {
                section: "event_router".into(),
                error: m,
            })
        };
        if self.max_deliver == 0 {
            return bad("max_deliver must be at least 1".into());
        }
        if !(self.ack_wait_s > 0.0 && self.ack_wait_s.is_finite()) {
            return bad(format!("ack_wait_s = {}: must be > 0", self.ack_wait_s));
        }
        if !(self.writer_stuck_s > 0.0 && self.writer_stuck_s.is_finite()) {
            return bad(format!(
                "writer_stuck_s = {}: must be > 0",
                self.writer_stuck_s
            ));
        }
        if self.max_ack_pending == 0 {
            return bad("max_ack_pending must be at least 1".into());
        }
        if !(self.retention_interval_s > 0.0) {
            return bad("retention_interval_s must be > 0".into());
        }
        if !(self.dlq_retrying_timeout_s > 0.0) {
            return bad("dlq_retrying_timeout_s must be > 0".into());
        }
        if self.cache_events == 0 {
            return bad("cache_events must be at least 1".into());
        }
        if self.cache_bytes == 0 || usize::try_from(self.cache_bytes).is_err() {
            return bad(format!(
                "cache_bytes = {}: must be at least 1 (and fit in memory)",
                self.cache_bytes
            ));
        }
        if !(1..=256).contains(&self.reader_connections) {
            return bad(format!(
                "reader_connections = {}: must be 1..=256",
                self.reader_connections
            ));
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(format!(
                "listen {:?} is not host:port (an IP address and a port)",
                self.listen
            ));
        }
        Ok(())
    }
}

/// The service body for `handler_base::service_main`.
pub fn serve(ctx: ServiceContext) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> {
    Box::pin(run(ctx))
}

async fn run(ctx: ServiceContext) -> anyhow::Result<()> {
    let cfg: RouterConfig = ctx.settings.section("event_router")?;
    cfg.validate()?;
    failpoints(ctx.settings.string("failpoints"))?;
    let token = handler_base::auth::load(&ctx.settings)?;
    let tls = handler_base::tls::Tls::load(&ctx.settings)?;
    handler_base::auth::check_listen("event_router.listen", &cfg.listen, token.as_ref(), &tls)?;
    let cluster = ringrift_cluster::ClusterConfig::load(&ctx.home, &ctx.node)
        .map_err(handler_base::ConfigError::from)?;
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("bind {}: {e}", cfg.listen))?;
    let listener = tls.incoming(listener)?;
    match cluster.events {
        ringrift_cluster::EventBackend::Sqlite => run_sqlite(ctx, cfg, listener, token).await,
        ringrift_cluster::EventBackend::Jetstream {
            servers,
            replicas,
            auth,
            ..
        } => {
            let js = jetstream::JetStreamBroker::connect(cfg, &servers, &auth, replicas).await?;
            if ctx.once {
                tracing::info!("JetStream applies retention itself; nothing to do (--once)");
                return Ok(());
            }
            let what = format!("JetStream {} (R{replicas})", servers.join(","));
            let stopped = Box::pin(std::future::pending());
            serve_backend(ctx, listener, token, js, what, Arc::new(|| {}), stopped).await
        }
    }
}

async fn run_sqlite(
    ctx: ServiceContext,
    cfg: RouterConfig,
    listener: handler_base::tls::Incoming,
    token: Option<handler_base::auth::Token>,
) -> anyhow::Result<()> {
    let bounds = recent::Bounds {
        events: cfg.cache_events,
        bytes: usize::try_from(cfg.cache_bytes).unwrap_or(usize::MAX),
    };
    let cache = Arc::new(RwLock::new(recent::Recent::new(bounds)));
    let (head_tx, _) = watch::channel(0u64);
    let hook = broker::commit_hook(cache.clone(), head_tx.clone());
    let dir = ctx.home.join("events");
    let (store, loaded) = {
        let (d, w, c) = (dir.clone(), Duration::from_secs(cfg.dedup_window_s), bounds);
        let durability = cfg.durability;
        let readers = cfg.reader_connections;
        tokio::task::spawn_blocking(move || {
            Store::open(&d, durability, w, c, hook).map(|(s, l)| (s.with_reader_limit(readers), l))
        })
        .await??
    };
    let metrics = metrics::Metrics::default();
    store.health().stuck_after_ms.store(
        (cfg.writer_stuck_s * 1000.0) as i64,
        std::sync::atomic::Ordering::Relaxed,
    );
    let broker = Broker::new(cfg.clone(), store, loaded, cache, head_tx, metrics);
    // Read back what the writer connection really runs with (it is per connection).
    let synchronous = broker
        .store
        .exec(|tx| tx.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0)))
        .await?;
    broker.metrics.synchronous.set(synchronous);
    if ctx.once {
        let n = broker.enforce_retention().await?;
        tracing::info!(
            removed = n,
            head = broker.head(),
            "retention pass done (--once)"
        );
        return Ok(());
    }
    spawn_retention(
        broker.clone(),
        Duration::from_secs_f64(cfg.retention_interval_s),
        ctx.shutdown.clone(),
    );
    spawn_retrying_expiry(
        broker.clone(),
        Duration::from_secs_f64(cfg.dlq_retrying_timeout_s),
        ctx.shutdown.clone(),
    );
    let mb = broker.clone();
    let on_scrape = Arc::new(move || {
        let sync = mb
            .store
            .health()
            .synchronous
            .load(std::sync::atomic::Ordering::Relaxed);
        mb.metrics.synchronous.set(sync as i64);
    });
    let store = broker.store.clone();
    let stopped = Box::pin(async move { store.writer_stopped().await });
    let what = format!(
        "SQLite {} ({:?}, synchronous {synchronous})",
        dir.display(),
        cfg.durability
    );
    serve_backend(ctx, listener, token, broker, what, on_scrape, stopped).await
}

/// Serves the gRPC service, `/metrics` and `/health` over `backend` until shutdown, or
/// until `stopped` (the backend can no longer store anything: exit 1 so the router is
/// restarted). `on_scrape` refreshes backend-specific gauges before `/metrics` renders.
async fn serve_backend(
    ctx: ServiceContext,
    listener: handler_base::tls::Incoming,
    token: Option<handler_base::auth::Token>,
    backend: Arc<dyn Backend>,
    what: String,
    on_scrape: Arc<dyn Fn() + Send + Sync>,
    stopped: Pin<Box<dyn Future<Output = ()> + Send>>,
) -> anyhow::Result<()> {
    let addr = listener.local();
    spawn_heartbeat(
        backend.clone(),
        ctx.node.clone(),
        ctx.lifecycle.heartbeat_interval,
        ctx.shutdown.clone(),
    );

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ringrift_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1a = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ringrift_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let svc = EventRouterServer::new(service::RouterService {
        broker: backend.clone(),
    })
    .max_decoding_message_size(8 << 20);
    let mb = backend.clone();
    let hb = backend.clone();
    let http = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let (b, on_scrape) = (mb.clone(), on_scrape.clone());
                async move {
                    on_scrape();
                    if let Ok(s) = b.stats().await {
                        b.metrics().head.set(s.head_seq as i64);
                        for c in s.consumers {
                            b.metrics()
                                .consumer_lag
                                .get_or_create(&vec![("consumer".to_owned(), c.name)])
                                .set(c.lag as i64);
                        }
                    }
                    (
                        [("content-type", handler_base::metrics::TEXT_CONTENT_TYPE)],
                        b.metrics().render(),
                    )
                }
            }),
        )
        .route(
            "/health",
            axum::routing::get(move || {
                let check = hb.health();
                async move {
                    match check {
                        Ok(()) => (axum::http::StatusCode::OK, "ok\n".to_owned()),
                        Err(why) => (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            format!("{why}\n"),
                        ),
                    }
                }
            }),
        );
    let routes = tonic::service::Routes::new(svc)
        .add_service(reflection_v1)
        .add_service(reflection_v1a);
    let app = handler_base::auth::protect(routes.into_axum_router().merge(http), token.clone());

    let probe = backend.clone();
    ctx.set_probe(Arc::new(move || probe.health()));
    handler_base::write_addr_file(&ctx.home, "event_router", &addr.to_string())?;
    let head = backend.stats().await.map(|s| s.head_seq).unwrap_or(0);
    tracing::info!(%addr, log = %what, head, auth = token.is_some(), "event router listening");
    ctx.ready();
    let shutdown = ctx.shutdown.clone();
    let closing = backend.closing().clone();
    let server = tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(tonic::service::Routes::from(app))
        .serve_with_incoming_shutdown(listener, async move {
            shutdown.cancelled().await;
            // End the subscription streams so the graceful shutdown can finish.
            closing.cancel();
        });
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r?,
        _ = stopped => {
            // Nothing can be made durable any more: exit non-zero so the launcher or
            // systemd restarts the router (which reopens the log).
            anyhow::bail!("event log writer thread stopped; exiting so the router is restarted");
        }
        _ = async { ctx.shutdown.cancelled().await; tokio::time::sleep(Duration::from_secs(3)).await } => {
            tracing::warn!("clients still connected 3 s after SIGTERM; closing anyway");
        }
    }
    // Each ending session naks what it holds (JetStream then redelivers at once): give
    // them time to, bounded, or a held message waits out its ack wait after a restart.
    let t0 = std::time::Instant::now();
    while backend.open_sessions() > 0 && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if backend.open_sessions() > 0 {
        tracing::warn!(
            sessions = backend.open_sessions(),
            "subscription sessions still open 5 s after the server stopped; exiting anyway"
        );
    }
    tracing::info!("event router stopped");
    Ok(())
}

/// The router's own DAEMON_HEARTBEAT, written straight into its log.
fn spawn_heartbeat(
    broker: Arc<dyn Backend>,
    node: String,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use ringrift_proto::wire;
    let started = std::time::Instant::now();
    tokio::spawn(async move {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = t.tick() => {}
            }
            let (head, consumers) = match broker.stats().await {
                Ok(s) => (s.head_seq, s.consumers),
                Err(e) => (0, {
                    tracing::warn!(error = %e, "router stats for the heartbeat failed");
                    Vec::new()
                }),
            };
            let max_lag = consumers.iter().map(|c| c.lag).max().unwrap_or(0);
            let check = broker.health();
            let health = wire::HealthCheckResult {
                healthy: check.is_ok(),
                status: if check.is_ok() {
                    wire::HealthStatus::Running
                } else {
                    wire::HealthStatus::Error
                } as i32,
                message: match check {
                    Ok(()) => format!("head {head} with {} consumers", consumers.len()),
                    Err(why) => why,
                },
                details: [
                    ("head_seq".to_owned(), head.to_string()),
                    ("max_consumer_lag".to_owned(), max_lag.to_string()),
                ]
                .into_iter()
                .collect(),
            };
            let hb = wire::DaemonHeartbeat {
                daemon: "event_router".into(),
                pid: std::process::id(),
                node: node.clone(),
                uptime_s: started.elapsed().as_secs_f64(),
                health: Some(health),
            };
            let mut ev = ringrift_proto::Event::new(wire::event::Payload::DaemonHeartbeat(hb));
            ev.source = format!("event_router@{node}");
            ev.id = format!("hb:event_router:{}:{}", std::process::id(), router_now_ms());
            ev.time_unix_ms = router_now_ms();
            if let Err(e) = broker.publish(vec![ev]).await {
                tracing::warn!(error = %e, "router heartbeat not stored");
            }
        }
    });
}

/// Returns RETRYING dead letters whose consumer never came back to DEAD (see
/// `Broker::expire_retrying`), checking a few times per timeout.
fn spawn_retrying_expiry(
    broker: Arc<Broker>,
    timeout: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let every = (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(60));
    spawn_every(every, shutdown, move || {
        let broker = broker.clone();
        async move {
            match broker.expire_retrying(timeout).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    letters = n,
                    timeout_s = timeout.as_secs_f64(),
                    "dead letters RETRYING without their consumer went back to DEAD"
                ),
                Err(e) => tracing::error!(error = %e, "expiring RETRYING dead letters failed"),
            }
        }
    });
}

fn spawn_retention(
    broker: Arc<Broker>,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    spawn_every(every, shutdown, move || {
        let broker = broker.clone();
        async move {
            match broker.enforce_retention().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "retention removed old events"),
                Err(e) => tracing::error!(error = %e, "retention pass failed"),
            }
        }
    });
}

/// Debug builds only: the fail points of setting `failpoints` (`--set failpoints=...` or
/// `RINGRIFT_FAILPOINTS`; `name=actions;...` in the `fail` crate's syntax), so system
/// tests can make the writer thread die.
fn failpoints(spec: Option<String>) -> Result<(), ConfigError> {
    let Some(spec) = spec else {
        return Ok(());
    };
    let bad = |error: String| ConfigError::Section {
        section: "failpoints".into(),
        error,
    };
    if !cfg!(debug_assertions) {
        return Err(bad("fail points exist only in debug builds".into()));
    }
    for item in spec.split(';').filter(|s| !s.trim().is_empty()) {
        let (name, actions) = item
            .split_once('=')
            .ok_or_else(|| bad(format!("{item:?} is not name=actions")))?;
        fail::cfg(name.trim(), actions.trim()).map_err(|e| bad(format!("{name}: {e}")))?;
    }
    Ok(())
}

/// Runs `job` every `every` (the first run one interval after the start, not in the start-up path) until `shutdown`.
fn spawn_every<F, Fut>(every: Duration, shutdown: tokio_util::sync::CancellationToken, mut job: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = t.tick() => {}
            }
            job().await;
        }
    });
}
