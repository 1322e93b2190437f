//! `cluster_data_sync`: the pull side, which catches whatever pushes missed (a node that
//! was down, a push that failed, a game that reached only one node).
//!
//! Every cycle (300 s) it asks every other node of cluster.toml (excluded ones too: their
//! games are worth having) for its games of every config after the per-peer pull
//! watermark (the peer's own sequence, in `run/sync/cluster_data_sync.db`), stores them
//! in `data/games/{config}.db` by `INSERT OR IGNORE` on `game_id`, and advances the
//! watermark after each stored page; a restart resumes. A node marked
//! `exclude_from_sync` takes no data: there it does nothing and says so in health.
//!
//! `[cluster_data_sync]`: `batch` (1000 games per request, 1-2000), `timeout_s` (30).
//! A bad value exits 64 naming the key. Health: per peer the last success, games
//! received and the last error; a cycle fails (DEGRADED after three) only when every
//! peer failed.

use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_transfer::sync::{GameSync, SyncSettings};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub const INFO: DaemonInfo = DaemonInfo {
    name: "cluster_data_sync",
    about: "Pull every peer's games after the per-peer watermark (catches what pushes missed)",
    cycle_interval_s: Some(300.0),
    scope: Some(Scope::Node),
};

/// `[cluster_data_sync]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterDataSyncConfig {
    pub batch: usize,
    pub timeout_s: f64,
}

impl Default for ClusterDataSyncConfig {
    fn default() -> Self {
        ClusterDataSyncConfig {
            batch: 1000,
            timeout_s: 30.0,
        }
    }
}

pub struct ClusterDataSync {
    sync: GameSync,
    runs: AtomicU64,
    new_games: AtomicU64,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: ClusterDataSyncConfig = ctx.settings.section("cluster_data_sync")?;
    let s = SyncSettings::check("cluster_data_sync", cfg.timeout_s, cfg.batch)?;
    let sync = GameSync::from_context(ctx, s)?;
    if sync.this_excluded() {
        tracing::info!("this node is exclude_from_sync: cluster_data_sync pulls nothing");
    }
    Ok(Arc::new(ClusterDataSync {
        sync,
        runs: AtomicU64::new(0),
        new_games: AtomicU64::new(0),
    }))
}

impl ClusterDataSync {
    /// One pass over every peer. `Err` only when every peer failed.
    pub async fn pull_all(&self) -> anyhow::Result<()> {
        if self.sync.this_excluded() {
            return Ok(());
        }
        self.runs.fetch_add(1, Ordering::Relaxed);
        let peers = self.sync.peers();
        let mut failed = Vec::new();
        for peer in &peers {
            match self.sync.pull_from(peer, self.sync.configs()).await {
                Ok(o) => {
                    self.new_games.fetch_add(o.new, Ordering::Relaxed);
                }
                Err(e) => failed.push(format!("{}: {e}", peer.name)),
            }
        }
        if !peers.is_empty() && failed.len() == peers.len() {
            anyhow::bail!("every peer failed: {}", failed.join("; "));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handler for ClusterDataSync {
    async fn run_cycle(&self, _ctx: &Context) -> anyhow::Result<()> {
        self.pull_all().await
    }

    fn health_check(&self) -> HealthCheckResult {
        if self.sync.this_excluded() {
            return HealthCheckResult::running(
                "this node is exclude_from_sync in cluster.toml: it takes no data, nothing is pulled",
            )
            .detail("excluded", true);
        }
        let h =
            HealthCheckResult::running(format!("pulling from {} peers", self.sync.peers().len()))
                .detail("runs", self.runs.load(Ordering::Relaxed))
                .detail("new_games", self.new_games.load(Ordering::Relaxed));
        self.sync.health_details(h)
    }
}

#[cfg(test)]
mod tests;
