//! A test daemon on handler-base, for launcher, handler-base and publisher tests and
//! benchmarks. It appends its lifecycle to `$RINGRIFT_HOME/test_daemon.log`
//! (`<event> <instance> <pid> <unix_ms> [<event id>]`) and misbehaves on command:
//! * crashes after `crash_after_s`, or when `run/<instance>.crash` appears (the file is
//!   removed first), exiting with `exit_code`;
//! * subscribes to `subscribe` (type names), records each handling attempt (`handle`),
//!   fails the first `fail_first` attempts of every event and every attempt of the ids in
//!   `always_fail`, takes `handle_s` seconds per attempt (recording `handled` when the
//!   wait is over); with `lanes` events of different config keys are handled side by
//!   side, up to `concurrent` at once;
//! * panics in its cycle or handler (`panic_in = "cycle" | "event"`);
//! * hangs in its cycle call, never to return, when `run/<instance>.hang` appears (the
//!   file is removed first, so the next process does not hang; records `hang`): a loop
//!   stuck in a handler call while the heartbeat keeps flowing;
//! * publishes `publish_burst` EXTERNAL events `burst:<i>` once, through `Context::publish`;
//!   the count accepted so far is kept in `run/<instance>.burst`, so a restarted daemon
//!   continues where the killed one stopped (events accepted before the kill must come
//!   from the outbox).
//! * publishes `publish_per_cycle` EXTERNAL events `tick:<instance>:<n>` every cycle, the
//!   count accepted into the outbox kept in `run/<instance>.ticks` (a steady publisher for
//!   partition tests), up to `tick_limit` in all when it is not 0 (the chaos suite's
//!   publishers: a fixed number of events, spread over the run);
//! * with `record_time`, appends the event's publish time (`time_unix_ms`) to each
//!   `handle` line, so a test can measure delivery delay;
//! * stalls one handling for `stall_s` seconds when `run/<instance>.stall` appears (the
//!   file is removed first; records `stall` and `unstall` with the event id): a handler
//!   busy past `ack_wait_s` while events queue behind it.

use handler_base::{Context, DaemonInfo, Handler, ensure_config};
use ringrift_proto::{Event, EventType, wire};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Not in the registry: no default interval, its scope a setting (`test_daemon.scope`).
pub const INFO: DaemonInfo = DaemonInfo::unregistered(
    "test_daemon",
    "Test daemon: records its lifecycle, crashes on command",
);

/// [`INFO`], named after the file it was run as: through a link named
/// `ringrift-test-daemon-<x>` (lower case, digits, dashes) it is daemon `test_daemon_<x>`,
/// with its own outbox, durable consumer and lifecycle keys (`[test_daemon_<x>]`), so
/// that several run in one home (the chaos suite's subscribers). Its own settings stay in
/// `[test_daemon]`.
pub fn info() -> DaemonInfo {
    let arg0 = std::env::args_os().next().unwrap_or_default();
    let file = std::path::Path::new(&arg0)
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or("");
    match file.strip_prefix("ringrift-test-daemon-") {
        Some(x)
            if !x.is_empty()
                && x.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
        {
            let name = format!("test_daemon_{}", x.replace('-', "_"));
            DaemonInfo {
                name: Box::leak(name.into_boxed_str()),
                ..INFO
            }
        }
        _ => INFO,
    }
}

/// `[test_daemon]` (usually set per instance with `--set test_daemon.x=...`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestConfig {
    pub instance: String,
    pub crash_after_s: Option<f64>,
    pub exit_code: i32,
    pub subscribe: Vec<String>,
    pub replay_history: bool,
    pub fail_first: u32,
    pub always_fail: Vec<String>,
    pub handle_s: f64,
    pub panic_in: String,
    pub publish_burst: u64,
    pub publish_per_cycle: u64,
    pub tick_limit: u64,
    pub record_time: bool,
    pub stall_s: f64,
    pub lanes: bool,
    pub concurrent: usize,
}

impl Default for TestConfig {
    fn default() -> Self {
        TestConfig {
            instance: "test".into(),
            crash_after_s: None,
            exit_code: 1,
            subscribe: Vec::new(),
            replay_history: false,
            fail_first: 0,
            always_fail: Vec::new(),
            handle_s: 0.0,
            panic_in: String::new(),
            publish_burst: 0,
            publish_per_cycle: 0,
            tick_limit: 0,
            record_time: false,
            stall_s: 0.0,
            lanes: false,
            concurrent: 1,
        }
    }
}

pub struct TestDaemon {
    cfg: TestConfig,
    record: PathBuf,
    crash_file: PathBuf,
    hang_file: PathBuf,
    stall_file: PathBuf,
    burst_file: PathBuf,
    started: Instant,
    types: Vec<EventType>,
    attempts: Mutex<HashMap<String, u32>>,
    burst_done: AtomicBool,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: TestConfig = ctx.settings.section("test_daemon")?;
    ensure_config!(cfg.handle_s >= 0.0, "test_daemon.handle_s must be >= 0");
    ensure_config!(
        cfg.stall_s.is_finite() && cfg.stall_s >= 0.0,
        "test_daemon.stall_s = {}: must be a finite number >= 0",
        cfg.stall_s
    );
    ensure_config!(cfg.concurrent >= 1, "test_daemon.concurrent must be >= 1");
    ensure_config!(
        ["", "cycle", "event"].contains(&cfg.panic_in.as_str()),
        "test_daemon.panic_in = {:?}: one of \"\", \"cycle\", \"event\"",
        cfg.panic_in
    );
    let mut types = Vec::new();
    for t in &cfg.subscribe {
        let Some(kind) = EventType::from_str_name(t) else {
            return Err(handler_base::ConfigError::Invalid(format!(
                "test_daemon.subscribe: unknown event type {t:?}"
            ))
            .into());
        };
        types.push(kind);
    }
    let run = ctx.home.join("run");
    Ok(Arc::new(TestDaemon {
        record: ctx.home.join("test_daemon.log"),
        crash_file: run.join(format!("{}.crash", cfg.instance)),
        hang_file: run.join(format!("{}.hang", cfg.instance)),
        stall_file: run.join(format!("{}.stall", cfg.instance)),
        burst_file: run.join(format!("{}.burst", cfg.instance)),
        cfg,
        started: Instant::now(),
        types,
        attempts: Mutex::new(HashMap::new()),
        burst_done: AtomicBool::new(false),
    }))
}

impl TestDaemon {
    fn record(&self, what: &str) {
        self.record_line(what, "");
    }

    fn record_line(&self, what: &str, extra: &str) {
        let line = format!(
            "{what} {} {} {}{}{extra}\n",
            self.cfg.instance,
            std::process::id(),
            handler_base::router_client::now_ms(),
            if extra.is_empty() { "" } else { " " },
        );
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.record)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }

    fn crash(&self, why: &str) -> ! {
        self.record("exit");
        eprintln!(
            "test daemon {} exiting with {} ({why})",
            self.cfg.instance, self.cfg.exit_code
        );
        std::process::exit(self.cfg.exit_code)
    }

    /// Publishes `publish_per_cycle` more ticks, counting them in the ticks file.
    async fn ticks(&self, ctx: &Context) -> anyhow::Result<()> {
        let file = self.burst_file.with_extension("ticks");
        let start: u64 = std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let mut end = start + self.cfg.publish_per_cycle;
        if self.cfg.tick_limit > 0 {
            end = end.min(self.cfg.tick_limit);
        }
        for n in start..end {
            let ev = Event::new(wire::event::Payload::Json(format!("{{\"n\": {n}}}")))
                .with_id(format!("tick:{}:{n}", self.cfg.instance));
            ctx.publish(ev).await?;
            write_count(&file, n + 1)?;
        }
        Ok(())
    }

    /// Publishes the rest of the burst: from the count in the burst file to the end.
    async fn burst(&self, ctx: &Context) -> anyhow::Result<()> {
        let done = |n: u64| write_count(&self.burst_file, n);
        let start: u64 = std::fs::read_to_string(&self.burst_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        for i in start..self.cfg.publish_burst {
            let ev = Event::new(wire::event::Payload::Json(format!("{{\"i\": {i}}}")))
                .with_id(format!("burst:{i}"));
            ctx.publish(ev).await?;
            if (i + 1) % 250 == 0 {
                done(i + 1)?;
            }
        }
        done(self.cfg.publish_burst)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handler for TestDaemon {
    fn subscriptions(&self) -> Vec<EventType> {
        self.types.clone()
    }

    fn replay_history(&self) -> bool {
        self.cfg.replay_history
    }

    fn lane(&self, ev: &Event) -> String {
        if self.cfg.lanes {
            ev.config_key.clone()
        } else {
            String::new()
        }
    }

    fn max_concurrent(&self) -> usize {
        self.cfg.concurrent
    }

    async fn handle_event(&self, _ctx: &Context, ev: &Event) -> anyhow::Result<()> {
        if self.cfg.record_time {
            self.record_line("handle", &format!("{} {}", ev.id, ev.time_unix_ms));
        } else {
            self.record_line("handle", &ev.id);
        }
        if self.cfg.stall_s > 0.0 && std::fs::remove_file(&self.stall_file).is_ok() {
            self.record_line("stall", &ev.id);
            tokio::time::sleep(Duration::from_secs_f64(self.cfg.stall_s)).await;
            self.record_line("unstall", &ev.id);
        }
        assert!(
            self.cfg.panic_in != "event",
            "panic_in = event: handler panics"
        );
        if self.cfg.handle_s > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(self.cfg.handle_s)).await;
            self.record_line("handled", &ev.id);
        }
        let attempt = {
            let mut a = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
            let n = a.entry(ev.id.clone()).or_insert(0);
            *n += 1;
            *n
        };
        anyhow::ensure!(
            !self.cfg.always_fail.contains(&ev.id),
            "{} always fails",
            ev.id
        );
        anyhow::ensure!(
            attempt > self.cfg.fail_first,
            "attempt {attempt} of {} fails (fail_first = {})",
            ev.id,
            self.cfg.fail_first
        );
        Ok(())
    }

    async fn on_start(&self, _ctx: &Context) -> anyhow::Result<()> {
        self.record("start");
        Ok(())
    }

    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        assert!(
            self.cfg.panic_in != "cycle",
            "panic_in = cycle: cycle panics"
        );
        if std::fs::remove_file(&self.hang_file).is_ok() {
            self.record("hang");
            std::future::pending::<()>().await;
        }
        if self.cfg.publish_burst > 0 && !self.burst_done.load(Ordering::Acquire) {
            self.burst(ctx).await?;
            self.burst_done.store(true, Ordering::Release);
            self.record("burst_done");
        }
        if self.cfg.publish_per_cycle > 0 {
            self.ticks(ctx).await?;
        }
        if self
            .cfg
            .crash_after_s
            .is_some_and(|s| self.started.elapsed().as_secs_f64() >= s)
        {
            self.crash("crash_after_s");
        }
        if std::fs::remove_file(&self.crash_file).is_ok() {
            self.crash("crash file");
        }
        Ok(())
    }

    async fn on_stop(&self, _ctx: &Context) {
        self.record("stop");
    }
}

/// Writes a count file atomically (a temp file renamed over it): tests poll these files,
/// and `std::fs::write` truncates first, so a reader could see an empty file and read 0.
fn write_count(file: &std::path::Path, n: u64) -> std::io::Result<()> {
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, n.to_string())?;
    std::fs::rename(&tmp, file)
}
