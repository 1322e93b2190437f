//! `health_server`: one HTTP view of the node's daemons on 127.0.0.1:8765.
//!
//! It aggregates DAEMON_HEARTBEAT and DAEMON_STARTED/STOPPED/FAILED events from the
//! router, so it sees daemons run by the launcher and by systemd alike.
//! On a shared event log (JetStream) every node's heartbeats and lifecycle events reach
//! it (its consumer is node-scoped, `health_server@<node>`); it keeps only those of its
//! own node (the heartbeat's `node`, the lifecycle event's source `launcher@<node>`), so
//! a daemon's copy on another node never stands in for this node's one.
//! `/health` is liveness; `/ready` is 200 only when the router answers and every expected
//! daemon (`health_server.expect`, set by the launcher) has a fresh, healthy heartbeat,
//! else 503 listing the ones that are not; `/metrics` is Prometheus text; `/status` JSON.

use axum::http::StatusCode;
use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use ringrift_proto::{Event, EventType, wire};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "health_server",
    about: "HTTP /health /ready /metrics /status for the node's daemons",
    cycle_interval_s: Some(5.0),
    scope: Some(Scope::Node),
};

/// `[health_server]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    pub listen: String,
    /// Comma-separated daemons that must be healthy for `/ready` (the launcher sets it).
    pub expect: String,
    /// A heartbeat older than this counts as missing.
    pub stale_after_s: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            listen: "127.0.0.1:8765".into(),
            expect: String::new(),
            stale_after_s: 35.0,
        }
    }
}

/// What the health server knows of one daemon (the typed `/status` entry).
pub use handler_base::status_body::HeartbeatView as DaemonView;
use handler_base::status_body::{HealthServerStatus, NotReady, RouterCounters};

#[derive(Default)]
struct State {
    daemons: BTreeMap<String, DaemonView>,
    router: Option<wire::StatsResponse>,
    router_error: String,
}

pub struct HealthServer {
    cfg: HealthConfig,
    token: Option<handler_base::auth::Token>,
    tls: handler_base::tls::Tls,
    expect: Vec<String>,
    state: Arc<Mutex<State>>,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: HealthConfig = ctx.settings.section("health_server")?;
    handler_base::ensure_config!(
        cfg.listen.parse::<std::net::SocketAddr>().is_ok(),
        "health_server.listen {:?} is not host:port",
        cfg.listen
    );
    let token = handler_base::auth::load(&ctx.settings)?;
    let tls = handler_base::tls::Tls::load(&ctx.settings)?;
    handler_base::auth::check_listen("health_server.listen", &cfg.listen, token.as_ref(), &tls)?;
    handler_base::ensure_config!(
        cfg.stale_after_s > 0.0,
        "health_server.stale_after_s must be > 0"
    );
    let expect = cfg
        .expect
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    Ok(Arc::new(HealthServer {
        cfg,
        token,
        tls,
        expect,
        state: Arc::new(Mutex::new(State::default())),
    }))
}

impl HealthServer {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }
}

/// Why each expected daemon is not ready (empty = ready).
fn not_ready(st: &State, expect: &[String], stale_ms: i64, now: i64) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if st.router.is_none() {
        out.push((
            "event_router".to_owned(),
            format!("router unreachable: {}", st.router_error),
        ));
    }
    for name in expect {
        if name == "event_router" {
            continue;
        }
        let reason = match st.daemons.get(name) {
            None => Some("no heartbeat yet".to_owned()),
            Some(d) if !d.up => Some(format!("down ({})", d.last_event)),
            Some(d) if d.last_heartbeat_unix_ms == 0 => {
                Some("started, no heartbeat yet".to_owned())
            }
            Some(d) if now - d.last_heartbeat_unix_ms > stale_ms => Some(format!(
                "last heartbeat {:.1}s ago",
                (now - d.last_heartbeat_unix_ms) as f64 / 1000.0
            )),
            Some(d) => match &d.health {
                Some(h) if h.healthy => None,
                Some(h) => Some(format!("unhealthy: {:?} {}", h.status, h.message)),
                None => Some("no health in heartbeat".to_owned()),
            },
        };
        if let Some(r) = reason {
            out.push((name.clone(), r));
        }
    }
    out
}

fn lock(s: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn status_name(h: &HealthCheckResult) -> &'static str {
    match h.status {
        handler_base::HealthStatus::Running => "RUNNING",
        handler_base::HealthStatus::Starting => "STARTING",
        handler_base::HealthStatus::Degraded => "DEGRADED",
        handler_base::HealthStatus::Error => "ERROR",
        handler_base::HealthStatus::Stopped => "STOPPED",
    }
}

fn metrics_text(st: &State, now: i64) -> String {
    let mut reg = Registry::with_prefix("ringrift");
    let up = Family::<Vec<(String, String)>, Gauge>::default();
    let healthy = Family::<Vec<(String, String)>, Gauge>::default();
    let restarts = Family::<Vec<(String, String)>, Gauge>::default();
    let status = Family::<Vec<(String, String)>, Gauge>::default();
    let age = Family::<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for (name, d) in &st.daemons {
        let l = vec![("daemon".to_owned(), name.clone())];
        up.get_or_create(&l).set(d.up as i64);
        healthy
            .get_or_create(&l)
            .set(d.health.as_ref().is_some_and(|h| h.healthy && d.up) as i64);
        restarts.get_or_create(&l).set(d.restarts as i64);
        if let Some(h) = &d.health {
            for s in ["RUNNING", "STARTING", "DEGRADED", "ERROR", "STOPPED"] {
                status
                    .get_or_create(&vec![
                        ("daemon".to_owned(), name.clone()),
                        ("status".to_owned(), s.to_owned()),
                    ])
                    .set((status_name(h) == s) as i64);
            }
        }
        if d.last_heartbeat_unix_ms > 0 {
            age.get_or_create(&l)
                .set((now - d.last_heartbeat_unix_ms) as f64 / 1000.0);
        }
    }
    reg.register("daemon_up", "1 if the daemon's process is up", up);
    reg.register(
        "daemon_healthy",
        "1 if the daemon's last health check was healthy",
        healthy,
    );
    reg.register(
        "daemon_restarts",
        "Restarts reported by the launcher",
        restarts,
    );
    reg.register(
        "daemon_health_status",
        "1 for the daemon's current health status",
        status,
    );
    reg.register(
        "daemon_heartbeat_age_seconds",
        "Seconds since the daemon's last heartbeat",
        age,
    );
    let router_up = Gauge::<i64>::default();
    router_up.set(st.router.is_some() as i64);
    reg.register("router_up", "1 if the event router answers", router_up);
    if let Some(r) = &st.router {
        reg.register(
            "router_events_published",
            "Events stored by the router",
            ConstCounter::new(r.published),
        );
        reg.register(
            "router_events_duplicate",
            "Publishes the router acked as duplicates",
            ConstCounter::new(r.duplicates),
        );
        reg.register(
            "router_events_delivered",
            "Events the router delivered",
            ConstCounter::new(r.delivered),
        );
        reg.register(
            "router_events_dead_lettered",
            "Events moved to the dead-letter queue",
            ConstCounter::new(r.dead_lettered),
        );
        let lag = Family::<Vec<(String, String)>, Gauge>::default();
        for c in &r.consumers {
            lag.get_or_create(&vec![("consumer".to_owned(), c.name.clone())])
                .set(c.lag as i64);
        }
        reg.register(
            "router_consumer_lag",
            "Events between a consumer's ack floor and the head",
            lag,
        );
    }
    let mut out = String::new();
    let _ = encode(&mut out, &reg);
    handler_base::metrics::to_text_format(&out)
}

/// The `/status` body (its `readiness()` is the `/ready` body).
fn status_body(st: &State, expect: &[String], stale_ms: i64, now: i64) -> HealthServerStatus {
    let not_ready: Vec<_> = not_ready(st, expect, stale_ms, now)
        .into_iter()
        .map(|(daemon, reason)| NotReady { daemon, reason })
        .collect();
    HealthServerStatus {
        ready: not_ready.is_empty(),
        not_ready,
        expect: expect.to_vec(),
        daemons: st.daemons.clone(),
        router: st.router.as_ref().map(|r| RouterCounters {
            head_seq: r.head_seq,
            published: r.published,
            delivered: r.delivered,
            dead_lettered: r.dead_lettered,
        }),
        router_error: st.router_error.clone(),
    }
}

#[async_trait::async_trait]
impl Handler for HealthServer {
    fn subscriptions(&self) -> Vec<EventType> {
        vec![
            EventType::DaemonHeartbeat,
            EventType::DaemonStarted,
            EventType::DaemonStopped,
            EventType::DaemonFailed,
        ]
    }

    async fn on_start(&self, ctx: &Context) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(&self.cfg.listen)
            .await
            .map_err(|e| anyhow::anyhow!("bind {}: {e}", self.cfg.listen))?;
        let stale_ms = (self.cfg.stale_after_s * 1000.0) as i64;
        let (s1, s2, s3) = (self.state.clone(), self.state.clone(), self.state.clone());
        let (e1, e2) = (self.expect.clone(), self.expect.clone());
        let app = axum::Router::new()
            .route("/health", axum::routing::get(|| async { "ok\n" }))
            .route(
                "/ready",
                axum::routing::get(move || {
                    let body = status_body(
                        &lock(&s1),
                        &e1,
                        stale_ms,
                        handler_base::router_client::now_ms(),
                    )
                    .readiness();
                    let code = if body.ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    async move { (code, axum::Json(body)) }
                }),
            )
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let text = metrics_text(&lock(&s2), handler_base::router_client::now_ms());
                    async move {
                        (
                            [("content-type", handler_base::metrics::TEXT_CONTENT_TYPE)],
                            text,
                        )
                    }
                }),
            )
            .route(
                "/status",
                axum::routing::get(move || {
                    let body = status_body(
                        &lock(&s3),
                        &e2,
                        stale_ms,
                        handler_base::router_client::now_ms(),
                    );
                    async move { axum::Json(body) }
                }),
            );
        let addr = handler_base::auth::serve_http(
            ctx,
            "health_server",
            listener,
            app,
            self.token.clone(),
            &self.tls,
        )?;
        tracing::info!(%addr, expect = ?self.expect, "health server listening");
        self.run_cycle(ctx).await
    }

    /// Polls the router's stats (reachability and counters).
    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        let mut c = ctx.client.clone();
        let r = tokio::time::timeout(Duration::from_secs(2), c.stats(wire::StatsRequest {})).await;
        let mut st = self.lock();
        match r {
            Ok(Ok(s)) => {
                st.router = Some(s.into_inner());
                st.router_error.clear();
            }
            Ok(Err(e)) => {
                st.router = None;
                st.router_error = e.message().to_owned();
            }
            Err(_) => {
                st.router = None;
                st.router_error = "no answer within 2 s".into();
            }
        }
        Ok(())
    }

    async fn handle_event(&self, ctx: &Context, ev: &Event) -> anyhow::Result<()> {
        use wire::event::Payload;
        let mut st = self.lock();
        let from_here = match &ev.payload {
            Payload::DaemonHeartbeat(hb) => hb.node == ctx.node,
            _ => ev.source.rsplit_once('@').map(|(_, n)| n) == Some(ctx.node.as_str()),
        };
        if !from_here {
            return Ok(());
        }
        match &ev.payload {
            Payload::DaemonHeartbeat(hb) => {
                let health = hb
                    .health
                    .clone()
                    .map(HealthCheckResult::try_from)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("heartbeat of {}: {e}", hb.daemon))?;
                let d = st.daemons.entry(hb.daemon.clone()).or_default();
                if ev.time_unix_ms < d.last_heartbeat_unix_ms {
                    return Ok(());
                }
                // A heartbeat of the pid the launcher reported down is late, not a revival.
                if !d.up && d.pid == hb.pid && d.pid != 0 {
                    return Ok(());
                }
                d.pid = hb.pid;
                d.node.clone_from(&hb.node);
                d.up = true;
                d.uptime_s = hb.uptime_s;
                d.last_heartbeat_unix_ms = ev.time_unix_ms;
                d.health = health;
            }
            Payload::DaemonStarted(l) => {
                let d = st.daemons.entry(l.daemon.clone()).or_default();
                // The new process may have sent its first heartbeat before this event.
                if d.pid != l.pid {
                    d.last_heartbeat_unix_ms = 0;
                    d.health = None;
                }
                d.up = true;
                d.pid = l.pid;
                d.restarts = l.restarts;
                d.last_event = "started".into();
            }
            Payload::DaemonStopped(l) | Payload::DaemonFailed(l) => {
                let d = st.daemons.entry(l.daemon.clone()).or_default();
                d.up = false;
                d.restarts = l.restarts;
                d.last_event = format!("{}: {}", ringrift_proto::type_name(ev.kind), l.reason);
            }
            _ => {}
        }
        Ok(())
    }

    fn health_check(&self) -> HealthCheckResult {
        let st = self.lock();
        if st.router.is_some() {
            HealthCheckResult::running(format!("tracking {} daemons", st.daemons.len()))
        } else {
            HealthCheckResult::degraded(format!("router unreachable: {}", st.router_error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(up: bool, hb: i64, healthy: bool) -> DaemonView {
        DaemonView {
            up,
            last_heartbeat_unix_ms: hb,
            health: Some(if healthy {
                HealthCheckResult::running("ok")
            } else {
                HealthCheckResult::error("bad")
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ready_needs_router_and_fresh_healthy_heartbeats() {
        let mut st = State::default();
        let expect = vec!["event_router".to_owned(), "a".to_owned(), "b".to_owned()];
        let nr = not_ready(&st, &expect, 1000, 10_000);
        assert_eq!(nr.len(), 3, "{nr:?}");
        st.router = Some(wire::StatsResponse::default());
        st.daemons.insert("a".into(), view(true, 9_500, true));
        st.daemons.insert("b".into(), view(true, 9_500, true));
        assert!(not_ready(&st, &expect, 1000, 10_000).is_empty());
        assert_eq!(
            not_ready(&st, &expect, 1000, 11_000).len(),
            2,
            "stale heartbeats"
        );
        st.daemons.insert("b".into(), view(false, 9_500, true));
        assert_eq!(not_ready(&st, &expect, 1000, 10_000)[0].0, "b");
        st.daemons.insert("b".into(), view(true, 9_500, false));
        assert!(
            not_ready(&st, &expect, 1000, 10_000)[0]
                .1
                .contains("unhealthy")
        );
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let mut st = State::default();
        st.daemons.insert("a".into(), view(true, 9_500, true));
        st.router = Some(wire::StatsResponse {
            published: 5,
            ..Default::default()
        });
        let m = metrics_text(&st, 10_000);
        assert!(m.contains("ringrift_daemon_up{daemon=\"a\"} 1"), "{m}");
        assert!(
            m.contains("ringrift_router_events_published_total 5"),
            "{m}"
        );
        assert!(
            m.contains("# TYPE ringrift_router_events_published_total counter"),
            "{m}"
        );
        assert!(
            !m.contains("# EOF"),
            "text format 0.0.4 has no EOF marker: {m}"
        );
    }
}

#[cfg(test)]
mod in_process;
