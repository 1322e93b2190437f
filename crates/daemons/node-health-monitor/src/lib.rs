//! `node_health_monitor` (alias `health_check`): this node's health, checked every cycle
//! and debounced so a flapping node raises one alert.
//!
//! Checks: disk used under the home and memory used (warning / critical thresholds),
//! GPUs (utilisation in the details; a GPU that disappears after it was seen is
//! critical, e.g. a driver crash), the local event router (a `Stats` call) and, on a
//! node of a multi-node cluster, the local peer API (`p2p_backend`, whose membership
//! view names the peers it cannot reach). A check changes level only after
//! `unhealthy_after` consecutive samples at a worse level or `recovered_after` at a
//! better one (the router and peer API checks clear on the first good sample, and are
//! sampled at once when this node's p2p_backend sees a peer join: a healed partition).
//! Each change of a resource's level publishes RESOURCE_PRESSURE (level `warning`,
//! `critical` or `ok`); the node turning critical on any check publishes NODE_UNHEALTHY
//! with every reason, all checks clear again NODE_RECOVERED. The raised
//! levels persist (`pipeline_state.db`), so a restart neither repeats an alert nor
//! forgets to clear one.

use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_cluster::resources::{self, NvidiaSmi, Resources};
use ringrift_cluster::{ClusterConfig, MemberState};
use ringrift_ledger::StateStore;
use ringrift_proto::{Event, wire, wire::event::Payload};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "node_health_monitor",
    about: "This node's health: disk, memory, GPUs, router and peer API, debounced alerts",
    cycle_interval_s: Some(30.0),
    scope: Some(Scope::Node),
};

/// `[node_health_monitor]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Percent of the home's filesystem used.
    pub disk_warn_percent: f64,
    pub disk_critical_percent: f64,
    /// Percent of memory in use (total − available).
    pub memory_warn_percent: f64,
    pub memory_critical_percent: f64,
    /// Consecutive samples at a worse level before the level rises.
    pub unhealthy_after: u32,
    /// Consecutive samples at a better level before it falls.
    pub recovered_after: u32,
    /// Seconds a router or peer API call may take.
    pub rpc_timeout_s: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            disk_warn_percent: 85.0,
            disk_critical_percent: 95.0,
            memory_warn_percent: 90.0,
            memory_critical_percent: 97.0,
            unhealthy_after: 3,
            recovered_after: 3,
            rpc_timeout_s: 5.0,
        }
    }
}

impl HealthConfig {
    fn validate(&self) -> Result<(), handler_base::ConfigError> {
        for (name, warn, crit) in [
            ("disk", self.disk_warn_percent, self.disk_critical_percent),
            (
                "memory",
                self.memory_warn_percent,
                self.memory_critical_percent,
            ),
        ] {
            handler_base::ensure_config!(
                (0.0..=100.0).contains(&warn) && (0.0..=100.0).contains(&crit) && warn <= crit,
                "node_health_monitor.{name}_warn_percent = {warn} and {name}_critical_percent = {crit}: \
                 need 0 ≤ warn ≤ critical ≤ 100"
            );
        }
        handler_base::ensure_config!(
            self.unhealthy_after >= 1 && self.recovered_after >= 1,
            "node_health_monitor.unhealthy_after / recovered_after must be at least 1"
        );
        handler_base::ensure_config!(
            self.rpc_timeout_s.is_finite() && self.rpc_timeout_s > 0.0,
            "node_health_monitor.rpc_timeout_s = {} must be > 0",
            self.rpc_timeout_s
        );
        Ok(())
    }
}

/// How bad one check is. Ordered: a rise is to a greater level.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Ok,
    Warning,
    Critical,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }
}

/// The things checked. `Disk`, `Memory` and `Gpu` are resources (RESOURCE_PRESSURE).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    Disk,
    Memory,
    Gpu,
    Router,
    Peers,
}

impl Check {
    pub fn name(self) -> &'static str {
        match self {
            Check::Disk => "disk",
            Check::Memory => "memory",
            Check::Gpu => "gpu",
            Check::Router => "router",
            Check::Peers => "peers",
        }
    }
    fn is_resource(self) -> bool {
        matches!(self, Check::Disk | Check::Memory | Check::Gpu)
    }
}

/// One sample of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub level: Level,
    /// Percent used, for resources.
    pub percent: f64,
    pub reason: String,
}

/// What one cycle saw, before judging it.
#[derive(Debug, Clone)]
pub struct Sample {
    pub resources: Resources,
    /// `Err(why)` when the router did not answer.
    pub router: Result<(), String>,
    /// `None` on a one-node cluster; else the peer API's answer: the peers it sees dead,
    /// or why it did not answer.
    pub peers: Option<Result<Vec<String>, String>>,
}

fn percent_used(used: u64, total: u64) -> Option<f64> {
    (total > 0).then(|| used as f64 * 100.0 / total as f64)
}

fn threshold(what: &str, p: f64, warn: f64, crit: f64) -> Reading {
    let level = if p >= crit {
        Level::Critical
    } else if p >= warn {
        Level::Warning
    } else {
        Level::Ok
    };
    let reason = match level {
        Level::Ok => format!("{what} {p:.1}% used"),
        Level::Warning => format!("{what} {p:.1}% used (warning at {warn}%)"),
        Level::Critical => format!("{what} {p:.1}% used (critical at {crit}%)"),
    };
    Reading {
        level,
        percent: p,
        reason,
    }
}

/// Judges a sample (pure). `gpus_seen` is the most GPUs seen since start: fewer now is
/// critical.
pub fn judge(cfg: &HealthConfig, s: &Sample, gpus_seen: usize) -> BTreeMap<Check, Reading> {
    let r = &s.resources;
    let mut out = BTreeMap::new();
    if let Some(p) = percent_used(
        r.disk_total_bytes - r.disk_free_bytes.min(r.disk_total_bytes),
        r.disk_total_bytes,
    ) {
        out.insert(
            Check::Disk,
            threshold("disk", p, cfg.disk_warn_percent, cfg.disk_critical_percent),
        );
    }
    let mem_used = r.memory_total_bytes - r.memory_available_bytes.min(r.memory_total_bytes);
    if let Some(p) = percent_used(mem_used, r.memory_total_bytes) {
        out.insert(
            Check::Memory,
            threshold(
                "memory",
                p,
                cfg.memory_warn_percent,
                cfg.memory_critical_percent,
            ),
        );
    }
    let busiest = r.gpus.iter().map(|(_, u)| *u).fold(0.0, f64::max);
    let gpu = if r.gpus.len() < gpus_seen {
        Reading {
            level: Level::Critical,
            percent: busiest,
            reason: format!(
                "{} of {gpus_seen} GPUs visible ({})",
                r.gpus.len(),
                if r.gpu_note.is_empty() {
                    "probe ok"
                } else {
                    &r.gpu_note
                }
            ),
        }
    } else if r.gpus.is_empty() {
        Reading {
            level: Level::Ok,
            percent: 0.0,
            reason: format!("no GPUs: {}", r.gpu_note),
        }
    } else {
        let each: Vec<String> = r
            .gpus
            .iter()
            .map(|(id, u)| format!("{id} {u:.0}%"))
            .collect();
        Reading {
            level: Level::Ok,
            percent: busiest,
            reason: each.join(", "),
        }
    };
    out.insert(Check::Gpu, gpu);
    out.insert(
        Check::Router,
        match &s.router {
            Ok(()) => Reading {
                level: Level::Ok,
                percent: 0.0,
                reason: "router answers".into(),
            },
            Err(e) => Reading {
                level: Level::Critical,
                percent: 0.0,
                reason: format!("router unreachable: {e}"),
            },
        },
    );
    if let Some(p) = &s.peers {
        let reading = match p {
            Ok(dead) if dead.is_empty() => Reading {
                level: Level::Ok,
                percent: 0.0,
                reason: "every peer reachable".into(),
            },
            // Peers being dead is their problem (p2p_backend reports them); this node
            // still works, so it is a warning here.
            Ok(dead) => Reading {
                level: Level::Warning,
                percent: 0.0,
                reason: format!("peers unreachable: {}", dead.join(", ")),
            },
            Err(e) => Reading {
                level: Level::Critical,
                percent: 0.0,
                reason: format!("peer API (p2p_backend) unreachable: {e}"),
            },
        };
        out.insert(Check::Peers, reading);
    }
    out
}

/// One check's debounced level: it moves to a new level only after `n` consecutive
/// samples at that level, so alternating samples never move it.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Debounce {
    pub current: Level,
    pending: Option<(Level, u32)>,
}

impl Debounce {
    /// Feeds one sample; `Some((from, to))` when the level changes.
    pub fn observe(
        &mut self,
        l: Level,
        rise_after: u32,
        fall_after: u32,
    ) -> Option<(Level, Level)> {
        if l == self.current {
            self.pending = None;
            return None;
        }
        let need = if l > self.current {
            rise_after
        } else {
            fall_after
        };
        let count = match self.pending {
            Some((p, c)) if p == l => c + 1,
            _ => 1,
        };
        if count >= need {
            let from = self.current;
            self.current = l;
            self.pending = None;
            Some((from, l))
        } else {
            self.pending = Some((l, count));
            None
        }
    }
}

/// What survives a restart.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Raised {
    pub checks: BTreeMap<Check, Debounce>,
    /// Whether NODE_UNHEALTHY is the last node-level event published.
    pub unhealthy: bool,
    pub gpus_seen: usize,
}

/// The events one judged sample causes (pure): level changes of resources, and the node
/// turning unhealthy or recovered. Updates `raised`.
pub fn step(
    cfg: &HealthConfig,
    raised: &mut Raised,
    node: &str,
    readings: &BTreeMap<Check, Reading>,
) -> Vec<Payload> {
    let mut out = Vec::new();
    for (check, r) in readings {
        let d = raised.checks.entry(*check).or_default();
        // A router or peer API that answers again is a fact, not a noisy measure: it
        // clears on the first good sample (after a healed partition the node would
        // otherwise stay unhealthy for `recovered_after` more cycles, 90 s by default).
        let fall = if check.is_resource() {
            cfg.recovered_after
        } else {
            1
        };
        if let Some((_, to)) = d.observe(r.level, cfg.unhealthy_after, fall)
            && check.is_resource()
        {
            out.push(Payload::ResourcePressure(wire::ResourcePressure {
                node: node.to_owned(),
                resource: check.name().to_owned(),
                percent: r.percent,
                level: to.name().to_owned(),
            }));
        }
    }
    let critical: Vec<String> = raised
        .checks
        .iter()
        .filter(|(_, d)| d.current == Level::Critical)
        .map(|(c, _)| {
            readings
                .get(c)
                .map(|r| r.reason.clone())
                .unwrap_or_else(|| format!("{}: critical", c.name()))
        })
        .collect();
    if !critical.is_empty() && !raised.unhealthy {
        raised.unhealthy = true;
        out.push(Payload::NodeUnhealthy(wire::NodeStatus {
            node: node.to_owned(),
            reason: critical.join("; "),
        }));
    } else if critical.is_empty() && raised.unhealthy {
        raised.unhealthy = false;
        out.push(Payload::NodeRecovered(wire::NodeStatus {
            node: node.to_owned(),
            reason: "every check clear".into(),
        }));
    }
    out
}

/// Where a sample's parts come from; a fake in tests.
#[async_trait::async_trait]
pub trait Sampler: Send + Sync {
    async fn sample(&self, ctx: &Context) -> Sample;
}

/// This machine, the local router and the local peer API.
pub struct LiveSampler {
    cluster: ClusterConfig,
    /// Our clients' credentials: the token and `[tls]`.
    bearer: handler_base::router_client::Bearer,
    limit: Duration,
    /// This process's GPU probe (`[gpu]`: bounded, single-flight).
    gpu: NvidiaSmi,
}

#[async_trait::async_trait]
impl Sampler for LiveSampler {
    async fn sample(&self, ctx: &Context) -> Sample {
        let home: PathBuf = ctx.home.clone();
        let gpu = self.gpu.clone();
        let resources = tokio::task::spawn_blocking(move || resources::sample(&home, &gpu))
            .await
            .unwrap_or_default();
        let mut client = ctx.client.clone();
        let router =
            match tokio::time::timeout(self.limit, client.stats(wire::StatsRequest::default()))
                .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(s)) => Err(format!("{} ({})", s.message(), ctx.router_addr)),
                Err(_) => Err(format!(
                    "no answer within {:?} ({})",
                    self.limit, ctx.router_addr
                )),
            };
        let peers = if self.cluster.nodes.len() > 1 {
            Some(self.peers(&ctx.home).await)
        } else {
            None
        };
        Sample {
            resources,
            router,
            peers,
        }
    }
}

impl LiveSampler {
    async fn peers(&self, home: &Path) -> Result<Vec<String>, String> {
        let info = ringrift_cluster::client::local_node_info(home, self.bearer.clone(), self.limit)
            .await
            .map_err(|e| e.to_string())?;
        Ok(info
            .members
            .iter()
            .filter(|m| m.node != info.node && m.state == MemberState::Dead)
            .map(|m| m.node.clone())
            .collect())
    }
}

struct State {
    raised: Raised,
    last: BTreeMap<Check, Reading>,
}

pub struct NodeHealthMonitor {
    cfg: HealthConfig,
    sampler: Arc<dyn Sampler>,
    state: Mutex<State>,
    store: StateStore,
    /// One sample at a time (the cycle, and a rejoin seen by this node's p2p_backend).
    sampling: tokio::sync::Mutex<()>,
}

const STATE_KEY: &str = "raised";

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cluster =
        ClusterConfig::load(&ctx.home, &ctx.node).map_err(handler_base::ConfigError::from)?;
    let token = handler_base::auth::load(&ctx.settings)?;
    let cfg: HealthConfig = ctx.settings.section("node_health_monitor")?;
    cfg.validate()?;
    let limit = Duration::from_secs_f64(cfg.rpc_timeout_s);
    let gpu = NvidiaSmi::from_settings(&ctx.settings)?;
    build_with(
        ctx,
        cfg,
        Arc::new(LiveSampler {
            cluster,
            bearer: handler_base::tls::Tls::load(&ctx.settings)?.bearer(token.as_ref()),
            limit,
            gpu,
        }),
    )
}

/// [`build`] with another sampler (tests).
pub fn build_with(
    ctx: &Context,
    cfg: HealthConfig,
    sampler: Arc<dyn Sampler>,
) -> anyhow::Result<Arc<dyn Handler>> {
    cfg.validate()?;
    Ok(Arc::new(NodeHealthMonitor {
        cfg,
        sampler,
        state: Mutex::new(State {
            raised: Raised::default(),
            last: BTreeMap::new(),
        }),
        store: StateStore::open(&ctx.home, &INFO)?,
        sampling: tokio::sync::Mutex::new(()),
    }))
}

impl NodeHealthMonitor {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl Handler for NodeHealthMonitor {
    async fn on_start(&self, _ctx: &Context) -> anyhow::Result<()> {
        if let Some(r) = self.store.get::<Raised>(STATE_KEY).await? {
            self.state().raised = r;
        }
        Ok(())
    }

    /// HOST_JOINED seen by this node's own p2p_backend: a peer is reachable again (a
    /// partition healed), so the connectivity checks are sampled now, not a cycle later.
    fn subscriptions(&self) -> Vec<ringrift_proto::EventType> {
        vec![ringrift_proto::EventType::HostJoined]
    }

    async fn handle_event(&self, ctx: &Context, ev: &Event) -> anyhow::Result<()> {
        match &ev.payload {
            Payload::HostJoined(j) if j.observer == ctx.node => self.run_cycle(ctx).await,
            _ => Ok(()),
        }
    }

    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        let _one = self.sampling.lock().await;
        let sample = self.sampler.sample(ctx).await;
        let (events, raised) = {
            let mut st = self.state();
            let readings = judge(&self.cfg, &sample, st.raised.gpus_seen);
            st.raised.gpus_seen = st.raised.gpus_seen.max(sample.resources.gpus.len());
            let mut raised = st.raised.clone();
            let events = step(&self.cfg, &mut raised, &ctx.node, &readings);
            st.last = readings;
            (events, raised)
        };
        // Publish first, then remember: a crash in between repeats an alert rather than
        // losing one.
        for p in events {
            tracing::info!(event = ?p, "node health changed");
            ctx.publish(Event::new(p)).await?;
        }
        self.store.put(STATE_KEY, &raised).await?;
        self.state().raised = raised;
        Ok(())
    }

    fn health_check(&self) -> HealthCheckResult {
        let st = self.state();
        let critical: Vec<&str> = st
            .raised
            .checks
            .iter()
            .filter(|(_, d)| d.current == Level::Critical)
            .map(|(c, _)| {
                st.last
                    .get(c)
                    .map(|r| r.reason.as_str())
                    .unwrap_or(c.name())
            })
            .collect();
        let mut h = if st.last.is_empty() {
            HealthCheckResult::running("starting: no sample yet")
        } else if critical.is_empty() {
            HealthCheckResult::running("every check clear")
        } else {
            HealthCheckResult::degraded(critical.join("; "))
        };
        for (c, r) in &st.last {
            let level = st
                .raised
                .checks
                .get(c)
                .map(|d| d.current)
                .unwrap_or_default();
            h = h.detail(c.name(), format!("{}: {}", level.name(), r.reason));
        }
        h
    }
}

#[cfg(test)]
mod tests;
