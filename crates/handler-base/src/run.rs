//! The process lifecycle: start-up sequence, the cycle/event/heartbeat tasks, and stop.

use crate::lifecycle::LifecycleConfig;
use crate::liveness::{Liveness, Pulse};
use crate::publish::{Publish, Recorded};
use crate::router_client::{Client, ClientError, Publisher};
use crate::{
    CommonArgs, Dedup, EXIT_CONFIG, ErrorLog, HealthCheckResult, HealthStatus, Settings, settings,
};
use clap::{CommandFactory, FromArgMatches};
use ringrift_proto::{Event, EventType, wire};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Static facts about a daemon binary, declared by its crate (`pub const INFO`). The
/// registry states `cycle_interval_s` and `scope` again for the launcher and systemd;
/// the tidy test keeps the two equal, so handler-base needs no registry.
#[derive(Debug, Clone, Copy)]
pub struct DaemonInfo {
    /// Registry name, e.g. `auto_sync`.
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// The default `<name>.cycle_interval_s` (the bottom settings layer). `None`: no
    /// cycle of its own (the router) or a daemon the registry does not know; then
    /// [`crate::lifecycle::FALLBACK_CYCLE_INTERVAL_S`].
    pub cycle_interval_s: Option<f64>,
    /// Delivery scope ([`crate::scope`]). `None`: a daemon the registry does not know
    /// (the test daemon, tools), which reads `<name>.scope` instead, default cluster.
    pub scope: Option<crate::scope::Scope>,
}

impl DaemonInfo {
    /// A daemon the registry does not know: no default interval, scope from settings.
    pub const fn unregistered(name: &'static str, about: &'static str) -> DaemonInfo {
        DaemonInfo {
            name,
            about,
            cycle_interval_s: None,
            scope: None,
        }
    }

    /// The bottom settings layer: `(key, value)` pairs of the declared defaults.
    pub fn defaults(&self) -> Vec<(String, String)> {
        self.cycle_interval_s
            .map(|c| vec![(format!("{}.cycle_interval_s", self.name), c.to_string())])
            .unwrap_or_default()
    }
}

/// A bare name is a daemon the registry does not know ([`DaemonInfo::unregistered`]):
/// for tests and tools that give a name only.
impl From<&'static str> for DaemonInfo {
    fn from(name: &'static str) -> DaemonInfo {
        DaemonInfo::unregistered(name, "")
    }
}

/// The periodic work and event reactions of one daemon.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Event types this daemon reacts to (durable consumer named by the daemon's scope:
    /// [`crate::scope`]).
    fn subscriptions(&self) -> Vec<EventType> {
        Vec::new()
    }
    /// Whether the consumer's first subscribe (no position at the router yet) reads the
    /// whole retained history (`from_seq = 1`) instead of starting at the head. Later
    /// starts always resume after the last ack.
    fn replay_history(&self) -> bool {
        false
    }
    /// While the returned gate holds `false`, this copy pulls no events (no session
    /// open; they wait at the consumer for the copy that pulls): a cluster-scoped leader
    /// duty hands over "this node leads". `None` (default): always pull. See
    /// [`crate::scope`].
    fn pull_gate(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        None
    }
    /// How long one `run_cycle` or `handle_event` call may take while healthy, e.g. the
    /// timeout of the job it runs. A call busy for longer than `stuck_after_s` (default
    /// the largest of 3 × cycle interval, 10 min and twice this) counts as stuck: no
    /// watchdog ping, heartbeat not healthy. (The cycle interval itself is
    /// `<name>.cycle_interval_s`, see [`LifecycleConfig`].)
    fn longest_call(&self) -> Duration {
        Duration::ZERO
    }
    /// The lane of an event: events of different lanes may be handled at the same time
    /// (at most [`Handler::max_concurrent`] at once), events of one lane one at a time in
    /// the order they arrived. Default: one lane. Lanes should be few (e.g. one per
    /// config key): each has a task for the daemon's lifetime.
    fn lane(&self, _event: &Event) -> String {
        String::new()
    }
    /// How many events (of different lanes) may be handled at once. Default 1.
    fn max_concurrent(&self) -> usize {
        1
    }
    async fn on_start(&self, _ctx: &Context) -> anyhow::Result<()> {
        Ok(())
    }
    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()>;
    /// Reacts to one subscribed event. `Err` nacks it (redelivered, dead-lettered after
    /// the router's limit). An event already handled with `Ok` (same id, within 5 min) is
    /// acked without getting here. While this runs (and while the event waits for its
    /// lane), in-progress acks keep the router from delivering it again.
    async fn handle_event(&self, _ctx: &Context, _event: &Event) -> anyhow::Result<()> {
        Ok(())
    }
    async fn on_stop(&self, _ctx: &Context) {}
    fn health_check(&self) -> HealthCheckResult {
        HealthCheckResult::running("ok")
    }
}

/// What a handler gets: config, home, publishing and the error log.
#[derive(Clone)]
pub struct Context {
    pub name: &'static str,
    pub node: String,
    pub home: PathBuf,
    pub settings: Settings,
    /// The validated lifecycle settings (cycle interval, ack wait, ...).
    pub lifecycle: LifecycleConfig,
    pub router_addr: String,
    /// For router calls beyond publishing (stats, dead letters, lookups).
    pub client: Client,
    /// The outbox publisher in a daemon, a [`Recorded`] list in [`Context::for_test`].
    pub publisher: Arc<dyn Publish>,
    pub errors: ErrorLog,
    pub shutdown: CancellationToken,
    /// `--configs`, validated by the daemon that uses it.
    pub configs: Vec<String>,
    pub once: bool,
}

impl Context {
    /// Puts an event in the daemon's outbox (a file: it survives router outages and
    /// restarts of this daemon); returns once it is stored. `BufferFull` when the outbox
    /// is at its bound (`publish_buffer`, default 100 000).
    pub async fn publish(&self, event: Event) -> Result<(), ClientError> {
        self.publisher.publish_stored(event).await
    }

    /// `daemon@node`.
    pub fn source(&self) -> String {
        format!("{}@{}", self.name, self.node)
    }

    /// A context for in-process tests of a daemon's `build` and `Handler`: home `home`,
    /// settings from `toml` over the daemon's declared defaults (`info`: its `INFO`, or a
    /// bare name for a daemon the registry does not know), lifecycle validated as
    /// at start, and a publisher that records (the returned handle reads it). The router
    /// client is lazy and points at 127.0.0.1:1 (nothing); [`Context::with_router`]
    /// points it at a router, e.g. one started in process by the router's tests harness.
    /// Needs a tokio runtime (the lazy client spawns its worker).
    pub fn for_test(
        info: impl Into<DaemonInfo>,
        home: &Path,
        toml: &str,
    ) -> anyhow::Result<(Context, Recorded)> {
        let info = info.into();
        let name = info.name;
        let settings = Settings::load(&settings::Sources {
            home: home.to_owned(),
            defaults: info.defaults(),
            extra_toml: Some(toml.to_owned()),
            ..Default::default()
        })?;
        let lifecycle = LifecycleConfig::load(&settings, &info)?;
        let recorded = Recorded::default();
        let router_addr = "127.0.0.1:1".to_owned();
        let ctx = Context {
            name,
            node: "test".into(),
            home: home.to_owned(),
            settings,
            lifecycle,
            client: crate::router_client::connect_lazy(&router_addr)?,
            router_addr,
            publisher: Arc::new(recorded.clone()),
            errors: ErrorLog::new(50),
            shutdown: CancellationToken::new(),
            configs: Vec::new(),
            once: false,
        };
        Ok((ctx, recorded))
    }

    /// This context with its router client connected to `addr` (tests).
    pub fn with_router(mut self, addr: &str) -> Result<Context, ClientError> {
        self.client = crate::router_client::connect_lazy(addr)?;
        self.router_addr = addr.to_owned();
        Ok(self)
    }
}

/// Builds a daemon's handler from its context. An `Err` that is (or wraps) a
/// [`ConfigError`] exits 64 (not restarted); any other, e.g. a store that cannot be
/// opened, exits 1 (restarted with backoff).
pub type Factory = fn(&Context) -> anyhow::Result<Arc<dyn Handler>>;

/// What a non-handler service (the router) gets.
#[derive(Clone)]
pub struct ServiceContext {
    pub name: &'static str,
    pub node: String,
    pub home: PathBuf,
    pub settings: Settings,
    pub lifecycle: LifecycleConfig,
    pub shutdown: CancellationToken,
    pub once: bool,
    probe: Arc<std::sync::OnceLock<Probe>>,
}

/// A service's own progress check: `Err(why)` stops the watchdog pings.
pub type Probe = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

impl ServiceContext {
    /// Tells the launcher / systemd that the service is ready.
    pub fn ready(&self) {
        notify_ready();
    }

    /// Makes the systemd watchdog ping depend on `probe` (e.g. the router's log writer
    /// still commits); only the first call counts.
    pub fn set_probe(&self, probe: Probe) {
        let _ = self.probe.set(probe);
    }

    /// A service context for in-process tests: home `home`, settings from `toml`.
    pub fn for_test(
        info: impl Into<DaemonInfo>,
        home: &Path,
        toml: &str,
        shutdown: CancellationToken,
    ) -> anyhow::Result<ServiceContext> {
        let info = info.into();
        let settings = Settings::from_toml(toml)?;
        Ok(ServiceContext {
            name: info.name,
            node: "test".into(),
            home: home.to_owned(),
            lifecycle: LifecycleConfig::load(&settings, &info)?,
            settings,
            shutdown,
            once: false,
            probe: Arc::default(),
        })
    }
}

/// A service body: runs until `ctx.shutdown` fires. `Err` from before readiness exits 1.
pub type ServiceFn = fn(ServiceContext) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

struct Boot {
    args: CommonArgs,
    home: PathBuf,
    settings: Settings,
    lifecycle: LifecycleConfig,
    node: String,
}

fn boot(info: DaemonInfo) -> Result<Boot, ExitCode> {
    let cmd = CommonArgs::command()
        .name(format!("ringrift-{}", info.name.replace('_', "-")))
        .about(info.about);
    let matches = cmd
        .try_get_matches()
        .map_err(|e| crate::cli::usage_exit(&e))?;
    let args = CommonArgs::from_arg_matches(&matches).map_err(|e| crate::cli::usage_exit(&e))?;
    let home = settings::resolve_home(args.home.as_deref());
    let fail = |msg: String| {
        eprintln!("ringrift-{}: {msg}", info.name.replace('_', "-"));
        ExitCode::from(EXIT_CONFIG)
    };
    let overrides = args.overrides().map_err(fail)?;
    let settings = Settings::load(
        &settings::Sources::standard(&home, args.config.clone(), overrides)
            .with_defaults(info.defaults()),
    )
    .map_err(|e| fail(e.to_string()))?;
    let lifecycle = LifecycleConfig::load(&settings, &info).map_err(|e| fail(e.to_string()))?;
    init_tracing(&settings);
    std::fs::create_dir_all(&home).map_err(|e| {
        eprintln!(
            "ringrift-{}: cannot create the home directory {}: {e}",
            info.name.replace('_', "-"),
            home.display()
        );
        ExitCode::from(crate::EXIT_IO)
    })?;
    let node = settings.node_name().map_err(|e| fail(e.to_string()))?;
    Ok(Boot {
        args,
        home,
        settings,
        lifecycle,
        node,
    })
}

fn init_tracing(settings: &Settings) {
    use std::io::IsTerminal;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| settings.string("log"))
        .unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::io::stderr().is_terminal() {
        b.try_init()
    } else {
        b.json().flatten_event(true).try_init()
    };
}

fn runtime(life: &LifecycleConfig) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(life.worker_threads)
        .enable_all()
        .build()
}

fn notify_ready() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}

/// Pings the systemd watchdog at half its interval while every loop progresses (a
/// service without loops: while the runtime is alive).
fn spawn_watchdog(
    shutdown: CancellationToken,
    live: Option<Arc<Liveness>>,
    probe: Option<Arc<std::sync::OnceLock<Probe>>>,
) {
    let Some(usec) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = usec / 2;
    tokio::spawn(async move {
        let mut t = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = t.tick() => {}
            }
            let stalled = live
                .as_ref()
                .and_then(|l| l.stalled(Instant::now()))
                .or_else(|| probe.as_ref()?.get().and_then(|p| p().err()));
            match stalled {
                None => {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
                Some(why) => tracing::warn!("not pinging the watchdog: {why}"),
            }
        }
    });
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
        _ = shutdown.cancelled() => {}
    }
    shutdown.cancel();
}

/// Entry point for a service such as the router: config, tracing, signals, readiness.
pub fn service_main(info: DaemonInfo, body: ServiceFn) -> ExitCode {
    let b = match boot(info) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let rt = match runtime(&b.lifecycle) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    let ctx = ServiceContext {
        name: info.name,
        node: b.node,
        home: b.home,
        settings: b.settings,
        lifecycle: b.lifecycle,
        shutdown: shutdown.clone(),
        once: b.args.once,
        probe: Arc::default(),
    };
    let probe = ctx.probe.clone();
    rt.block_on(async move {
        tokio::spawn(wait_for_signal(shutdown.clone()));
        spawn_watchdog(shutdown.clone(), None, Some(probe));
        match body(ctx).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => start_failed(&e, &format!("{} failed", info.name)),
        }
    })
}

/// Entry point for every handler daemon. `main.rs` is `daemon_main(INFO, build)`.
pub fn daemon_main(info: DaemonInfo, factory: Factory) -> ExitCode {
    let b = match boot(info) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let router_addr = b
        .args
        .router
        .clone()
        .or_else(|| b.settings.string("router"))
        .or_else(|| crate::read_addr_file(&b.home, "event_router"))
        .unwrap_or_else(|| "127.0.0.1:8780".into());
    let rt = match runtime(&b.lifecycle) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run_daemon(info, factory, b, router_addr))
}

/// Exit code for a failed start: see [`crate::start_exit_code`] (64 configuration, 74
/// I/O, else 1).
fn start_failed(e: &anyhow::Error, what: &str) -> ExitCode {
    tracing::error!(error = format!("{e:#}"), "{what}");
    ExitCode::from(crate::start_exit_code(e))
}

async fn run_daemon(info: DaemonInfo, factory: Factory, b: Boot, router_addr: String) -> ExitCode {
    let creds = crate::auth::load(&b.settings)
        .and_then(|t| crate::tls::Tls::load(&b.settings).map(|tls| tls.bearer(t.as_ref())));
    let bearer = match creds {
        Ok(b) => b,
        Err(e) => {
            eprintln!("ringrift-{}: {e}", info.name.replace('_', "-"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let client = match crate::router_client::connect_lazy_with(&router_addr, bearer) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringrift-{}: {e}", info.name.replace('_', "-"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let source = format!("{}@{}", info.name, b.node);
    let outbox = b.home.join("run/outbox").join(format!("{}.db", info.name));
    let bound = b.lifecycle.publish_buffer;
    let publisher = match Publisher::open(client.clone(), source, &outbox, bound).await {
        Ok(p) => p,
        Err(e) => return start_failed(&e.into(), "cannot open the publish outbox"),
    };
    let configs = b
        .args
        .configs
        .as_deref()
        .map(|s| {
            s.split(',')
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let ctx = Context {
        name: info.name,
        node: b.node,
        home: b.home,
        settings: b.settings,
        lifecycle: b.lifecycle,
        router_addr,
        client,
        publisher: Arc::new(publisher),
        errors: ErrorLog::new(50),
        shutdown: CancellationToken::new(),
        configs,
        once: b.args.once,
    };
    let handler = match factory(&ctx) {
        Ok(h) => h,
        Err(e) => return start_failed(&e, "cannot build the daemon"),
    };
    let life = ctx.lifecycle.clone();
    if let Err(e) = handler.on_start(&ctx).await {
        return start_failed(&e, "on_start failed");
    }
    if ctx.once {
        let r = handler.run_cycle(&ctx).await;
        flush(ctx.publisher.as_ref(), Duration::from_secs(10)).await;
        handler.on_stop(&ctx).await;
        return match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "cycle failed");
                ExitCode::FAILURE
            }
        };
    }
    let started = Instant::now();
    let live = Arc::new(Liveness::new(life.stuck_after(handler.longest_call())));
    tokio::spawn(wait_for_signal(ctx.shutdown.clone()));
    spawn_watchdog(ctx.shutdown.clone(), Some(live.clone()), None);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(cycle_loop(
        handler.clone(),
        ctx.clone(),
        life.cycle_interval,
        live.register("cycle"),
    ));
    let subs = handler.subscriptions();
    let refusal = crate::router_client::Refusal::default();
    if !subs.is_empty() {
        tasks.spawn(event_loop(
            handler.clone(),
            ctx.clone(),
            subs,
            Arc::new(life.clone()),
            live.clone(),
            refusal.clone(),
        ));
    }
    tasks.spawn(heartbeat_loop(
        handler.clone(),
        ctx.clone(),
        life.heartbeat_interval,
        started,
        live.clone(),
        refusal,
    ));
    notify_ready();
    tracing::info!(router = %ctx.router_addr, home = %ctx.home.display(), interval_s = life.cycle_interval.as_secs_f64(), lifecycle = ?life, "{} started", info.name);
    // Every task runs until shutdown: one that ends before it (returned or panicked)
    // leaves the daemon half alive, so the whole process ends and is restarted.
    let died = tokio::select! {
        _ = ctx.shutdown.cancelled() => None,
        Some(r) = tasks.join_next() => (!ctx.shutdown.is_cancelled()).then_some(r),
    };
    let code = match died {
        None => ExitCode::SUCCESS,
        Some(r) => {
            let why = match r {
                Ok(()) => "returned".to_owned(),
                Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e.into_panic())),
                Err(e) => e.to_string(),
            };
            tracing::error!("a daemon task {why}; exiting so the daemon is restarted");
            ctx.shutdown.cancel();
            ExitCode::FAILURE
        }
    };
    let grace = life.stop_grace;
    let stop = async {
        while tasks.join_next().await.is_some() {}
        handler.on_stop(&ctx).await;
        flush(ctx.publisher.as_ref(), Duration::from_secs(2)).await;
    };
    if tokio::time::timeout(grace, stop).await.is_err() {
        tracing::warn!("stop took longer than {grace:?}; exiting anyway");
    }
    code
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Waits (bounded) until buffered events reached the router.
async fn flush(p: &dyn Publish, limit: Duration) {
    let deadline = Instant::now() + limit;
    while p.buffered() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn cycle_loop(h: Arc<dyn Handler>, ctx: Context, interval: Duration, pulse: Arc<Pulse>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let _busy = pulse.busy();
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            r = h.run_cycle(&ctx) => match r {
                Ok(()) => ctx.errors.work_succeeded(),
                Err(e) => ctx.errors.work_failed("cycle failed", &format!("{e:#}")),
            },
        }
    }
}

/// What the lanes of one event loop share.
struct Lanes {
    /// Ids handled with `Ok` within the window.
    dedup: std::sync::Mutex<Dedup>,
    /// Events received and not yet acked or nacked, each with whether its handler has
    /// started (else it waits for its lane). The router's ack-wait clock of each is kept
    /// from running out by in-progress acks ([`progress_loop`]), so an event queued behind
    /// a long handler is not redelivered or dead-lettered for the wait; queued ones are
    /// reported as queued, so a restart with them queued is no failed delivery of theirs.
    held: std::sync::Mutex<std::collections::BTreeMap<u64, bool>>,
    /// At most `max_concurrent` handler calls at once.
    permits: tokio::sync::Semaphore,
}

impl Lanes {
    fn held(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, bool>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn dedup(&self) -> std::sync::MutexGuard<'_, Dedup> {
        self.dedup.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads the subscription and hands each event to its lane ([`Handler::lane`]); each lane
/// handles its events in order, lanes run side by side up to [`Handler::max_concurrent`].
/// While the router refuses the subscription (`refusal`, which the heartbeat reports as
/// DEGRADED) it retries with backoff (1 s doubling to 30 s); after
/// `subscribe_refused_exit_s` of refusals it ends, and with it the process (exit 1).
async fn event_loop(
    h: Arc<dyn Handler>,
    ctx: Context,
    types: Vec<EventType>,
    life: Arc<LifecycleConfig>,
    live: Arc<Liveness>,
    refusal: crate::router_client::Refusal,
) {
    let req = wire::SubscribeRequest {
        consumer: crate::scope::consumer(&ctx),
        types: types.iter().map(|t| *t as i32).collect(),
        prefixes: Vec::new(),
        start: h
            .replay_history()
            .then_some(wire::subscribe_request::Start::FromSeq(1)),
        ack_wait_ms: u32::try_from(life.ack_wait.as_millis()).unwrap_or(u32::MAX),
        max_ack_pending: life.max_ack_pending,
    };
    let mut sub = match crate::scope::subscription(h.as_ref(), &ctx, req, &refusal).await {
        Ok(sub) => sub,
        Err(why) => {
            tracing::error!(
                "{why}; exiting so the supervisor restarts the daemon or shows it failed"
            );
            return;
        }
    };
    let mut refused_backoff =
        crate::router_client::Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut gave_up = false;
    let acker = sub.acker();
    let shared = Arc::new(Lanes {
        dedup: std::sync::Mutex::new(Dedup::new(Duration::from_secs(300), 100_000)),
        held: Default::default(),
        permits: tokio::sync::Semaphore::new(h.max_concurrent().max(1)),
    });
    let mut lanes: std::collections::HashMap<String, tokio::sync::mpsc::UnboundedSender<Event>> =
        Default::default();
    let mut workers = tokio::task::JoinSet::new();
    workers.spawn(progress_loop(
        acker.clone(),
        shared.clone(),
        life.ack_wait / 3,
        ctx.shutdown.clone(),
    ));
    loop {
        let ev = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            ev = sub.next() => ev,
            // A worker ends before shutdown only by a panic in the handler: this loop
            // ends the same way, so the process exits and is restarted. One that ended
            // because shutdown began goes the graceful way below, so the others finish
            // the event in hand instead of being dropped with this loop.
            Some(done) = workers.join_next() => match done {
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                _ => break,
            },
        };
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                ctx.errors.record("subscription", &e);
                let wait = match refusal.get() {
                    None => Duration::from_secs(1),
                    Some((lasted, _)) => {
                        if let Some(why) = crate::scope::refused_too_long(&ctx, &refusal) {
                            tracing::error!(
                                "{why}; exiting so the supervisor restarts the daemon or shows it failed"
                            );
                            gave_up = true;
                            break;
                        }
                        // Wake at the bound at the latest, to exit on time.
                        refused_backoff
                            .step()
                            .min(life.subscribe_refused_exit.saturating_sub(lasted))
                    }
                };
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
        };
        refused_backoff.reset();
        shared.held().insert(ev.seq, false);
        let tx = lanes.entry(h.lane(&ev)).or_insert_with(|| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            workers.spawn(lane_worker(
                h.clone(),
                ctx.clone(),
                rx,
                acker.clone(),
                shared.clone(),
                live.register("event"),
            ));
            tx
        });
        // A worker ends only at shutdown, so the send cannot fail before it.
        let _ = tx.send(ev);
    }
    // Each worker finishes the event in hand (bounded by the stop grace) and stops; the
    // events still queued stay unacked and come again after the restart.
    drop(lanes);
    // Giving up is not shutdown: the progress loop (runs until shutdown) is the one task
    // left to wait for once the lane workers are done; then this loop ends, and with it
    // the process (exit 1).
    let keep = usize::from(gave_up);
    while workers.len() > keep && workers.join_next().await.is_some() {}
}

/// Handles one lane's events in order: dedup, the handler, then ack or nack.
async fn lane_worker(
    h: Arc<dyn Handler>,
    ctx: Context,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    acker: crate::router_client::Acker,
    shared: Arc<Lanes>,
    pulse: Arc<Pulse>,
) {
    // Acks in flight (sent while the lane goes on): awaited before the worker ends, so a
    // stop does not drop the ack of an event it finished (it would be handled again).
    let mut acks = tokio::task::JoinSet::new();
    loop {
        while acks.try_join_next().is_some() {}
        let ev = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => break,
            ev = rx.recv() => match ev {
                Some(ev) => ev,
                None => break,
            },
        };
        let _permit = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => break,
            p = shared.permits.acquire() => p,
        };
        let _busy = pulse.busy();
        let outcome = if shared.dedup().seen(&ev.id, Instant::now()) {
            Ok(())
        } else {
            // Marked started at the router before the handler runs: if the process dies
            // in the handler, that delivery counts (a poison event is dead-lettered);
            // events still queued do not.
            shared.held().insert(ev.seq, true);
            match tokio::time::timeout(Duration::from_secs(5), acker.progress(ev.seq)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, seq = ev.seq, "start not reported"),
                Err(_) => tracing::warn!(seq = ev.seq, "start not reported within 5 s"),
            }
            let r = h.handle_event(&ctx, &ev).await;
            if r.is_ok() {
                shared.dedup().record(&ev.id, Instant::now());
            }
            r
        };
        shared.held().remove(&ev.seq);
        let r = match outcome {
            Ok(()) => {
                ctx.errors.work_succeeded();
                // The ack goes out while the lane takes its next event: one round trip per
                // event instead of two (the start report above stays awaited: it is what
                // charges a poison event). In flight at once: at most the router's
                // max_ack_pending. Lost with the process, it is a redelivery, as before.
                let (acker, seq) = (acker.clone(), ev.seq);
                acks.spawn(async move {
                    if let Err(e) = acker.ack(seq, false).await {
                        tracing::warn!(error = %e, seq, "ack failed");
                    }
                });
                Ok(())
            }
            Err(e) => {
                ctx.errors.work_failed(
                    &format!("handle {} #{}", ringrift_proto::type_name(ev.kind), ev.seq),
                    &format!("{e:#}"),
                );
                acker.nack(ev.seq, &format!("{e:#}")).await.map(|_| ())
            }
        };
        if let Err(e) = r {
            // The router will redeliver after the reconnect; dedup only guards handled ones.
            tracing::warn!(error = %e, seq = ev.seq, "ack/nack failed");
        }
    }
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while acks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            in_flight = acks.len(),
            "acks not answered within 5 s of the stop; those events come again"
        );
    }
}

/// Every `every`, tells the router that each held event is still here, being handled or
/// queued for its lane (reported as queued: not started), so its ack-wait clock does not
/// run out meanwhile.
async fn progress_loop(
    acker: crate::router_client::Acker,
    shared: Arc<Lanes>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let held: Vec<(u64, bool)> = shared.held().iter().map(|(s, b)| (*s, *b)).collect();
        // All at once, not one round trip after another: with many events held on a
        // loaded machine, a sequential pass outlasted the ack wait it was renewing.
        let mut reports = tokio::task::JoinSet::new();
        for (seq, started) in held {
            let acker = acker.clone();
            reports.spawn(async move {
                // Started stays started at the router: a queued report that crosses the
                // handler's start report does not undo it.
                let report = async {
                    if started {
                        acker.progress(seq).await
                    } else {
                        acker.progress_queued(seq).await
                    }
                };
                match tokio::time::timeout(every, report).await {
                    Ok(Ok(())) => {}
                    // Acked or nacked meanwhile, or the stream reconnected: nothing lost
                    // (the router redelivers what it no longer holds for us).
                    Ok(Err(e)) => tracing::debug!(error = %e, seq, "in-progress ack failed"),
                    Err(_) => tracing::warn!(seq, "in-progress ack timed out"),
                }
            });
        }
        while reports.join_next().await.is_some() {}
    }
}

/// The handler's health, with the newest error added to the details; DEGRADED (with
/// the newest error as the reason) once `degraded_after` handlings or cycles in a row
/// failed, whatever the handler itself says.
pub fn health_of(h: &dyn Handler, errors: &ErrorLog, degraded_after: u32) -> HealthCheckResult {
    let mut r = h.health_check();
    let (failed, why) = errors.failing();
    if failed >= degraded_after && r.status == HealthStatus::Running {
        r.status = HealthStatus::Degraded;
        r.message = format!("last {failed} handlings/cycles failed; newest: {why}");
    }
    if failed > 0 {
        r.details.insert("failed_in_row".into(), failed.to_string());
    }
    if let Some((t, msg)) = errors.recent().into_iter().next() {
        r.details.insert("last_error".into(), msg);
        r.details.insert("last_error_unix_ms".into(), t.to_string());
        r.details
            .insert("errors_total".into(), errors.total().to_string());
    }
    r
}

/// A daemon whose subscription the router refuses is DEGRADED with the router's reason
/// (detail `subscribe_refused`) and says when it gives up; worse states stay.
fn refusal_health(
    h: &mut HealthCheckResult,
    r: &crate::router_client::Refusal,
    exit_after: Duration,
) {
    let Some((lasted, why)) = r.get() else {
        return;
    };
    if matches!(h.status, HealthStatus::Running | HealthStatus::Starting) {
        h.status = HealthStatus::Degraded;
        h.message = format!(
            "the router refuses the event subscription for {:.0} s ({why}); exits after {:.0} s of it",
            lasted.as_secs_f64(),
            exit_after.as_secs_f64()
        );
    }
    h.details.insert("subscribe_refused".into(), why);
}

async fn heartbeat_loop(
    h: Arc<dyn Handler>,
    ctx: Context,
    every: Duration,
    started: Instant,
    live: Arc<Liveness>,
    refusal: crate::router_client::Refusal,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut health = health_of(
            h.as_ref(),
            &ctx.errors,
            ctx.lifecycle.degraded_after_failures,
        );
        crate::publish::publisher_health(&mut health, ctx.publisher.as_ref());
        refusal_health(&mut health, &refusal, ctx.lifecycle.subscribe_refused_exit);
        if let Some(why) = live.stalled(Instant::now()) {
            health.healthy = false;
            health.status = HealthStatus::Error;
            health.details.insert(crate::STALLED.into(), why.clone());
            health.message = why;
        }
        let hb = wire::DaemonHeartbeat {
            daemon: ctx.name.to_owned(),
            pid: std::process::id(),
            node: ctx.node.clone(),
            uptime_s: started.elapsed().as_secs_f64(),
            health: Some(health.into()),
        };
        // Heartbeats are state, not history: a newer one replaces one not sent yet.
        ctx.publisher
            .publish_latest(Event::new(wire::event::Payload::DaemonHeartbeat(hb)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fine;

    #[async_trait::async_trait]
    impl Handler for Fine {
        async fn run_cycle(&self, _ctx: &Context) -> anyhow::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn failed_work_in_a_row_turns_health_degraded_with_the_reason() {
        let errors = ErrorLog::new(8);
        errors.work_failed(
            "handle TRAINING_COMPLETED #4",
            &"evaluate job exited with code 2",
        );
        errors.work_failed(
            "handle TRAINING_COMPLETED #4",
            &"evaluate job exited with code 2",
        );
        assert_eq!(health_of(&Fine, &errors, 3).status, HealthStatus::Running);
        errors.work_failed("cycle failed", &"selfplay job timed out");
        let h = health_of(&Fine, &errors, 3);
        assert_eq!(h.status, HealthStatus::Degraded);
        assert!(
            h.message.contains("selfplay job timed out"),
            "{}",
            h.message
        );
        assert_eq!(h.details["failed_in_row"], "3");
        errors.work_succeeded();
        assert_eq!(health_of(&Fine, &errors, 3).status, HealthStatus::Running);
    }

    #[test]
    fn a_refused_subscription_turns_health_degraded_with_the_reason() {
        let r = crate::router_client::Refusal::default();
        let mut h = HealthCheckResult::running("ok");
        refusal_health(&mut h, &r, Duration::from_secs(300));
        assert_eq!(h, HealthCheckResult::running("ok"), "no refusal, no change");
        r.set("InvalidArgument: consumer name must be at most 200 printable characters");
        refusal_health(&mut h, &r, Duration::from_secs(300));
        assert_eq!(h.status, HealthStatus::Degraded);
        assert!(
            h.message.contains("at most 200") && h.message.contains("300 s"),
            "{}",
            h.message
        );
        assert!(h.details["subscribe_refused"].contains("InvalidArgument"));
        let mut e = HealthCheckResult::error("stalled");
        refusal_health(&mut e, &r, Duration::from_secs(300));
        assert_eq!(e.status, HealthStatus::Error, "worse states stay");
        r.clear();
        assert!(r.get().is_none());
    }
}
