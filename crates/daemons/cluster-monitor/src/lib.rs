//! `cluster_monitor`: the cluster view on 127.0.0.1:8771 (`GET /status` JSON,
//! `run/cluster_monitor.addr`), refreshed every cycle.
//!
//! Membership comes from this node's `p2p_backend` (`run/p2p_backend.addr`): its view of
//! every node of cluster.toml (alive, suspect, dead, unknown) built from heartbeats. For
//! each node not dead it asks that node's peer API (`NodeInfo`) for roles, resources
//! (CPU, load, memory, disk, GPUs), daemons, running jobs and queue depth. The queue
//! depth shown for the cluster is the leader's (the shared work queue lives there). Health
//! is DEGRADED while a node is dead (or the local p2p_backend does not answer), with one
//! detail per node.

use handler_base::auth::Token;
use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_cluster::client::{local_node_info, node_info};
use ringrift_cluster::view::NodeInfo;
use ringrift_cluster::{ClusterConfig, MemberState};
use std::sync::{Arc, Mutex};

pub const INFO: DaemonInfo = DaemonInfo {
    name: "cluster_monitor",
    about: "The cluster view: nodes, roles, jobs, resources, queue depth, leader",
    cycle_interval_s: Some(30.0),
    scope: Some(Scope::Node),
};

/// `[cluster_monitor]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    pub listen: String,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            listen: "127.0.0.1:8771".into(),
        }
    }
}

/// The view and its parts are typed in `ringrift_cluster::view`, shared with readers.
pub use ringrift_cluster::view::{ClusterView, MonitorStatus, NodeEntry, Totals};

#[derive(Default)]
struct State {
    view: Option<ClusterView>,
    /// Why the last refresh failed (the local p2p_backend did not answer).
    error: String,
}

pub struct ClusterMonitor {
    cfg: MonitorConfig,
    cluster: ClusterConfig,
    token: Option<Token>,
    tls: handler_base::tls::Tls,
    state: Arc<Mutex<State>>,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: MonitorConfig = ctx.settings.section("cluster_monitor")?;
    handler_base::ensure_config!(
        cfg.listen.parse::<std::net::SocketAddr>().is_ok(),
        "cluster_monitor.listen = {:?} is not host:port",
        cfg.listen
    );
    let cluster =
        ClusterConfig::load(&ctx.home, &ctx.node).map_err(handler_base::ConfigError::from)?;
    let token = handler_base::auth::load(&ctx.settings)?;
    let tls = handler_base::tls::Tls::load(&ctx.settings)?;
    handler_base::auth::check_listen("cluster_monitor.listen", &cfg.listen, token.as_ref(), &tls)?;
    Ok(Arc::new(ClusterMonitor {
        cfg,
        cluster,
        token,
        tls,
        state: Arc::new(Mutex::new(State::default())),
    }))
}

fn lock(s: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Builds the view from the local node's answer and the peers' answers (pure).
pub fn assemble(
    cluster: &ClusterConfig,
    local: NodeInfo,
    peers: Vec<(String, Result<NodeInfo, String>)>,
    now_ms: i64,
) -> ClusterView {
    let mut peers: std::collections::BTreeMap<String, Result<NodeInfo, String>> =
        peers.into_iter().collect();
    let mut nodes = Vec::new();
    let mut totals = Totals::default();
    for m in &local.members {
        let (info, error) = if m.node == local.node {
            (Some(local.clone()), String::new())
        } else {
            match peers.remove(&m.node) {
                Some(Ok(i)) => (Some(i), String::new()),
                Some(Err(e)) => (None, e),
                None => (None, format!("not asked: {:?}", m.state).to_lowercase()),
            }
        };
        totals.nodes += 1;
        match m.state {
            MemberState::Alive => totals.alive += 1,
            MemberState::Suspect => totals.suspect += 1,
            MemberState::Dead => totals.dead += 1,
            MemberState::Unknown => totals.unknown += 1,
        }
        if let Some(i) = &info {
            totals.cpu_count += u64::from(i.resources.cpu_count);
            totals.gpus += i.resources.gpus.len();
            totals.running_jobs += i.jobs.len();
            totals.disk_free_bytes += i.resources.disk_free_bytes;
        }
        nodes.push(NodeEntry {
            name: m.node.clone(),
            roles: m.roles.clone(),
            address: m.address.clone(),
            ephemeral: cluster.node(&m.node).is_some_and(|n| n.ephemeral),
            state: m.state,
            last_seen_s_ago: m.last_seen_s_ago,
            info,
            error,
        });
    }
    let queue = nodes
        .iter()
        .find(|n| n.name == local.leader)
        .and_then(|n| n.info.as_ref())
        .and_then(|i| i.queue);
    ClusterView {
        cluster: cluster.name.clone(),
        config: cluster.source(),
        observer: local.node.clone(),
        leader: local.leader.clone(),
        leader_mode: local.leader_mode.clone(),
        event_backend: match &cluster.events {
            ringrift_cluster::EventBackend::Sqlite => "sqlite".into(),
            ringrift_cluster::EventBackend::Jetstream { .. } => "jetstream".into(),
        },
        observed_unix_ms: now_ms,
        queue,
        totals,
        nodes,
    }
}

/// DEGRADED while a node is dead or the view cannot be built; one detail per node.
pub fn health_of(view: Option<&ClusterView>, error: &str) -> HealthCheckResult {
    if !error.is_empty() {
        return HealthCheckResult::degraded(format!("no cluster view: {error}"));
    }
    let Some(v) = view else {
        return HealthCheckResult::running("starting: no cluster view yet");
    };
    let dead: Vec<&str> = v
        .nodes
        .iter()
        .filter(|n| n.state == MemberState::Dead)
        .map(|n| n.name.as_str())
        .collect();
    let mut h = if dead.is_empty() {
        HealthCheckResult::running(format!(
            "{} of {} nodes alive; leader {}",
            v.totals.alive, v.totals.nodes, v.leader
        ))
    } else {
        HealthCheckResult::degraded(format!(
            "node(s) dead: {} ({} of {} alive)",
            dead.join(", "),
            v.totals.alive,
            v.totals.nodes
        ))
    };
    for n in &v.nodes {
        h = h.detail(
            format!("node.{}", n.name),
            format!("{:?}", n.state).to_lowercase(),
        );
    }
    h.detail("leader", &v.leader)
        .detail("queue_pending", v.queue.map(|q| q.pending).unwrap_or(0))
        .detail("running_jobs", v.totals.running_jobs)
}

impl ClusterMonitor {
    async fn refresh(&self, ctx: &Context) -> anyhow::Result<()> {
        let limit = self.cluster.timeouts.rpc_timeout;
        let local = local_node_info(&ctx.home, self.tls.bearer(self.token.as_ref()), limit)
            .await
            .map_err(|e| anyhow::anyhow!("local p2p_backend: {e}"))?;
        let mut set = tokio::task::JoinSet::new();
        for m in &local.members {
            if m.node == local.node || m.state == MemberState::Dead {
                continue;
            }
            let (name, addr) = (m.node.clone(), m.address.clone());
            let bearer = self.tls.bearer(self.token.as_ref());
            set.spawn(async move {
                let r = node_info(&addr, bearer, limit)
                    .await
                    .map_err(|e| e.to_string());
                (name, r)
            });
        }
        let mut peers = Vec::new();
        while let Some(r) = set.join_next().await {
            peers.push(r?);
        }
        let view = assemble(
            &self.cluster,
            local,
            peers,
            handler_base::router_client::now_ms(),
        );
        let mut st = lock(&self.state);
        st.view = Some(view);
        st.error.clear();
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handler for ClusterMonitor {
    async fn on_start(&self, ctx: &Context) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(&self.cfg.listen)
            .await
            .map_err(|e| anyhow::anyhow!("bind cluster_monitor.listen {}: {e}", self.cfg.listen))?;
        let st = self.state.clone();
        let app = axum::Router::new()
            .route("/health", axum::routing::get(|| async { "ok\n" }))
            .route(
                "/status",
                axum::routing::get(move || {
                    let body = {
                        let s = lock(&st);
                        MonitorStatus {
                            health: health_of(s.view.as_ref(), &s.error),
                            error: s.error.clone(),
                            view: s.view.clone(),
                        }
                    };
                    async move { axum::Json(body) }
                }),
            );
        let addr = handler_base::auth::serve_http(
            ctx,
            "cluster_monitor",
            listener,
            app,
            self.token.clone(),
            &self.tls,
        )?;
        tracing::info!(%addr, cluster = %self.cluster.source(), "cluster monitor listening");
        // A first view now; a failure shows in health (the cycle retries).
        let _ = self.run_cycle(ctx).await;
        Ok(())
    }

    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        if let Err(e) = self.refresh(ctx).await {
            lock(&self.state).error = format!("{e:#}");
            tracing::warn!(error = %format!("{e:#}"), "cluster view not refreshed");
        }
        Ok(())
    }

    fn health_check(&self) -> HealthCheckResult {
        let s = lock(&self.state);
        health_of(s.view.as_ref(), &s.error)
    }
}

#[cfg(test)]
mod tests;
