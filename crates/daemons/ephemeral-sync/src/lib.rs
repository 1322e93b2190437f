//! `ephemeral_sync`: on a spot instance, games must leave the node before it dies.
//!
//! Every cycle (5 s) this node's games of every local store after the push watermark go
//! to durable targets: nodes of cluster.toml that are neither ephemeral nor
//! `exclude_from_sync`, in cluster.toml order, until `min_acks` of them acknowledged
//! (the first durable node takes everything while it answers; when it does not, the next
//! one does). The write-ahead list of unsynced games is the push watermark per target in
//! `run/sync/ephemeral_sync.db`, written after each acknowledged request: after kill -9
//! the next start pushes exactly what no durable node acknowledged. On stop (SIGTERM) a
//! last push runs, bounded by `final_sync_s` (which must be below the lifecycle
//! `stop_grace_s`). A dying node thus loses at most the games of one interval.
//!
//! `[ephemeral_sync]`: `min_acks` (1), `final_sync_s` (5), `batch` (500), `timeout_s`
//! (10). A bad value exits 64 naming the key. Health: unsynced games (after the highest
//! watermark over the durable targets) and the age of the oldest; DEGRADED after three
//! failed runs (no durable node acknowledged), with per-peer details.

use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_cluster::Role;
use ringrift_transfer::Peer;
use ringrift_transfer::games::GameFilter;
use ringrift_transfer::sync::{GameSync, SyncSettings, Unsynced};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "ephemeral_sync",
    about: "Spot instances: push games to durable nodes every 5 s and on SIGTERM",
    cycle_interval_s: Some(5.0),
    scope: Some(Scope::Node),
};

/// `[ephemeral_sync]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EphemeralSyncConfig {
    /// Durable nodes that must acknowledge each run.
    pub min_acks: usize,
    /// Bound of the last push on stop, seconds.
    pub final_sync_s: f64,
    pub batch: usize,
    pub timeout_s: f64,
}

impl Default for EphemeralSyncConfig {
    fn default() -> Self {
        EphemeralSyncConfig {
            min_acks: 1,
            final_sync_s: 5.0,
            batch: 500,
            timeout_s: 10.0,
        }
    }
}

pub struct EphemeralSync {
    cfg: EphemeralSyncConfig,
    final_sync: Duration,
    sync: GameSync,
    running: tokio::sync::Mutex<()>,
    unsynced: Mutex<Option<Unsynced>>,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: EphemeralSyncConfig = ctx.settings.section("ephemeral_sync")?;
    handler_base::ensure_config!(
        cfg.min_acks >= 1,
        "ephemeral_sync.min_acks = {} must be at least 1",
        cfg.min_acks
    );
    let grace = ctx.lifecycle.stop_grace.as_secs_f64();
    handler_base::ensure_config!(
        cfg.final_sync_s.is_finite() && cfg.final_sync_s > 0.0 && cfg.final_sync_s < grace,
        "ephemeral_sync.final_sync_s = {} must be above 0 and below stop_grace_s ({grace})",
        cfg.final_sync_s
    );
    let s = SyncSettings::check("ephemeral_sync", cfg.timeout_s, cfg.batch)?;
    let sync = GameSync::from_context(ctx, s)?;
    Ok(Arc::new(EphemeralSync {
        final_sync: Duration::from_secs_f64(cfg.final_sync_s),
        cfg,
        sync,
        running: tokio::sync::Mutex::new(()),
        unsynced: Mutex::new(None),
    }))
}

impl EphemeralSync {
    /// Durable targets: neither ephemeral nor excluded, in cluster.toml order.
    pub fn durable(&self) -> Vec<Peer> {
        self.sync
            .targets()
            .into_iter()
            .filter(|p| !p.ephemeral && !p.has_role(Role::Ephemeral))
            .collect()
    }

    /// One run: push to durable targets until `min_acks` acknowledged everything.
    pub async fn push(&self) -> anyhow::Result<()> {
        let _one = self.running.lock().await;
        let durable = self.durable();
        let configs = self.sync.local_configs().await;
        let r = async {
            if configs.is_empty() {
                return Ok(());
            }
            anyhow::ensure!(
                !durable.is_empty(),
                "no durable node in cluster.toml (all ephemeral or excluded): games are not safe"
            );
            let need = self.cfg.min_acks.min(durable.len());
            let mut acks = 0;
            let mut errors = Vec::new();
            for peer in &durable {
                match self
                    .sync
                    .push_to(peer, &configs, &GameFilter::default())
                    .await
                {
                    Ok(_) => acks += 1,
                    Err(e) => errors.push(format!("{}: {e}", peer.name)),
                }
                if acks >= need {
                    return Ok(());
                }
            }
            anyhow::bail!(
                "{acks} of {need} durable nodes acknowledged: {}",
                errors.join("; ")
            )
        }
        .await;
        match self.sync.unsynced(&durable, &configs).await {
            Ok(u) => *self.unsynced.lock().unwrap_or_else(|p| p.into_inner()) = Some(u),
            Err(e) => tracing::warn!(error = %e, "cannot count unsynced games"),
        }
        r
    }
}

#[async_trait::async_trait]
impl Handler for EphemeralSync {
    async fn run_cycle(&self, _ctx: &Context) -> anyhow::Result<()> {
        self.push().await
    }

    /// The last push, bounded by `final_sync_s`.
    async fn on_stop(&self, _ctx: &Context) {
        match tokio::time::timeout(self.final_sync, self.push()).await {
            Ok(Ok(())) => tracing::info!("final sync done"),
            Ok(Err(e)) => tracing::warn!(error = format!("{e:#}"), "final sync failed"),
            Err(_) => tracing::warn!(
                limit_s = self.final_sync.as_secs_f64(),
                "final sync cut short; the rest goes on the next start"
            ),
        }
        if let Some(u) = *self.unsynced.lock().unwrap_or_else(|p| p.into_inner()) {
            tracing::info!(unsynced = u.games, "games on no durable node at stop");
        }
    }

    fn health_check(&self) -> HealthCheckResult {
        let u = *self.unsynced.lock().unwrap_or_else(|p| p.into_inner());
        let durable = self.durable();
        let h = match u {
            None => HealthCheckResult::running("no run yet"),
            Some(u) => {
                let age = u
                    .oldest_ms
                    .map(|t| (ringrift_store::now_ms() - t).max(0) as f64 / 1000.0);
                HealthCheckResult::running(format!(
                    "{} games on no durable node{}",
                    u.games,
                    age.map(|a| format!(", oldest made {a:.0}s ago"))
                        .unwrap_or_default()
                ))
                .detail("unsynced_games", u.games)
                .detail(
                    "oldest_unsynced_age_s",
                    age.map(|a| format!("{a:.0}")).unwrap_or_else(|| "-".into()),
                )
            }
        };
        let h = h.detail(
            "durable_targets",
            durable
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
        );
        self.sync.health_details(h)
    }
}

#[cfg(test)]
mod tests;
