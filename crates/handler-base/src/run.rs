//! The process lifecycle: start-up sequence, the cycle/event/heartbeat tasks, and stop.

use crate::{CommonArgs, Dedup, EXIT_CONFIG, ErrorLog, HealthCheckResult, Settings, settings};
use clap::{CommandFactory, FromArgMatches};
use ringrift_proto::{Event, EventType, wire};
use router_client::{Client, Publisher, Subscription};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Static facts about a daemon binary.
#[derive(Debug, Clone, Copy)]
pub struct DaemonInfo {
    /// Registry name, e.g. `auto_sync`.
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
}

/// The periodic work and event reactions of one daemon.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Time between `run_cycle` calls (config `<name>.cycle_interval_s` overrides it).
    fn cycle_interval(&self) -> Duration;
    /// Event types this daemon reacts to (durable consumer named after the daemon).
    fn subscriptions(&self) -> Vec<EventType> {
        Vec::new()
    }
    async fn on_start(&self, _ctx: &Context) -> anyhow::Result<()> {
        Ok(())
    }
    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()>;
    /// Reacts to one subscribed event. `Err` nacks it (redelivered, dead-lettered after
    /// the router's limit). Events are deduplicated by id before they get here.
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
    pub router_addr: String,
    pub client: Client,
    pub publisher: Publisher,
    pub errors: ErrorLog,
    pub shutdown: CancellationToken,
    /// `--configs`, validated by the daemon that uses it.
    pub configs: Vec<String>,
    pub once: bool,
}

impl Context {
    /// Queues an event for the router (buffered through outages).
    pub fn publish(&self, event: Event) {
        if let Err(e) = self.publisher.publish(event) {
            self.errors.record("publish event", &e);
        }
    }

    /// `daemon@node`.
    pub fn source(&self) -> String {
        format!("{}@{}", self.name, self.node)
    }
}

/// Builds a daemon's handler from its context; an `Err` is a configuration error (exit 64).
pub type Factory = fn(&Context) -> anyhow::Result<Arc<dyn Handler>>;

/// What a non-handler service (the router) gets.
#[derive(Clone)]
pub struct ServiceContext {
    pub name: &'static str,
    pub node: String,
    pub home: PathBuf,
    pub settings: Settings,
    pub shutdown: CancellationToken,
    pub once: bool,
}

impl ServiceContext {
    /// Tells the launcher / systemd that the service is ready.
    pub fn ready(&self) {
        notify_ready();
    }
}

/// A service body: runs until `ctx.shutdown` fires. `Err` from before readiness exits 1.
pub type ServiceFn = fn(ServiceContext) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

struct Boot {
    args: CommonArgs,
    home: PathBuf,
    settings: Settings,
    node: String,
}

fn boot(info: DaemonInfo) -> Result<Boot, ExitCode> {
    let cmd = CommonArgs::command()
        .name(format!("ringrift-{}", info.name.replace('_', "-")))
        .about(info.about);
    let matches = cmd.try_get_matches().map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::from(EXIT_CONFIG)
        } else {
            ExitCode::SUCCESS
        }
    })?;
    let args = CommonArgs::from_arg_matches(&matches).map_err(|e| {
        let _ = e.print();
        ExitCode::from(EXIT_CONFIG)
    })?;
    let home = settings::resolve_home(args.home.as_deref());
    let fail = |msg: String| {
        eprintln!("ringrift-{}: {msg}", info.name.replace('_', "-"));
        ExitCode::from(EXIT_CONFIG)
    };
    let overrides = args.overrides().map_err(fail)?;
    let settings = Settings::load(&settings::Sources::standard(
        &home,
        args.config.clone(),
        overrides,
    ))
    .map_err(|e| fail(e.to_string()))?;
    init_tracing(&settings);
    std::fs::create_dir_all(&home)
        .map_err(|e| fail(format!("create home {}: {e}", home.display())))?;
    let node = settings.string("node").unwrap_or_else(hostname);
    Ok(Boot {
        args,
        home,
        settings,
        node,
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
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

fn runtime(settings: &Settings) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = settings
        .get::<usize>("worker_threads")
        .ok()
        .flatten()
        .unwrap_or(2)
        .max(1);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
}

fn notify_ready() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}

/// Pings the systemd watchdog at half its interval while the runtime is alive.
fn spawn_watchdog(shutdown: CancellationToken) {
    let Some(usec) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = usec / 2;
    tokio::spawn(async move {
        let mut t = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = t.tick() => { let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]); }
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
    let rt = match runtime(&b.settings) {
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
        shutdown: shutdown.clone(),
        once: b.args.once,
    };
    rt.block_on(async move {
        tokio::spawn(wait_for_signal(shutdown.clone()));
        spawn_watchdog(shutdown.clone());
        match body(ctx).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "{} failed", info.name);
                if e.downcast_ref::<crate::ConfigError>().is_some() {
                    ExitCode::from(EXIT_CONFIG)
                } else {
                    ExitCode::FAILURE
                }
            }
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
    let rt = match runtime(&b.settings) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run_daemon(info, factory, b, router_addr))
}

async fn run_daemon(info: DaemonInfo, factory: Factory, b: Boot, router_addr: String) -> ExitCode {
    let bearer = match crate::auth::load(&b.settings) {
        Ok(t) => crate::auth::Token::bearer(t.as_ref()),
        Err(e) => {
            eprintln!("ringrift-{}: {e}", info.name.replace('_', "-"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let client = match router_client::connect_lazy_with(&router_addr, bearer) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringrift-{}: {e}", info.name.replace('_', "-"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let source = format!("{}@{}", info.name, b.node);
    let capacity = b
        .settings
        .get::<usize>("publish_buffer")
        .ok()
        .flatten()
        .unwrap_or(10_000);
    let publisher = Publisher::spawn(client.clone(), source, capacity);
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
        router_addr,
        client,
        publisher,
        errors: ErrorLog::new(50),
        shutdown: CancellationToken::new(),
        configs,
        once: b.args.once,
    };
    let handler = match factory(&ctx) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "bad configuration");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let interval = match ctx
        .settings
        .get::<f64>(&format!("{}.cycle_interval_s", info.name))
    {
        Ok(Some(s)) if s > 0.0 => Duration::from_secs_f64(s),
        Ok(Some(s)) => {
            tracing::error!("{}.cycle_interval_s = {s}: must be > 0", info.name);
            return ExitCode::from(EXIT_CONFIG);
        }
        Ok(None) => handler.cycle_interval(),
        Err(e) => {
            tracing::error!(error = %e, "bad configuration");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = handler.on_start(&ctx).await {
        tracing::error!(error = format!("{e:#}"), "on_start failed");
        return ExitCode::FAILURE;
    }
    if ctx.once {
        let r = handler.run_cycle(&ctx).await;
        flush(&ctx.publisher, Duration::from_secs(10)).await;
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
    tokio::spawn(wait_for_signal(ctx.shutdown.clone()));
    spawn_watchdog(ctx.shutdown.clone());
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(cycle_loop(handler.clone(), ctx.clone(), interval));
    let subs = handler.subscriptions();
    if !subs.is_empty() {
        tasks.spawn(event_loop(handler.clone(), ctx.clone(), subs));
    }
    let hb = ctx
        .settings
        .get::<f64>("heartbeat_interval_s")
        .ok()
        .flatten()
        .unwrap_or(10.0)
        .max(0.05);
    tasks.spawn(heartbeat_loop(
        handler.clone(),
        ctx.clone(),
        Duration::from_secs_f64(hb),
        started,
    ));
    notify_ready();
    tracing::info!(router = %ctx.router_addr, home = %ctx.home.display(), interval_s = interval.as_secs_f64(), "{} started", info.name);
    ctx.shutdown.cancelled().await;
    let grace = Duration::from_secs_f64(
        ctx.settings
            .get::<f64>("stop_grace_s")
            .ok()
            .flatten()
            .unwrap_or(10.0),
    );
    let stop = async {
        while tasks.join_next().await.is_some() {}
        handler.on_stop(&ctx).await;
        flush(&ctx.publisher, Duration::from_secs(2)).await;
    };
    if tokio::time::timeout(grace, stop).await.is_err() {
        tracing::warn!("stop took longer than {grace:?}; exiting anyway");
    }
    ExitCode::SUCCESS
}

/// Waits (bounded) until buffered events reached the router.
async fn flush(p: &Publisher, limit: Duration) {
    let deadline = Instant::now() + limit;
    while p.buffered() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn cycle_loop(h: Arc<dyn Handler>, ctx: Context, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            r = h.run_cycle(&ctx) => if let Err(e) = r { ctx.errors.record("cycle failed", &format!("{e:#}")) },
        }
    }
}

async fn event_loop(h: Arc<dyn Handler>, ctx: Context, types: Vec<EventType>) {
    let req = wire::SubscribeRequest {
        consumer: ctx.name.to_owned(),
        types: types.iter().map(|t| *t as i32).collect(),
        prefixes: Vec::new(),
        start: None,
        ..Default::default()
    };
    let mut sub = Subscription::new(ctx.client.clone(), req);
    let mut dedup = Dedup::new(Duration::from_secs(300), 100_000);
    loop {
        let ev = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            ev = sub.next() => ev,
        };
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                ctx.errors.record("subscription", &e);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let outcome = if dedup.first_time(&ev.id, Instant::now()) {
            h.handle_event(&ctx, &ev).await
        } else {
            Ok(())
        };
        let r = match outcome {
            Ok(()) => sub.ack(ev.seq, false).await.map(|_| ()),
            Err(e) => {
                ctx.errors.record(
                    &format!("handle {} #{}", ringrift_proto::type_name(ev.kind), ev.seq),
                    &format!("{e:#}"),
                );
                sub.nack(ev.seq, &format!("{e:#}")).await.map(|_| ())
            }
        };
        if let Err(e) = r {
            // The router will redeliver after the reconnect; dedup only guards handled ones.
            tracing::warn!(error = %e, seq = ev.seq, "ack/nack failed");
        }
    }
}

/// The handler's health, with the newest error added to the details.
pub fn health_of(h: &dyn Handler, errors: &ErrorLog) -> HealthCheckResult {
    let mut r = h.health_check();
    if let Some((t, msg)) = errors.recent().into_iter().next() {
        r.details.insert("last_error".into(), msg);
        r.details.insert("last_error_unix_ms".into(), t.to_string());
        r.details
            .insert("errors_total".into(), errors.total().to_string());
    }
    r
}

async fn heartbeat_loop(h: Arc<dyn Handler>, ctx: Context, every: Duration, started: Instant) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let health = health_of(h.as_ref(), &ctx.errors);
        let hb = wire::DaemonHeartbeat {
            daemon: ctx.name.to_owned(),
            pid: std::process::id(),
            node: ctx.node.clone(),
            uptime_s: started.elapsed().as_secs_f64(),
            health: Some(health.into()),
        };
        // Heartbeats are state, not history: a newer one supersedes a lost one, so drop
        // rather than queue them behind a full buffer.
        let _ = ctx
            .publisher
            .publish(Event::new(wire::event::Payload::DaemonHeartbeat(hb)));
    }
}
