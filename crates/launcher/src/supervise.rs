//! The supervision of each daemon: spawn in its own process group with a parent-death
//! signal, wait for readiness (sd_notify READY=1 on a per-child notify socket), restart
//! after crashes with exponential backoff, give up after `max_restarts`, never restart
//! exit 64, and stop in reverse dependency order on shutdown.
//!
//! Liveness beyond "the process exists": a ready daemon whose DAEMON_HEARTBEAT (seen
//! through the launcher's one subscription to the router) is older than
//! 3 × `health_check_interval_s` while other heartbeats keep arriving is hung; it gets
//! SIGTERM, SIGKILL after the grace, and counts as a crash (systemd's WatchdogSec).
//! So is one whose heartbeat says a loop is stuck in one handler call (the `stalled`
//! detail, set past the daemon's `stuck_after_s`): its heartbeat still flows, but under
//! systemd its watchdog would no longer be pinged. While the router refuses the
//! launcher's token the heartbeat feed retries with backoff and proves nothing, so no
//! daemon counts as hung for want of heartbeats meanwhile.
//! A daemon whose dependency is FAILED waits as BLOCKED, saying which one.

use crate::logs::LogSink;
use ringrift_proto::Event;
use ringrift_proto::wire::{self, DaemonState};
use ringrift_registry::{DaemonSpec, ROUTER};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// `[launcher]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LauncherConfig {
    pub control: String,
    pub ready_timeout_s: f64,
    pub stop_grace_s: f64,
    pub backoff_base_s: f64,
    pub backoff_max_s: f64,
    /// A daemon ready this long before it crashes gets its restart counter reset.
    pub reset_after_s: f64,
    pub log_max_bytes: u64,
    pub log_keep: u32,
}

impl Default for LauncherConfig {
    fn default() -> Self {
        LauncherConfig {
            control: "127.0.0.1:8790".into(),
            ready_timeout_s: 60.0,
            stop_grace_s: 10.0,
            backoff_base_s: 1.0,
            backoff_max_s: 16.0,
            reset_after_s: 300.0,
            log_max_bytes: 10 << 20,
            log_keep: 3,
        }
    }
}

impl LauncherConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (k, v) in [
            ("ready_timeout_s", self.ready_timeout_s),
            ("stop_grace_s", self.stop_grace_s),
            ("backoff_base_s", self.backoff_base_s),
            ("reset_after_s", self.reset_after_s),
        ] {
            if !(v > 0.0) {
                return Err(format!("launcher.{k} must be > 0 (is {v})"));
            }
        }
        if self.backoff_max_s < self.backoff_base_s {
            return Err("launcher.backoff_max_s must be >= backoff_base_s".into());
        }
        Ok(())
    }

    /// Delay before restart number `n + 1`: base · 2^n, capped.
    pub fn backoff(&self, n: u32) -> Duration {
        Duration::from_secs_f64(
            (self.backoff_base_s * 2f64.powi(n.min(30) as i32)).min(self.backoff_max_s),
        )
    }
}

/// One daemon the launcher runs.
#[derive(Debug, Clone)]
pub struct Planned {
    pub spec: DaemonSpec,
    pub binary: PathBuf,
    /// Arguments after `--home` (and `--router`, added at spawn time).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub deps: Vec<String>,
}

/// Tells each daemon that reports on the others (`expects_plan` in the registry: the
/// health server) which daemons the plan holds: `--set <name>.expect=<a,b,...>`.
pub fn pass_the_plan(plan: &mut [Planned]) {
    let expect: Vec<String> = plan.iter().map(|p| p.spec.name.clone()).collect();
    for p in plan.iter_mut().filter(|p| p.spec.expects_plan) {
        p.args.push("--set".into());
        p.args
            .push(format!("{}.expect={}", p.spec.name, expect.join(",")));
    }
}

#[derive(Debug)]
pub enum Control {
    Stop,
    Restart,
    Shutdown,
}

/// What the control API shows for one daemon.
#[derive(Debug, Clone)]
pub struct Entry {
    pub state: DaemonState,
    pub pid: u32,
    pub restarts: u32,
    pub since: Option<Instant>,
    pub last_exit: String,
    pub health: Option<wire::HealthCheckResult>,
    /// When the launcher last saw a heartbeat of the current process.
    pub last_heartbeat: Option<Instant>,
    /// Why the daemon is in its state, when that needs saying (BLOCKED, hung).
    pub note: String,
}

/// State shared by the supervisors, the control API and the shutdown sequence.
pub struct Shared {
    pub profile: String,
    /// This machine's node name, as daemons put it in their heartbeats.
    pub node: String,
    /// The shared token: sent to the router, handed to children as `RINGRIFT_TOKEN`.
    token: Option<handler_base::auth::Token>,
    /// The launcher's client credentials (the token and `[tls]`), for the router.
    bearer: handler_base::router_client::Bearer,
    pub home: PathBuf,
    pub cfg: LauncherConfig,
    pub configs: Option<String>,
    entries: Mutex<BTreeMap<String, Entry>>,
    ready: BTreeMap<String, watch::Sender<bool>>,
    controls: BTreeMap<String, mpsc::Sender<Control>>,
    pub version: watch::Sender<u64>,
    events: Mutex<EventSink>,
    router_addr: Mutex<Option<String>>,
    feed: Mutex<Feed>,
}

/// The launcher's one connection to the router: a publisher for lifecycle events and the
/// heartbeat subscription, made once and reused across router restarts (the router keeps
/// its address); replaced, never duplicated, only if the address changes.
#[derive(Default)]
struct EventSink {
    publisher: Option<handler_base::router_client::Publisher>,
    pending: Vec<Event>,
    addr: Option<String>,
    heartbeats: Option<tokio::task::AbortHandle>,
}

/// What the heartbeat watchdog knows about the heartbeat feed itself.
#[derive(Default)]
struct Feed {
    /// The router last became ready, or the feed came back after a refusal (heartbeats
    /// before this prove nothing).
    router_ready_at: Option<Instant>,
    /// The newest heartbeat of any daemon: the feed works.
    last_any: Option<Instant>,
    /// Why the router refuses the feed's subscription (the launcher's token), while it
    /// does: no heartbeat can arrive, which says nothing about the daemons.
    refused: Option<String>,
}

impl Shared {
    pub fn entries(&self) -> BTreeMap<String, Entry> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut Entry)) {
        {
            let mut g = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = g.get_mut(name) {
                f(e);
            }
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// Applies a heartbeat's health to the daemon it comes from: the one it names if that
    /// pid is current, else (a binary run under another registry name) this node's child
    /// with that pid.
    pub fn heartbeat(&self, hb: &wire::DaemonHeartbeat) {
        let now = Instant::now();
        {
            let mut f = self.feed.lock().unwrap_or_else(|p| p.into_inner());
            if f.refused.take().is_some() {
                tracing::info!("the router accepts the launcher's heartbeat feed again");
                f.router_ready_at = Some(now);
            }
            f.last_any = Some(now);
        }
        let target = {
            let g = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if g.get(&hb.daemon).is_some_and(|e| e.pid == hb.pid) {
                Some(hb.daemon.clone())
            } else if hb.pid != 0 && hb.node == self.node {
                g.iter()
                    .find(|(_, e)| e.pid == hb.pid)
                    .map(|(n, _)| n.clone())
            } else {
                None
            }
        };
        if let Some(name) = target {
            let h = hb.health.clone();
            self.update(&name, |e| {
                e.health = h;
                e.last_heartbeat = Some(now);
            });
        }
    }

    /// How long `name` (ready since `ready_at`) has gone without a heartbeat, if longer
    /// than `limit` while the feed is alive: heartbeats of others arrived after its
    /// deadline (for the router itself, whose heartbeat is the feed, the clock counts).
    /// `None` without evidence either way (no router yet, router down).
    fn heartbeat_overdue(
        &self,
        name: &str,
        ready_at: Instant,
        limit: Duration,
    ) -> Option<Duration> {
        let (since, last_any) = {
            let f = self.feed.lock().unwrap_or_else(|p| p.into_inner());
            if f.refused.is_some() {
                return None;
            }
            (f.router_ready_at?, f.last_any)
        };
        let own = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)?
            .last_heartbeat
            .unwrap_or(ready_at)
            .max(ready_at)
            .max(since);
        let evidence = if name == ROUTER {
            Instant::now()
        } else {
            last_any?
        };
        let gap = evidence.saturating_duration_since(own);
        (gap > limit).then_some(gap)
    }

    /// Records that the router refused the heartbeat feed's subscription (logged once
    /// per distinct reason); cleared by the next heartbeat.
    fn feed_refused(&self, why: String) {
        let mut f = self.feed.lock().unwrap_or_else(|p| p.into_inner());
        if f.refused.as_deref() != Some(why.as_str()) {
            tracing::error!(reason = %why, "the router refuses the launcher's heartbeat feed; retrying with backoff, and no daemon counts as hung for want of heartbeats meanwhile");
            f.refused = Some(why);
        }
    }

    /// Why `name`'s newest heartbeat says it is stuck in one handler call, if it does.
    fn stuck(&self, name: &str) -> Option<String> {
        let g = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        g.get(name)?
            .health
            .as_ref()?
            .details
            .get(handler_base::STALLED)
            .cloned()
    }

    pub async fn control(&self, name: &str, c: Control) -> Result<(), String> {
        let tx = self
            .controls
            .get(name)
            .ok_or_else(|| format!("no daemon named {name:?} in this launcher"))?;
        tx.send(c)
            .await
            .map_err(|_| format!("supervisor of {name} has stopped"))
    }

    pub fn router_addr(&self) -> Option<String> {
        self.router_addr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Publishes a lifecycle event (held back until the router is known).
    pub fn publish(&self, ev: Event) {
        let mut s = self.events.lock().unwrap_or_else(|p| p.into_inner());
        match &s.publisher {
            Some(p) => {
                let _ = p.publish(ev);
            }
            None if s.pending.len() < 10_000 => s.pending.push(ev),
            None => {}
        }
    }

    /// Called each time the router is ready. The first time (or when the address
    /// changed) connects the publisher, flushes held events and returns the client for
    /// the heartbeat subscription; after a router restart at the same address the
    /// existing publisher and subscription reconnect by themselves and `None` is returned.
    pub fn router_ready(&self, addr: String) -> Option<handler_base::router_client::Client> {
        self.feed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .router_ready_at = Some(Instant::now());
        *self.router_addr.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr.clone());
        let mut s = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if s.publisher.is_some() && s.addr.as_deref() == Some(addr.as_str()) {
            return None;
        }
        let bearer = self.bearer.clone();
        let client = match handler_base::router_client::connect_lazy_with(&addr, bearer) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot use the router's address");
                return None;
            }
        };
        if let Some(old) = s.heartbeats.take() {
            old.abort();
        }
        // `launcher@<node>`: the health server of each node counts only its own node's
        // lifecycle events (on a shared log it receives every node's).
        let source = format!("launcher@{}", self.node);
        let p = handler_base::router_client::Publisher::spawn(client.clone(), source, 10_000);
        for ev in s.pending.drain(..) {
            let _ = p.publish(ev);
        }
        s.publisher = Some(p);
        s.addr = Some(addr);
        Some(client)
    }

    fn set_heartbeat_task(&self, task: tokio::task::AbortHandle) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .heartbeats = Some(task);
    }
}

fn lifecycle(
    kind: fn(wire::DaemonLifecycle) -> wire::event::Payload,
    name: &str,
    pid: u32,
    code: i32,
    restarts: u32,
    reason: &str,
) -> Event {
    Event::new(kind(wire::DaemonLifecycle {
        daemon: name.to_owned(),
        pid,
        exit_code: code,
        restarts,
        reason: reason.to_owned(),
    }))
}

/// The launcher's secrets: the token (handed to children) and its client credentials
/// (the token and `[tls]`, for the router).
pub struct Credentials {
    pub token: Option<handler_base::auth::Token>,
    pub bearer: handler_base::router_client::Bearer,
}

/// Builds the shared state and the per-daemon control receivers.
pub fn shared(
    profile: String,
    node: String,
    creds: Credentials,
    home: PathBuf,
    cfg: LauncherConfig,
    configs: Option<String>,
    plan: &[Planned],
) -> (Arc<Shared>, BTreeMap<String, mpsc::Receiver<Control>>) {
    let mut entries = BTreeMap::new();
    let mut ready = BTreeMap::new();
    let mut controls = BTreeMap::new();
    let mut rxs = BTreeMap::new();
    for p in plan {
        let n = p.spec.name.clone();
        entries.insert(
            n.clone(),
            Entry {
                state: DaemonState::Pending,
                pid: 0,
                restarts: 0,
                since: None,
                last_exit: String::new(),
                health: None,
                last_heartbeat: None,
                note: String::new(),
            },
        );
        ready.insert(n.clone(), watch::channel(false).0);
        let (tx, rx) = mpsc::channel(8);
        controls.insert(n.clone(), tx);
        rxs.insert(n, rx);
    }
    let sh = Shared {
        profile,
        node,
        token: creds.token,
        bearer: creds.bearer,
        home,
        cfg,
        configs,
        entries: Mutex::new(entries),
        ready,
        controls,
        version: watch::channel(0).0,
        events: Mutex::new(EventSink::default()),
        router_addr: Mutex::new(None),
        feed: Mutex::new(Feed::default()),
    };
    (Arc::new(sh), rxs)
}

fn describe(st: &ExitStatus) -> (String, i32) {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => (format!("exit {c}"), c),
        (None, Some(s)) => (format!("signal {s}"), 128 + s),
        _ => ("unknown".into(), -1),
    }
}

/// What the launcher does after a daemon exited.
#[derive(Debug, Clone, PartialEq)]
pub enum AfterExit {
    /// Start it again after `delay`; `restarts` counts this restart.
    Restart { delay: Duration, restarts: u32 },
    /// FAILED (DAEMON_FAILED is published; only an explicit restart starts it again).
    Fail { reason: String, restarts: u32 },
}

/// The restart decision, pure: exit 64 (bad configuration) is never restarted, nor a
/// daemon with `auto_restart` off; one with `max_restarts` restarts behind it FAILs;
/// otherwise it restarts after `cfg.backoff(restarts)` (1, 2, 4, 8, 16 s). A daemon
/// that was ready for `reset_after_s` before it exited starts counting from zero.
/// `code` is the exit code, 128 + signal for a signal.
pub fn after_exit(
    cfg: &LauncherConfig,
    spec: &DaemonSpec,
    code: i32,
    restarts: u32,
    ready_for: Option<Duration>,
) -> AfterExit {
    let restarts = if ready_for.is_some_and(|d| d.as_secs_f64() >= cfg.reset_after_s) {
        0
    } else {
        restarts
    };
    let fail = |reason: String| AfterExit::Fail { reason, restarts };
    if code == i32::from(handler_base::EXIT_CONFIG) {
        fail("bad configuration (exit 64 is never restarted)".into())
    } else if !spec.auto_restart {
        fail("auto_restart is off".into())
    } else if restarts >= spec.max_restarts {
        fail(format!("gave up after {restarts} restarts"))
    } else {
        AfterExit::Restart {
            delay: cfg.backoff(restarts),
            restarts: restarts + 1,
        }
    }
}

enum Outcome {
    Exited {
        status: Option<ExitStatus>,
        why: String,
        ready_for: Option<Duration>,
    },
    Stopped,
    Restart,
    Shutdown,
}

/// Supervises one daemon until shutdown.
pub async fn supervise(sh: Arc<Shared>, p: Planned, mut ctl: mpsc::Receiver<Control>) {
    let name = p.spec.name.clone();
    // Dependencies first: wait until each is ready; BLOCKED while one is FAILED.
    let mut versions = sh.version.subscribe();
    for d in &p.deps {
        let Some(tx) = sh.ready.get(d) else { continue };
        let mut rx = tx.subscribe();
        loop {
            if *rx.borrow_and_update() {
                break;
            }
            versions.borrow_and_update();
            block_on_failed_dependency(&sh, &name, d);
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                r = versions.changed() => if r.is_err() { return },
                c = ctl.recv() => match c {
                    Some(Control::Shutdown) | None => { sh.update(&name, |e| e.state = DaemonState::StoppedState); return }
                    _ => {}
                },
            }
        }
    }
    if sh
        .entries()
        .get(&name)
        .is_some_and(|e| e.state == DaemonState::Blocked)
    {
        tracing::info!(daemon = %name, "dependencies ready again; no longer blocked");
        sh.update(&name, |e| {
            e.state = DaemonState::Pending;
            e.note.clear();
        });
    }
    let log = Arc::new(LogSink::new(
        sh.home.join("logs"),
        &name,
        sh.cfg.log_max_bytes,
        sh.cfg.log_keep,
    ));
    let mut restarts: u32 = 0;
    let mut spawn_no: u64 = 0;
    loop {
        spawn_no += 1;
        let outcome = run_once(&sh, &p, &log, &mut ctl, restarts, spawn_no).await;
        if let Some(tx) = sh.ready.get(&name) {
            tx.send_replace(false);
        }
        let (status, why, ready_for) = match outcome {
            Outcome::Shutdown => {
                sh.update(&name, |e| {
                    e.state = DaemonState::StoppedState;
                    e.pid = 0;
                });
                return;
            }
            Outcome::Restart => {
                restarts = 0;
                sh.update(&name, |e| e.restarts = 0);
                continue;
            }
            Outcome::Stopped => {
                sh.update(&name, |e| {
                    e.state = DaemonState::StoppedState;
                    e.pid = 0;
                });
                if !wait_for_restart(&mut ctl).await {
                    return;
                }
                restarts = 0;
                sh.update(&name, |e| e.restarts = 0);
                continue;
            }
            Outcome::Exited {
                status,
                why,
                ready_for,
            } => (status, why, ready_for),
        };
        let code = status.as_ref().map(|s| describe(s).1).unwrap_or(-1);
        let decision = after_exit(&sh.cfg, &p.spec, code, restarts, ready_for);
        match decision {
            AfterExit::Fail {
                reason,
                restarts: r,
            } => {
                let reason = format!("{why}: {reason}");
                tracing::error!(daemon = %name, %reason, "daemon FAILED; not restarting");
                sh.update(&name, |e| {
                    e.state = DaemonState::Failed;
                    e.pid = 0;
                    e.last_exit = why.clone();
                });
                sh.publish(lifecycle(
                    wire::event::Payload::DaemonFailed,
                    &name,
                    0,
                    code,
                    r,
                    &reason,
                ));
            }
            AfterExit::Restart { delay, restarts: r } => {
                restarts = r;
                tracing::warn!(daemon = %name, %why, restart = restarts, delay_s = delay.as_secs_f64(), "daemon exited; restarting after backoff");
                sh.update(&name, |e| {
                    e.state = DaemonState::Backoff;
                    e.pid = 0;
                    e.restarts = restarts;
                    e.last_exit = why.clone();
                });
                sh.publish(lifecycle(
                    wire::event::Payload::DaemonStopped,
                    &name,
                    0,
                    code,
                    restarts,
                    &format!("crashed ({why}); restart in {:.1}s", delay.as_secs_f64()),
                ));
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    c = ctl.recv() => match c {
                        Some(Control::Restart) => { restarts = 0; sh.update(&name, |e| e.restarts = 0); continue }
                        Some(Control::Stop) => {
                            sh.update(&name, |e| e.state = DaemonState::StoppedState);
                            if !wait_for_restart(&mut ctl).await { return }
                            restarts = 0;
                            continue;
                        }
                        Some(Control::Shutdown) | None => { sh.update(&name, |e| e.state = DaemonState::StoppedState); return }
                    },
                }
            }
        }
        // FAILED: wait for an explicit restart.
        if !wait_for_restart(&mut ctl).await {
            sh.update(&name, |e| e.state = DaemonState::StoppedState);
            return;
        }
        restarts = 0;
        sh.update(&name, |e| e.restarts = 0);
    }
}

/// Marks `name` BLOCKED (once, with a log line) while its dependency `dep` is FAILED or
/// itself BLOCKED, and back to PENDING when that is no longer so.
fn block_on_failed_dependency(sh: &Shared, name: &str, dep: &str) {
    let entries = sh.entries();
    let dep_state = entries.get(dep).map(|e| e.state);
    let mine = entries.get(name).map(|e| (e.state, e.note.clone()));
    let note = match dep_state {
        Some(DaemonState::Failed) => format!("dependency {dep} failed"),
        Some(DaemonState::Blocked) => format!("dependency {dep} is blocked"),
        _ => {
            if mine.is_some_and(|(s, _)| s == DaemonState::Blocked) {
                sh.update(name, |e| {
                    e.state = DaemonState::Pending;
                    e.note.clear();
                });
            }
            return;
        }
    };
    if mine.is_some_and(|(s, n)| s == DaemonState::Blocked && n == note) {
        return;
    }
    tracing::error!(daemon = %name, dependency = %dep, "BLOCKED: {note}; waits until it is restarted and ready");
    sh.update(name, |e| {
        e.state = DaemonState::Blocked;
        e.note = note;
    });
}

/// True on Restart, false on Shutdown.
async fn wait_for_restart(ctl: &mut mpsc::Receiver<Control>) -> bool {
    loop {
        match ctl.recv().await {
            Some(Control::Restart) => return true,
            Some(Control::Stop) => {}
            Some(Control::Shutdown) | None => return false,
        }
    }
}

async fn run_once(
    sh: &Arc<Shared>,
    p: &Planned,
    log: &Arc<LogSink>,
    ctl: &mut mpsc::Receiver<Control>,
    restarts: u32,
    spawn_no: u64,
) -> Outcome {
    let name = &p.spec.name;
    let sock_path = notify_path(&sh.home, name, spawn_no);
    let notify = match notify_socket(&sock_path) {
        Ok(s) => s,
        Err(e) => {
            return Outcome::Exited {
                status: None,
                why: format!("notify socket {}: {e}", sock_path.display()),
                ready_for: None,
            };
        }
    };
    let _cleanup = RemoveOnDrop(sock_path.clone());
    let mut cmd = tokio::process::Command::new(&p.binary);
    cmd.arg("--home").arg(&sh.home);
    match (sh.router_addr(), name == ROUTER) {
        // A restarted router keeps the address its clients already use.
        (Some(addr), true) => {
            cmd.arg("--set").arg(format!("{ROUTER}.listen={addr}"));
        }
        (Some(addr), false) if !p.spec.standalone => {
            cmd.arg("--router").arg(addr);
        }
        _ => {}
    }
    if let Some(c) = &sh.configs {
        cmd.arg("--configs").arg(c);
    }
    cmd.args(&p.args)
        .envs(p.env.iter().cloned())
        .env("NOTIFY_SOCKET", &sock_path)
        .env("RINGRIFT_HOME", &sh.home)
        .envs(sh.token.iter().map(|t| ("RINGRIFT_TOKEN", t.secret())))
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    crate::child::die_with_parent(&mut cmd);
    sh.update(name, |e| e.state = DaemonState::StartingUp);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Exited {
                status: None,
                why: format!("spawn {}: {e}", p.binary.display()),
                ready_for: None,
            };
        }
    };
    let pid = child.id().unwrap_or(0);
    if let Some(out) = child.stdout.take() {
        let l = log.clone();
        tokio::spawn(async move { l.pump(out).await });
    }
    if let Some(err) = child.stderr.take() {
        let l = log.clone();
        tokio::spawn(async move { l.pump(err).await });
    }
    let started = Instant::now();
    sh.update(name, |e| {
        e.pid = pid;
        e.since = Some(started);
        e.health = None;
        e.last_heartbeat = None;
        e.note.clear();
    });
    tracing::info!(daemon = %name, pid, restarts, "started");
    sh.publish(lifecycle(
        wire::event::Payload::DaemonStarted,
        name,
        pid,
        0,
        restarts,
        "started",
    ));
    let ready_deadline = tokio::time::sleep(Duration::from_secs_f64(sh.cfg.ready_timeout_s));
    tokio::pin!(ready_deadline);
    let mut ready_at: Option<Instant> = None;
    let mut buf = [0u8; 4096];
    // The heartbeat watchdog: 3 × health_check_interval without one means hung.
    let hb_limit = (p.spec.health_check_interval_s > 0.0)
        .then(|| Duration::from_secs_f64(3.0 * p.spec.health_check_interval_s));
    let mut watchdog = tokio::time::interval(Duration::from_millis(250));
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            st = child.wait() => {
                let st = st.ok();
                let why = st.as_ref().map(|s| describe(s).0).unwrap_or_else(|| "wait failed".into());
                tracing::warn!(daemon = %name, pid, %why, "exited");
                return Outcome::Exited { status: st, why, ready_for: ready_at.map(|t| t.elapsed()) };
            }
            r = notify.recv(&mut buf) => {
                if let Ok(n) = r {
                    let msg = String::from_utf8_lossy(&buf[..n]);
                    if ready_at.is_none() && msg.lines().any(|l| l.trim() == "READY=1") {
                        ready_at = Some(Instant::now());
                        tracing::info!(daemon = %name, pid, ready_ms = started.elapsed().as_millis() as u64, "ready");
                        if name == ROUTER {
                            on_router_ready(sh);
                        }
                        sh.update(name, |e| { e.state = DaemonState::Ready; e.since = Some(Instant::now()); });
                        if let Some(tx) = sh.ready.get(name) { tx.send_replace(true); }
                    }
                }
            }
            _ = watchdog.tick(), if ready_at.is_some() => {
                let Some(r) = ready_at else { continue };
                let why = if let Some(stuck) = sh.stuck(name) {
                    let why = format!("stuck: {stuck}");
                    tracing::error!(daemon = %name, pid, "{why}; restarting it (systemd's WatchdogSec would)");
                    why
                } else if let Some((gap, limit)) = hb_limit.and_then(|l| Some((sh.heartbeat_overdue(name, r, l)?, l))) {
                    let why = format!("no heartbeat for {:.1}s", gap.as_secs_f64());
                    tracing::error!(daemon = %name, pid, limit_s = limit.as_secs_f64(), "{why} (limit 3 × health_check_interval); hung, restarting it");
                    why
                } else {
                    continue;
                };
                sh.update(name, |e| { e.state = DaemonState::Stopping; e.note = format!("{why}: hung, killed"); });
                terminate(&mut child, pid, Duration::from_secs_f64(sh.cfg.stop_grace_s)).await;
                return Outcome::Exited { status: None, why, ready_for: ready_at.map(|t| t.elapsed()) };
            }
            _ = &mut ready_deadline, if ready_at.is_none() => {
                let why = format!("not ready within {:.0}s", sh.cfg.ready_timeout_s);
                tracing::error!(daemon = %name, pid, "{why}; killing it");
                terminate(&mut child, pid, Duration::from_secs_f64(sh.cfg.stop_grace_s)).await;
                return Outcome::Exited { status: None, why, ready_for: None };
            }
            c = ctl.recv() => {
                let outcome = match c {
                    Some(Control::Stop) => Outcome::Stopped,
                    Some(Control::Restart) => Outcome::Restart,
                    Some(Control::Shutdown) | None => Outcome::Shutdown,
                };
                sh.update(name, |e| e.state = DaemonState::Stopping);
                let st = terminate(&mut child, pid, Duration::from_secs_f64(sh.cfg.stop_grace_s)).await;
                let why = st.as_ref().map(|s| describe(s).0).unwrap_or_else(|| "killed".into());
                let code = st.as_ref().map(|s| describe(s).1).unwrap_or(-1);
                sh.update(name, |e| e.last_exit = why.clone());
                sh.publish(lifecycle(wire::event::Payload::DaemonStopped, name, pid, code, restarts, "stopped by the launcher"));
                return outcome;
            }
        }
    }
}

fn on_router_ready(sh: &Arc<Shared>) {
    let Some(addr) = handler_base::read_addr_file(&sh.home, ROUTER) else {
        tracing::error!("router is ready but run/{ROUTER}.addr is missing");
        return;
    };
    let Some(client) = sh.router_ready(addr) else {
        return;
    };
    let sh2 = sh.clone();
    let task = tokio::spawn(async move {
        let sh = sh2;
        let req = wire::SubscribeRequest {
            consumer: String::new(),
            types: vec![wire::EventType::DaemonHeartbeat as i32],
            prefixes: vec![],
            start: Some(wire::subscribe_request::Start::Latest(true)),
            ..Default::default()
        };
        // A refused subscription (the router wants another token) is retried with
        // backoff for as long as the launcher runs: the feed never ends by itself.
        let mut backoff = handler_base::router_client::Backoff::new(
            Duration::from_millis(250),
            Duration::from_secs(15),
        );
        loop {
            let mut sub =
                handler_base::router_client::Subscription::new(client.clone(), req.clone());
            loop {
                match sub.next().await {
                    Ok(ev) => {
                        backoff.reset();
                        if let wire::event::Payload::DaemonHeartbeat(hb) = &ev.payload {
                            sh.heartbeat(hb);
                        }
                    }
                    Err(handler_base::router_client::ClientError::Rpc(s)) => {
                        sh.feed_refused(format!("{:?}: {}", s.code(), s.message()));
                        break;
                    }
                    Err(e) => tracing::warn!(error = %e, "heartbeat feed: skipped an event"),
                }
            }
            tokio::time::sleep(backoff.step()).await;
        }
    });
    sh.set_heartbeat_task(task.abort_handle());
}

/// The child's sd_notify socket: `run/notify/<name>-<n>.sock`, or under the temp dir
/// when the home path is too long for a Unix socket address (108 bytes).
fn notify_path(home: &std::path::Path, name: &str, spawn_no: u64) -> PathBuf {
    let file = format!("{name}-{spawn_no}.sock");
    let p = home.join("run/notify").join(&file);
    if p.as_os_str().len() < 100 {
        return p;
    }
    std::env::temp_dir()
        .join(format!("ringrift-notify-{}", std::process::id()))
        .join(file)
}

fn notify_socket(path: &std::path::Path) -> std::io::Result<tokio::net::UnixDatagram> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    tokio::net::UnixDatagram::bind(path)
}

struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// SIGTERM to the child's process group, SIGKILL after `grace`; returns its exit status.
pub async fn terminate(
    child: &mut tokio::process::Child,
    pid: u32,
    grace: Duration,
) -> Option<ExitStatus> {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    if pid == 0 {
        return child.wait().await.ok();
    }
    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(st) => st.ok(),
        Err(_) => {
            tracing::warn!(pid, "no exit {grace:?} after SIGTERM; SIGKILL");
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            child.wait().await.ok()
        }
    }
}

/// Stops every daemon, dependents before their dependencies.
pub async fn shutdown(sh: &Arc<Shared>, plan: &[Planned]) {
    // Depth = longest dependency chain below a daemon; stop the deepest first.
    let mut depth: BTreeMap<String, usize> = BTreeMap::new();
    for p in plan {
        let d = p
            .deps
            .iter()
            .filter_map(|x| depth.get(x))
            .max()
            .map(|m| m + 1)
            .unwrap_or(0);
        depth.insert(p.spec.name.clone(), d);
    }
    let max = depth.values().copied().max().unwrap_or(0);
    for level in (0..=max).rev() {
        let names: Vec<String> = depth
            .iter()
            .filter(|(_, d)| **d == level)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &names {
            let _ = sh.control(n, Control::Shutdown).await;
        }
        let mut rx = sh.version.subscribe();
        loop {
            let e = sh.entries();
            if names.iter().all(|n| {
                e.get(n).is_none_or(|x| {
                    matches!(
                        x.state,
                        DaemonState::StoppedState
                            | DaemonState::Failed
                            | DaemonState::Pending
                            | DaemonState::Blocked
                    )
                })
            }) {
                break;
            }
            if rx.changed().await.is_err() {
                break;
            }
        }
        tracing::info!(level, daemons = ?names, "stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(auto_restart: bool, max_restarts: u32) -> DaemonSpec {
        let toml = format!(
            "[[daemon]]\nname = \"d\"\ncategory = \"test\"\nauto_restart = {auto_restart}\nmax_restarts = {max_restarts}\n"
        );
        let reg = ringrift_registry::Registry::from_toml(&toml).expect("registry");
        reg.get("d").expect("d").clone()
    }

    /// The registry's `expects_plan` (not a daemon's name) decides who is told the plan.
    #[test]
    fn the_plan_goes_to_the_daemons_that_expect_it() {
        let reg = ringrift_registry::Registry::from_toml(
            "[[daemon]]\nname = \"event_router\"\ncategory = \"event\"\n\n\
             [[daemon]]\nname = \"watcher\"\ncategory = \"health\"\nexpects_plan = true\n\n\
             [[daemon]]\nname = \"d\"\ncategory = \"test\"\n",
        )
        .expect("registry");
        let mut plan: Vec<Planned> = reg
            .daemons()
            .map(|s| Planned {
                spec: s.clone(),
                binary: PathBuf::from("/bin/true"),
                args: Vec::new(),
                env: Vec::new(),
                deps: s.deps(),
            })
            .collect();
        pass_the_plan(&mut plan);
        let args: Vec<(&str, Vec<String>)> = plan
            .iter()
            .map(|p| (p.spec.name.as_str(), p.args.clone()))
            .collect();
        assert_eq!(
            args,
            [
                ("event_router", vec![]),
                (
                    "watcher",
                    vec![
                        "--set".into(),
                        "watcher.expect=event_router,watcher,d".into()
                    ]
                ),
                ("d", vec![]),
            ]
        );
        let builtin = ringrift_registry::Registry::builtin();
        let expecting: Vec<&str> = builtin
            .daemons()
            .filter(|s| s.expects_plan)
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(expecting, ["health_server"]);
    }

    #[test]
    fn restart_decision_table() {
        let cfg = LauncherConfig::default();
        let s = Duration::from_secs;
        let restart = |secs: u64, restarts: u32| AfterExit::Restart {
            delay: s(secs),
            restarts,
        };
        let fail = |reason: &str, restarts: u32| AfterExit::Fail {
            reason: reason.into(),
            restarts,
        };
        // (exit code, auto_restart, max_restarts, restarts so far, ready for) -> decision
        let table: Vec<(i32, bool, u32, u32, Option<Duration>, AfterExit)> = vec![
            (1, true, 5, 0, None, restart(1, 1)),
            (1, true, 5, 1, None, restart(2, 2)),
            (1, true, 5, 2, None, restart(4, 3)),
            (1, true, 5, 3, None, restart(8, 4)),
            (1, true, 5, 4, None, restart(16, 5)),
            (1, true, 9, 7, None, restart(16, 8)),
            (137, true, 5, 0, None, restart(1, 1)),
            (0, true, 5, 0, None, restart(1, 1)),
            (1, true, 5, 5, None, fail("gave up after 5 restarts", 5)),
            (
                1,
                true,
                5,
                5,
                Some(s(299)),
                fail("gave up after 5 restarts", 5),
            ),
            (1, true, 5, 5, Some(s(300)), restart(1, 1)),
            (1, true, 0, 0, None, fail("gave up after 0 restarts", 0)),
            (
                64,
                true,
                5,
                0,
                None,
                fail("bad configuration (exit 64 is never restarted)", 0),
            ),
            (
                64,
                true,
                5,
                3,
                Some(s(600)),
                fail("bad configuration (exit 64 is never restarted)", 0),
            ),
            (1, false, 5, 0, None, fail("auto_restart is off", 0)),
            (
                64,
                false,
                5,
                0,
                None,
                fail("bad configuration (exit 64 is never restarted)", 0),
            ),
        ];
        for (code, auto, max, restarts, ready_for, want) in table {
            let got = after_exit(&cfg, &spec(auto, max), code, restarts, ready_for);
            assert_eq!(
                got, want,
                "exit {code}, auto_restart {auto}, max {max}, restarts {restarts}, ready {ready_for:?}"
            );
        }
    }
}
