//! `high_quality_sync`: the best games first. Every cycle (60 s), and at once on
//! NEW_GAMES_AVAILABLE from this node, this node's games with `quality_score` above
//! `min_quality` go to the sync targets with the training role first, then (with
//! `all_targets`) to the other targets, on this daemon's own watermarks
//! (`run/sync/high_quality_sync.db`): they do not wait behind auto_sync's backlog, and
//! auto_sync later finds them already there (`INSERT OR IGNORE` by `game_id`). The
//! filter runs in the data store (`GameFilter::min_quality`), so the low-quality games
//! are skipped, not sent; within the filter, games go in ingest order (a request is
//! stored in one transaction, so order inside it does not matter).
//!
//! `[high_quality_sync]`: `min_quality` (0.7, a finite number), `all_targets` (true),
//! `batch` (500), `timeout_s` (30). A bad value exits 64 naming the key. Health: per
//! peer the last success and games sent; a run fails (DEGRADED after three) when every
//! target failed.

use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_cluster::Role;
use ringrift_proto::{Event, EventType, wire::event::Payload};
use ringrift_transfer::Peer;
use ringrift_transfer::games::GameFilter;
use ringrift_transfer::sync::{GameSync, SyncSettings, names_node};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub const INFO: DaemonInfo = DaemonInfo {
    name: "high_quality_sync",
    about: "Priority sync of games with quality score above min_quality (0.7), training nodes first",
    cycle_interval_s: Some(60.0),
    scope: Some(Scope::Node),
};

/// `[high_quality_sync]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HighQualitySyncConfig {
    /// Games strictly above this quality score are pushed.
    pub min_quality: f64,
    /// After the training nodes, push to every other target too.
    pub all_targets: bool,
    pub batch: usize,
    pub timeout_s: f64,
}

impl Default for HighQualitySyncConfig {
    fn default() -> Self {
        HighQualitySyncConfig {
            min_quality: 0.7,
            all_targets: true,
            batch: 500,
            timeout_s: 30.0,
        }
    }
}

pub struct HighQualitySync {
    cfg: HighQualitySyncConfig,
    filter: GameFilter,
    sync: GameSync,
    running: tokio::sync::Mutex<()>,
    sent: AtomicU64,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: HighQualitySyncConfig = ctx.settings.section("high_quality_sync")?;
    handler_base::ensure_config!(
        cfg.min_quality.is_finite(),
        "high_quality_sync.min_quality = {} must be a finite number",
        cfg.min_quality
    );
    let s = SyncSettings::check("high_quality_sync", cfg.timeout_s, cfg.batch)?;
    let sync = GameSync::from_context(ctx, s)?;
    Ok(Arc::new(HighQualitySync {
        filter: GameFilter {
            min_quality: Some(cfg.min_quality),
            ..GameFilter::default()
        },
        cfg,
        sync,
        running: tokio::sync::Mutex::new(()),
        sent: AtomicU64::new(0),
    }))
}

impl HighQualitySync {
    /// Training targets first, then (with `all_targets`) the others, cluster.toml order.
    pub fn ordered_targets(&self) -> Vec<Peer> {
        let (mut training, others): (Vec<Peer>, Vec<Peer>) = self
            .sync
            .targets()
            .into_iter()
            .partition(|p| p.has_role(Role::Training));
        if self.cfg.all_targets {
            training.extend(others);
        }
        training
    }

    /// One run over the ordered targets. `Err` only when every target failed.
    pub async fn push(&self) -> anyhow::Result<()> {
        let _one = self.running.lock().await;
        let configs = self.sync.local_configs().await;
        let targets = self.ordered_targets();
        if configs.is_empty() || targets.is_empty() {
            return Ok(());
        }
        let mut failed = Vec::new();
        for peer in &targets {
            match self.sync.push_to(peer, &configs, &self.filter).await {
                Ok(o) => {
                    self.sent.fetch_add(o.sent, Ordering::Relaxed);
                }
                Err(e) => failed.push(format!("{}: {e}", peer.name)),
            }
        }
        if failed.len() == targets.len() {
            anyhow::bail!("every target failed: {}", failed.join("; "));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handler for HighQualitySync {
    fn subscriptions(&self) -> Vec<EventType> {
        vec![EventType::NewGamesAvailable]
    }

    async fn run_cycle(&self, _ctx: &Context) -> anyhow::Result<()> {
        self.push().await
    }

    /// NEW_GAMES_AVAILABLE made on this node: push the good ones at once.
    async fn handle_event(&self, ctx: &Context, event: &Event) -> anyhow::Result<()> {
        let Payload::NewGamesAvailable(ng) = &event.payload else {
            return Ok(());
        };
        let who = if ng.node.is_empty() {
            &event.source
        } else {
            &ng.node
        };
        if names_node(who, &ctx.node) {
            self.push().await?;
        }
        Ok(())
    }

    fn health_check(&self) -> HealthCheckResult {
        let t = self.ordered_targets();
        let h = HealthCheckResult::running(format!(
            "games above quality {} to {} targets",
            self.cfg.min_quality,
            t.len()
        ))
        .detail("games_sent", self.sent.load(Ordering::Relaxed))
        .detail(
            "targets",
            t.iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
        );
        self.sync.health_details(h)
    }
}

#[cfg(test)]
mod tests;
