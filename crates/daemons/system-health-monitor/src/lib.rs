//! `system_health_monitor`: one health score for the cluster, and the pipeline paused
//! while it cannot work safely.
//!
//! Inputs: membership and the leader from this node's peer API (`p2p_backend`; on a
//! one-node cluster, this node alone), and the alerts the node monitors publish:
//! NODE_UNHEALTHY / NODE_RECOVERED (per node and per source, so a peer's membership alert
//! and the node's own checks do not clear each other) and RESOURCE_PRESSURE (per node and
//! resource). Score: the mean over nodes of 1 (alive, healthy), minus 0.5 when
//! unhealthy or under critical pressure, minus 0.25 under a warning; 0.5 for a suspect or
//! unknown node, 0 for a dead one.
//!
//! PIPELINE_PAUSED when the coordinator (leader) is dead or there is none, when this
//! node or the leader is under critical disk or memory pressure, or when the score falls
//! below `pause_below_score`; PIPELINE_RESUMED once every reason is gone. Only a pause
//! this monitor published is resumed by it; its alert state and pause survive restarts
//! (`pipeline_state.db`). Without a membership view (peer API down) it decides nothing
//! about the coordinator and reports DEGRADED.

use handler_base::auth::Token;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_cluster::{ClusterConfig, MemberState};
use ringrift_pipeline::state::StateStore;
use ringrift_proto::{Event, EventType, wire, wire::event::Payload};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "system_health_monitor",
    about: "Global health score; pauses the pipeline on coordinator loss or resource limits",
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
}

impl Default for SystemConfig {
    fn default() -> Self {
        SystemConfig {
            pause_below_score: 0.5,
            pause_on_coordinator_loss: true,
            pause_on_critical_resources: true,
            rpc_timeout_s: 5.0,
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

impl Alerts {
    /// Applies one alert event; false for any other event.
    pub fn apply(&mut self, ev: &Event) -> bool {
        match &ev.payload {
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

/// The score of each node and the cluster (pure).
pub fn score(members: &Members, alerts: &Alerts) -> (f64, BTreeMap<String, f64>) {
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
    let total = if per.is_empty() {
        0.0
    } else {
        per.values().sum::<f64>() / per.len() as f64
    };
    (total, per)
}

/// Why the pipeline must pause now (pure); empty: it may run. `members` is `None` when
/// no membership view could be had.
pub fn pause_reasons(
    cfg: &SystemConfig,
    members: Option<&Members>,
    alerts: &Alerts,
) -> Vec<String> {
    let mut out = Vec::new();
    let Some(m) = members else {
        return out;
    };
    if cfg.pause_on_coordinator_loss {
        if m.leader.is_empty() {
            out.push("no coordinator (no leader known)".to_owned());
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
    let (s, _) = score(m, alerts);
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
    token: Option<Token>,
    limit: Duration,
}

#[async_trait::async_trait]
impl MembershipSource for LiveMembers {
    async fn members(&self, ctx: &Context) -> Result<Members, String> {
        if self.cluster.nodes.len() <= 1 {
            let me = self.cluster.this_node().name.clone();
            return Ok(Members {
                this_node: me.clone(),
                leader: me.clone(),
                states: [(me, MemberState::Alive)].into(),
            });
        }
        let info = ringrift_cluster::client::local_node_info(
            &ctx.home,
            Token::bearer(self.token.as_ref()),
            self.limit,
        )
        .await
        .map_err(|e| format!("local p2p_backend: {e}"))?;
        let mut states: BTreeMap<String, MemberState> = info
            .members
            .iter()
            .map(|m| (m.node.clone(), m.state))
            .collect();
        states.insert(info.node.clone(), MemberState::Alive);
        Ok(Members {
            this_node: info.node,
            leader: info.leader,
            states,
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
}

pub struct SystemHealthMonitor {
    cfg: SystemConfig,
    source: Arc<dyn MembershipSource>,
    store: StateStore,
    state: Mutex<State>,
}

const STATE_KEY: &str = "alerts";

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: SystemConfig = ctx.settings.section("system_health_monitor")?;
    let cluster = ClusterConfig::load(&ctx.home, &ctx.node)
        .map_err(|e| handler_base::ConfigError::Invalid(e.to_string()))?;
    let token = handler_base::auth::load(&ctx.settings)?;
    // Validated before use: `from_secs_f64` panics on a negative or NaN value.
    cfg.validate()?;
    let limit = Duration::from_secs_f64(cfg.rpc_timeout_s);
    build_with(
        ctx,
        cfg,
        Arc::new(LiveMembers {
            cluster,
            token,
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
        store: StateStore::open(&ctx.home, INFO.name)?,
        state: Mutex::new(State::default()),
    }))
}

impl SystemHealthMonitor {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl Handler for SystemHealthMonitor {
    fn subscriptions(&self) -> Vec<EventType> {
        vec![
            EventType::NodeUnhealthy,
            EventType::NodeRecovered,
            EventType::ResourcePressure,
        ]
    }

    async fn on_start(&self, _ctx: &Context) -> anyhow::Result<()> {
        if let Some(a) = self.store.get::<Alerts>(STATE_KEY).await? {
            self.state().alerts = a;
        }
        Ok(())
    }

    async fn handle_event(&self, _ctx: &Context, ev: &Event) -> anyhow::Result<()> {
        let alerts = {
            let mut st = self.state();
            if !st.alerts.apply(ev) {
                return Ok(());
            }
            st.alerts.clone()
        };
        self.store.put(STATE_KEY, &alerts).await?;
        Ok(())
    }

    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        let members = self.source.members(ctx).await;
        let (event, paused) = {
            let mut st = self.state();
            match members {
                Ok(m) => {
                    st.members = Some(m);
                    st.error.clear();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no membership view");
                    st.members = None;
                    st.error = e;
                }
            }
            let reasons = pause_reasons(&self.cfg, st.members.as_ref(), &st.alerts);
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

    fn health_check(&self) -> HealthCheckResult {
        let st = self.state();
        let Some(m) = &st.members else {
            return if st.error.is_empty() {
                HealthCheckResult::running("starting: no membership view yet")
            } else {
                HealthCheckResult::degraded(format!("no membership view: {}", st.error))
            };
        };
        let (total, per) = score(m, &st.alerts);
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
