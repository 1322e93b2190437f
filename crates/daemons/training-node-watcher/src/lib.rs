//! `training_node_watcher`: a node that is training gets this node's games of that
//! config first.
//!
//! It learns who trains from TRAINING_STARTED (the event's source `daemon@node` names the
//! node, its config key the config) and, each cycle with `probe_p2p`, from every peer's
//! p2p `NodeInfo` (a running job keyed `train:{config}`). A TRAINING_STARTED push runs at
//! once; every cycle (30 s) the watched (node, config) pairs get the games made or
//! received here since their watermark (`run/sync/training_node_watcher.db`). A watch
//! ends on TRAINING_COMPLETED / TRAINING_FAILED from that node, or `watch_s` after it was
//! last confirmed. Never this node, never an `exclude_from_sync` node.
//!
//! `[training_node_watcher]`: `watch_s` (3600), `probe_p2p` (true), `batch` (500),
//! `timeout_s` (30). A bad value exits 64 naming the key. Health lists the watched
//! nodes with their configs and per-peer push results.

use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_cluster::view::JobView;
use ringrift_proto::{Event, EventType, wire::event::Payload};
use ringrift_store::ConfigKey;
use ringrift_transfer::Peer;
use ringrift_transfer::games::GameFilter;
use ringrift_transfer::sync::{GameSync, SyncSettings, node_of};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "training_node_watcher",
    about: "Detect active training and push this node's games of that config to it first",
    cycle_interval_s: Some(30.0),
    scope: Some(Scope::Node),
};

/// `[training_node_watcher]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatcherConfig {
    /// A watch not confirmed (event or p2p) for this long ends.
    pub watch_s: f64,
    /// Ask every peer's p2p_backend for its running jobs each cycle.
    pub probe_p2p: bool,
    pub batch: usize,
    pub timeout_s: f64,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        WatcherConfig {
            watch_s: 3600.0,
            probe_p2p: true,
            batch: 500,
            timeout_s: 30.0,
        }
    }
}

/// Why a (node, config) is watched.
#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    /// `event` or `p2p`.
    pub via: &'static str,
    /// Last confirmation (ms since the epoch).
    pub confirmed_ms: i64,
}

pub struct Watcher {
    cfg: WatcherConfig,
    sync: GameSync,
    bearer: handler_base::router_client::Bearer,
    watched: Mutex<BTreeMap<(String, ConfigKey), Watch>>,
    running: tokio::sync::Mutex<()>,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: WatcherConfig = ctx.settings.section("training_node_watcher")?;
    handler_base::ensure_config!(
        cfg.watch_s.is_finite() && cfg.watch_s > 0.0,
        "training_node_watcher.watch_s = {} must be a positive number of seconds",
        cfg.watch_s
    );
    let s = SyncSettings::check("training_node_watcher", cfg.timeout_s, cfg.batch)?;
    let sync = GameSync::from_context(ctx, s)?;
    let token = handler_base::auth::load(&ctx.settings)?;
    Ok(Arc::new(Watcher {
        bearer: handler_base::tls::Tls::load(&ctx.settings)?.bearer(token.as_ref()),
        cfg,
        sync,
        watched: Mutex::new(BTreeMap::new()),
        running: tokio::sync::Mutex::new(()),
    }))
}

/// The configs a node trains, from its running jobs (keys `train:{config}`).
pub fn training_configs(jobs: &[JobView]) -> Vec<ConfigKey> {
    let mut out: Vec<ConfigKey> = jobs
        .iter()
        .filter_map(|j| j.job_key.strip_prefix("train:"))
        .filter_map(|c| c.parse().ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

impl Watcher {
    fn target(&self, node: &str) -> Option<Peer> {
        self.sync.targets().into_iter().find(|p| p.name == node)
    }

    fn watch(&self, node: &str, config: ConfigKey, via: &'static str) {
        self.watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                (node.to_owned(), config),
                Watch {
                    via,
                    confirmed_ms: ringrift_store::now_ms(),
                },
            );
    }

    /// The watched pairs now.
    pub fn watched(&self) -> BTreeMap<(String, ConfigKey), Watch> {
        self.watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Pushes this node's games of `config` to `node` (if it is a target and this node
    /// has a store of that config).
    async fn push(&self, node: &str, config: ConfigKey) -> anyhow::Result<u64> {
        let Some(peer) = self.target(node) else {
            return Ok(0);
        };
        if !self.sync.local_configs().await.contains(&config) {
            return Ok(0);
        }
        let _one = self.running.lock().await;
        let o = self
            .sync
            .push_to(&peer, &[config], &GameFilter::default())
            .await?;
        Ok(o.sent)
    }

    /// Asks every target's p2p_backend which configs it trains; watches them.
    async fn probe(&self) {
        let limit = Duration::from_secs_f64(self.cfg.timeout_s.min(10.0));
        for peer in self.sync.targets() {
            let Some(node) = self.sync.cluster.node(&peer.name) else {
                continue;
            };
            match ringrift_cluster::client::node_info(&node.p2p_addr(), self.bearer.clone(), limit)
                .await
            {
                Ok(info) => {
                    for c in training_configs(&info.jobs) {
                        self.watch(&peer.name, c, "p2p");
                    }
                }
                Err(e) => tracing::debug!(peer = %peer.name, error = %e, "no p2p NodeInfo"),
            }
        }
    }

    /// One cycle: probe, expire, push to every watched pair. `Err` when a push failed.
    pub async fn cycle(&self) -> anyhow::Result<()> {
        if self.cfg.probe_p2p {
            self.probe().await;
        }
        let horizon = ringrift_store::now_ms() - (self.cfg.watch_s * 1000.0) as i64;
        self.watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, w| w.confirmed_ms >= horizon);
        let mut failed = Vec::new();
        for (node, config) in self.watched().into_keys() {
            if let Err(e) = self.push(&node, config).await {
                failed.push(format!("{node} {config}: {e}"));
            }
        }
        anyhow::ensure!(failed.is_empty(), "push failed: {}", failed.join("; "));
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handler for Watcher {
    fn subscriptions(&self) -> Vec<EventType> {
        vec![
            EventType::TrainingStarted,
            EventType::TrainingCompleted,
            EventType::TrainingFailed,
        ]
    }

    async fn run_cycle(&self, _ctx: &Context) -> anyhow::Result<()> {
        self.cycle().await
    }

    /// TRAINING_STARTED on another node: watch it and push at once. COMPLETED/FAILED:
    /// stop watching. A push that fails is retried by the next cycle (the watch stays),
    /// so the event is not failed for it.
    async fn handle_event(&self, ctx: &Context, event: &Event) -> anyhow::Result<()> {
        let node = node_of(&event.source).to_owned();
        if node.is_empty() || node == ctx.node {
            return Ok(());
        }
        let Ok(config) = event.config_key.parse::<ConfigKey>() else {
            tracing::warn!(source = %event.source, config = %event.config_key, "training event without a valid config key; ignored");
            return Ok(());
        };
        match &event.payload {
            Payload::TrainingStarted(_) => {
                if self.target(&node).is_none() {
                    tracing::info!(%node, "training on a node that is no sync target; not watched");
                    return Ok(());
                }
                self.watch(&node, config, "event");
                match self.push(&node, config).await {
                    Ok(n) => {
                        tracing::info!(%node, %config, games = n, "priority sync to a training node")
                    }
                    Err(e) => {
                        tracing::warn!(%node, %config, error = format!("{e:#}"), "priority sync failed; the next cycle retries")
                    }
                }
            }
            Payload::TrainingCompleted(_) | Payload::TrainingFailed(_) => {
                self.watched
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&(node, config));
            }
            _ => {}
        }
        Ok(())
    }

    fn health_check(&self) -> HealthCheckResult {
        let w = self.watched();
        let list = w
            .iter()
            .map(|((n, c), w)| format!("{n}:{c}({})", w.via))
            .collect::<Vec<_>>()
            .join(",");
        let h = HealthCheckResult::running(if w.is_empty() {
            "no node is training".to_owned()
        } else {
            format!("watching {list}")
        })
        .detail("watched", list);
        self.sync.health_details(h)
    }
}

#[cfg(test)]
mod tests;
