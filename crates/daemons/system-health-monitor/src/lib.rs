//! `system_health_monitor`: one health score for the cluster, and the pipeline paused
//! while it cannot work safely.
//!
//! Inputs: membership and the leader from this node's peer API (`p2p_backend`; on a
//! one-node cluster, this node alone), and the alerts the node monitors publish:
//! NODE_UNHEALTHY / NODE_RECOVERED (per node and per source, so a peer's membership alert
//! and the node's own checks do not clear each other) and RESOURCE_PRESSURE (per node and
//! resource). A node alive again in membership (HOST_JOINED, or alive in this node's view:
//! it heartbeats) clears the membership alerts (`p2p_backend@*`) about it: a node that
//! died and rejoined gets HOST_JOINED, never NODE_RECOVERED. Score: the weighted mean
//! over nodes of 1 (alive, healthy), minus 0.5 when unhealthy or under critical
//! pressure, minus 0.25 under a warning; 0.5 for a suspect or unknown node, 0 for a dead
//! one; an ephemeral (spot) node weighs `ephemeral_weight` (0.25), a durable one 1.
//!
//! PIPELINE_PAUSED when the coordinator (leader) is dead, or none has been known for
//! `no_leader_grace_s` (an election, or start-up before this node's p2p_backend has read
//! the leader, is no reason), when this node or the leader is under critical disk or
//! memory pressure, or when the score falls below `pause_below_score`; PIPELINE_RESUMED
//! once every reason is gone. LEADER_CHANGED and HOST_JOINED from this node's p2p_backend
//! update the view and decide at once, not at the next cycle. Only a pause this monitor
//! published is resumed by it; its alert state and pause survive restarts
//! (`pipeline_state.db`). Without a membership view (peer API down) it decides nothing
//! about the coordinator and reports DEGRADED.

use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_cluster::{ClusterConfig, MemberState};
use ringrift_ledger::StateStore;
use ringrift_proto::{Event, EventType, wire, wire::event::Payload};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const INFO: DaemonInfo = DaemonInfo {
    name: "system_health_monitor",
    about: "Global health score; pauses the pipeline on coordinator loss or resource limits",
    cycle_interval_s: Some(30.0),
    scope: Some(Scope::Node),
};

/// `[system_health_monitor]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SystemConfig {
    /// Pause while the score is below this (0 disables).
    pub pause_below_score: f64,
    pub pause_on_coordinator_loss: bool,
    pub pause_on_critical_resources: bool,
    /// Seconds a peer API call may take.
    pub rpc_timeout_s: f64,
    /// The weight of an ephemeral (spot) node in the score; a durable node weighs 1.
    pub ephemeral_weight: f64,
    /// Seconds without a known leader before that is a pause reason.
    pub no_leader_grace_s: f64,
}

impl Default for SystemConfig {
    fn default() -> Self {
        SystemConfig {
            pause_below_score: 0.5,
            pause_on_coordinator_loss: true,
            pause_on_critical_resources: true,
            rpc_timeout_s: 5.0,
            ephemeral_weight: 0.25,
            no_leader_grace_s: 30.0,
        }
    }
}

impl SystemConfig {
    fn validate(&self) -> Result<(), handler_base::ConfigError> {
        handler_base::ensure_config!(
            (0.0..=1.0).contains(&self.pause_below_score),
            "system_health_monitor.pause_below_score = {} must be within 0..=1",
            self.pause_below_score
        );
        handler_base::ensure_config!(
            self.rpc_timeout_s.is_finite() && self.rpc_timeout_s > 0.0,
            "system_health_monitor.rpc_timeout_s = {} must be > 0",
            self.rpc_timeout_s
        );
        handler_base::ensure_config!(
            (0.0..=1.0).contains(&self.ephemeral_weight),
            "system_health_monitor.ephemeral_weight = {} must be within 0..=1",
            self.ephemeral_weight
        );
        handler_base::ensure_config!(
            self.no_leader_grace_s.is_finite() && self.no_leader_grace_s >= 0.0,
            "system_health_monitor.no_leader_grace_s = {} must be >= 0",
            self.no_leader_grace_s
        );
        Ok(())
    }
}

/// Who is in the cluster now and who leads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Members {
    pub this_node: String,
    /// Empty: no leader known (e.g. no etcd lease held).
    pub leader: String,
    pub states: BTreeMap<String, MemberState>,
    /// The ephemeral (spot) nodes: `ephemeral` or role `ephemeral` in cluster.toml, or
    /// role `ephemeral` in the membership record.
    pub ephemeral: BTreeSet<String>,
}

/// What the alerts said, per node (persisted).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Alerts {
    /// node → sources (`daemon@node`) that say it is unhealthy, with their reason.
    pub unhealthy: BTreeMap<String, BTreeMap<String, String>>,
    /// node → resource → (level, percent).
    pub pressure: BTreeMap<String, BTreeMap<String, (String, f64)>>,
    /// The reason of the PIPELINE_PAUSED this monitor published and has not resumed.
    pub paused: Option<String>,
}

/// Whether `source` (`daemon@node`) is a membership observer (a p2p_backend), whose
/// NODE_UNHEALTHY means "not heard from" and is answered by the node being heard again.
fn is_membership_source(source: &str) -> bool {
    source.split('@').next() == Some("p2p_backend")
}

impl Alerts {
    /// Drops the membership alerts about `node` (it is alive again); true if any was held.
    pub fn node_alive(&mut self, node: &str) -> bool {
        let Some(m) = self.unhealthy.get_mut(node) else {
            return false;
        };
        let before = m.len();
        m.retain(|source, _| !is_membership_source(source));
        let changed = m.len() != before;
        if m.is_empty() {
            self.unhealthy.remove(node);
        }
        changed
    }

    /// [`Alerts::node_alive`] for every node alive in `members`; true if any alert went.
    pub fn alive_in(&mut self, members: &Members) -> bool {
        let mut changed = false;
        for (n, s) in &members.states {
            if *s == MemberState::Alive {
                changed |= self.node_alive(n);
            }
        }
        changed
    }

    /// Applies one alert event (HOST_JOINED: the node is alive again); false for any
    /// other event.
    pub fn apply(&mut self, ev: &Event) -> bool {
        match &ev.payload {
            Payload::HostJoined(m) => {
                self.node_alive(&m.node);
            }
            Payload::NodeUnhealthy(s) => {
                self.unhealthy
                    .entry(s.node.clone())
                    .or_default()
                    .insert(ev.source.clone(), s.reason.clone());
            }
            Payload::NodeRecovered(s) => {
                if let Some(m) = self.unhealthy.get_mut(&s.node) {
                    m.remove(&ev.source);
                    if m.is_empty() {
                        self.unhealthy.remove(&s.node);
                    }
                }
            }
            Payload::ResourcePressure(p) => {
                let m = self.pressure.entry(p.node.clone()).or_default();
                if p.level == "ok" {
                    m.remove(&p.resource);
                } else {
                    m.insert(p.resource.clone(), (p.level.clone(), p.percent));
                }
                if m.is_empty() {
                    self.pressure.remove(&p.node);
                }
            }
            _ => return false,
        }
        true
    }

    fn worst_pressure(&self, node: &str) -> Option<&str> {
        let m = self.pressure.get(node)?;
        if m.values().any(|(l, _)| l == "critical") {
            Some("critical")
        } else if m.is_empty() {
            None
        } else {
            Some("warning")
        }
    }
}

/// The score of each node and the cluster: the mean of the nodes' scores, an ephemeral
/// node weighing `ephemeral_weight` and a durable one 1 (pure).
pub fn score(
    members: &Members,
    alerts: &Alerts,
    ephemeral_weight: f64,
) -> (f64, BTreeMap<String, f64>) {
    let per: BTreeMap<String, f64> = members
        .states
        .iter()
        .map(|(n, s)| {
            let v = match s {
                MemberState::Dead => 0.0,
                MemberState::Suspect | MemberState::Unknown => 0.5,
                MemberState::Alive => {
                    let sick = alerts.unhealthy.contains_key(n);
                    match (sick, alerts.worst_pressure(n)) {
                        (true, _) | (_, Some("critical")) => 0.5,
                        (false, Some(_)) => 0.75,
                        (false, None) => 1.0,
                    }
                }
            };
            (n.clone(), v)
        })
        .collect();
    let weight = |n: &String| {
        if members.ephemeral.contains(n) {
            ephemeral_weight
        } else {
            1.0
        }
    };
    let weights: f64 = per.keys().map(weight).sum();
    let total = if per.is_empty() {
        0.0
    } else if weights > 0.0 {
        per.iter().map(|(n, v)| weight(n) * v).sum::<f64>() / weights
    } else {
        // Only ephemeral nodes, weighing 0: each counts alike.
        per.values().sum::<f64>() / per.len() as f64
    };
    (total, per)
}

/// Why the pipeline must pause now (pure); empty: it may run. `members` is `None` when
/// no membership view could be had; `leaderless_for` is how long no leader has been
/// known (zero while one is).
pub fn pause_reasons(
    cfg: &SystemConfig,
    members: Option<&Members>,
    alerts: &Alerts,
    leaderless_for: Duration,
) -> Vec<String> {
    let mut out = Vec::new();
    let Some(m) = members else {
        return out;
    };
    if cfg.pause_on_coordinator_loss {
        if m.leader.is_empty() {
            if leaderless_for.as_secs_f64() >= cfg.no_leader_grace_s {
                out.push(format!(
                    "no coordinator (no leader known for {:.0} s)",
                    leaderless_for.as_secs_f64()
                ));
            }
        } else if m.states.get(&m.leader) == Some(&MemberState::Dead) {
            out.push(format!("coordinator {} lost (dead)", m.leader));
        }
    }
    if cfg.pause_on_critical_resources {
        let mut nodes = vec![m.this_node.as_str()];
        if !m.leader.is_empty() && m.leader != m.this_node {
            nodes.push(&m.leader);
        }
        for n in nodes {
            for (res, (level, pct)) in alerts.pressure.get(n).into_iter().flatten() {
                if level == "critical" && (res == "disk" || res == "memory") {
                    out.push(format!("{res} critical on {n} ({pct:.1}%)"));
                }
            }
        }
    }
    let (s, _) = score(m, alerts, cfg.ephemeral_weight);
    if cfg.pause_below_score > 0.0 && s < cfg.pause_below_score {
        out.push(format!(
            "health score {s:.2} below {}",
            cfg.pause_below_score
        ));
    }
    out
}

/// Where membership comes from; a fake in tests.
#[async_trait::async_trait]
pub trait MembershipSource: Send + Sync {
    async fn members(&self, ctx: &Context) -> Result<Members, String>;
}

/// cluster.toml alone for one node; the local peer API otherwise.
pub struct LiveMembers {
    cluster: ClusterConfig,
    /// Our clients' credentials: the token and `[tls]`.
    bearer: handler_base::router_client::Bearer,
    limit: Duration,
}

#[async_trait::async_trait]
impl MembershipSource for LiveMembers {
    async fn members(&self, ctx: &Context) -> Result<Members, String> {
        let mut ephemeral: BTreeSet<String> = self
            .cluster
            .nodes
            .iter()
            .filter(|n| n.ephemeral)
            .map(|n| n.name.clone())
            .collect();
        if self.cluster.nodes.len() <= 1 {
            let me = self.cluster.this_node().name.clone();
            return Ok(Members {
                this_node: me.clone(),
                leader: me.clone(),
                states: [(me, MemberState::Alive)].into(),
                ephemeral,
            });
        }
        let info =
            ringrift_cluster::client::local_node_info(&ctx.home, self.bearer.clone(), self.limit)
                .await
                .map_err(|e| format!("local p2p_backend: {e}"))?;
        let mut states: BTreeMap<String, MemberState> = info
            .members
            .iter()
            .map(|m| (m.node.clone(), m.state))
            .collect();
        states.insert(info.node.clone(), MemberState::Alive);
        ephemeral.extend(
            info.members
                .iter()
                .filter(|m| m.roles.iter().any(|r| r == "ephemeral"))
                .map(|m| m.node.clone()),
        );
        Ok(Members {
            this_node: info.node,
            leader: info.leader,
            states,
            ephemeral,
        })
    }
}

#[derive(Default)]
struct State {
    alerts: Alerts,
    members: Option<Members>,
    /// Why the last membership view failed.
    error: String,
    reasons: Vec<String>,
    /// Since when no leader is known (in the last view), `None` while one is.
    leaderless_since: Option<Instant>,
}

impl State {
    /// Takes a membership view (or why there is none) at `now`.
    fn view(&mut self, members: Result<Members, String>, now: Instant) {
        match members {
            Ok(m) => {
                self.set_leader_known(!m.leader.is_empty(), now);
                self.members = Some(m);
                self.error.clear();
            }
            Err(e) => {
                tracing::warn!(error = %e, "no membership view");
                self.members = None;
                self.error = e;
            }
        }
    }

    fn set_leader_known(&mut self, known: bool, now: Instant) {
        if known {
            self.leaderless_since = None;
        } else if self.leaderless_since.is_none() {
            self.leaderless_since = Some(now);
        }
    }

    /// What this node's own p2p_backend said between two views: the leader changed, or
    /// a node joined (alive). False if there is no view to update.
    fn own_peer_event(&mut self, ev: &Event, now: Instant) -> bool {
        let Some(m) = self.members.as_mut() else {
            return false;
        };
        match &ev.payload {
            Payload::LeaderChanged(l) => {
                m.leader = l.leader.clone();
                let known = !l.leader.is_empty();
                self.set_leader_known(known, now);
                true
            }
            Payload::HostJoined(j) if j.observer == m.this_node => {
                m.states.insert(j.node.clone(), MemberState::Alive);
                if j.roles.iter().any(|r| r == "ephemeral") {
                    m.ephemeral.insert(j.node.clone());
                }
                true
            }
            _ => false,
        }
    }
}

pub struct SystemHealthMonitor {
    cfg: SystemConfig,
    source: Arc<dyn MembershipSource>,
    store: StateStore,
    state: Mutex<State>,
    /// One decision at a time (the cycle and the event loop both decide): never two
    /// PIPELINE_PAUSED for one pause.
    deciding: tokio::sync::Mutex<()>,
}

const STATE_KEY: &str = "alerts";

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: SystemConfig = ctx.settings.section("system_health_monitor")?;
    let cluster =
        ClusterConfig::load(&ctx.home, &ctx.node).map_err(handler_base::ConfigError::from)?;
    let token = handler_base::auth::load(&ctx.settings)?;
    // Validated before use: `from_secs_f64` panics on a negative or NaN value.
    cfg.validate()?;
    let limit = Duration::from_secs_f64(cfg.rpc_timeout_s);
    build_with(
        ctx,
        cfg,
        Arc::new(LiveMembers {
            cluster,
            bearer: handler_base::tls::Tls::load(&ctx.settings)?.bearer(token.as_ref()),
            limit,
        }),
    )
}

/// [`build`] with another membership source (tests).
pub fn build_with(
    ctx: &Context,
    cfg: SystemConfig,
    source: Arc<dyn MembershipSource>,
) -> anyhow::Result<Arc<dyn Handler>> {
    cfg.validate()?;
    Ok(Arc::new(SystemHealthMonitor {
        cfg,
        source,
        store: StateStore::open(&ctx.home, &INFO)?,
        state: Mutex::new(State::default()),
        deciding: tokio::sync::Mutex::new(()),
    }))
}

impl SystemHealthMonitor {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Pauses or resumes on the view and alerts held now.
    async fn decide(&self, ctx: &Context) -> anyhow::Result<()> {
        let _one = self.deciding.lock().await;
        let (event, paused) = {
            let mut st = self.state();
            let leaderless_for = st.leaderless_since.map(|t| t.elapsed()).unwrap_or_default();
            let reasons = pause_reasons(&self.cfg, st.members.as_ref(), &st.alerts, leaderless_for);
            st.reasons = reasons.clone();
            let mut paused = st.alerts.paused.clone();
            let event = match (&paused, reasons.is_empty()) {
                (None, false) => {
                    let reason = format!("system_health_monitor: {}", reasons.join("; "));
                    paused = Some(reason.clone());
                    Some(Payload::PipelinePaused(wire::PipelineControl { reason }))
                }
                (Some(_), true) if st.members.is_some() => {
                    paused = None;
                    Some(Payload::PipelineResumed(wire::PipelineControl {
                        reason: "system_health_monitor: every pause reason cleared".into(),
                    }))
                }
                _ => None,
            };
            (event, paused)
        };
        if let Some(p) = event {
            tracing::warn!(event = ?p, "pipeline control");
            // Published before the state is stored: a crash in between repeats a pause or
            // a resume (idempotent for the daemons) instead of losing one.
            ctx.publish(Event::new(p)).await?;
            let now = {
                let mut st = self.state();
                st.alerts.paused = paused;
                st.alerts.clone()
            };
            self.store.put(STATE_KEY, &now).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handler for SystemHealthMonitor {
    fn subscriptions(&self) -> Vec<EventType> {
        vec![
            EventType::NodeUnhealthy,
            EventType::NodeRecovered,
            EventType::ResourcePressure,
            EventType::HostJoined,
            EventType::LeaderChanged,
        ]
    }

    async fn on_start(&self, _ctx: &Context) -> anyhow::Result<()> {
        if let Some(a) = self.store.get::<Alerts>(STATE_KEY).await? {
            self.state().alerts = a;
        }
        Ok(())
    }

    async fn handle_event(&self, ctx: &Context, ev: &Event) -> anyhow::Result<()> {
        let own = ev.source == format!("p2p_backend@{}", ctx.node);
        let (alerts, decide) = {
            let mut st = self.state();
            let changed = st.alerts.apply(ev);
            let decide = own && st.own_peer_event(ev, Instant::now());
            if !changed && !decide {
                return Ok(());
            }
            (changed.then(|| st.alerts.clone()), decide)
        };
        if let Some(a) = alerts {
            self.store.put(STATE_KEY, &a).await?;
        }
        if decide {
            // The leader became known or a node is back: resume now, not a cycle later.
            self.decide(ctx).await?;
        }
        Ok(())
    }

    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        let members = self.source.members(ctx).await;
        let pruned = {
            let mut st = self.state();
            st.view(members, Instant::now());
            let st = &mut *st;
            match &st.members {
                // Alive in this node's view (it heartbeats): its membership alerts go.
                Some(m) => st.alerts.alive_in(m).then(|| st.alerts.clone()),
                None => None,
            }
        };
        if let Some(a) = pruned {
            self.store.put(STATE_KEY, &a).await?;
        }
        self.decide(ctx).await
    }

    fn health_check(&self) -> HealthCheckResult {
        let st = self.state();
        let Some(m) = &st.members else {
            return if st.error.is_empty() {
                HealthCheckResult::running("starting: no membership view yet")
            } else {
                HealthCheckResult::degraded(format!("no membership view: {}", st.error))
            };
        };
        let (total, per) = score(m, &st.alerts, self.cfg.ephemeral_weight);
        let mut h = match &st.alerts.paused {
            Some(r) => {
                HealthCheckResult::degraded(format!("score {total:.2}; pipeline paused: {r}"))
            }
            None => HealthCheckResult::running(format!("score {total:.2}; leader {}", m.leader)),
        };
        for (n, v) in per {
            h = h.detail(format!("node.{n}"), format!("{v:.2}"));
        }
        h.detail("score", format!("{total:.2}"))
            .detail("pause_reasons", st.reasons.join("; "))
    }
}

#[cfg(test)]
mod tests;
