//! `auto_sync` (alias `sync_coordinator`): pushes this node's games to other nodes.
//!
//! Every cycle, and at once on NEW_GAMES_AVAILABLE from this node, the games of every
//! local store `data/games/{config}.db` after each target's push watermark go to
//! `fanout` targets chosen round-robin among the sync targets of cluster.toml (never this
//! node, never one with `exclude_from_sync`, and with `exclude_coordinator` never a
//! coordinator that does not also train). The local store holds the games this node
//! received too, so forwarding them is the gossip replication: a game made on A and
//! pushed to B reaches C from B. Each game crosses each link once (watermarks in
//! `run/sync/auto_sync.db`, advanced only after the peer acknowledged); a restart
//! resumes. An `exclude_from_sync` node may run it: it pushes, it never receives.
//!
//! `[auto_sync]`: `fanout` (2, at least 1), `exclude_coordinator` (true), `batch` (500
//! games per request, 1-2000), `timeout_s` (30), `bandwidth_bytes_per_s` (0 = unlimited:
//! all pushes of this daemon together, paced per request). A bad value exits 64 naming
//! the key.
//! Health: per peer the last success, games sent and the last error; DEGRADED when
//! every chosen target failed three cycles in a row (handler-base's error count).

use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_cluster::Role;
use ringrift_proto::{Event, EventType, wire::event::Payload};
use ringrift_transfer::Peer;
use ringrift_transfer::games::GameFilter;
use ringrift_transfer::sync::{GameSync, SyncSettings, names_node};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

pub const INFO: DaemonInfo = DaemonInfo {
    name: "auto_sync",
    about: "Push this node's new games to a round-robin fanout of sync targets (gossip replication)",
    cycle_interval_s: Some(60.0),
    scope: Some(Scope::Node),
};

/// `[auto_sync]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoSyncConfig {
    /// Targets pushed to per run.
    pub fanout: usize,
    /// Skip coordinators that do not also have the training role.
    pub exclude_coordinator: bool,
    pub batch: usize,
    pub timeout_s: f64,
    /// Bytes per second of all pushes together; 0 = unlimited.
    pub bandwidth_bytes_per_s: u64,
}

impl Default for AutoSyncConfig {
    fn default() -> Self {
        AutoSyncConfig {
            fanout: 2,
            exclude_coordinator: true,
            batch: 500,
            timeout_s: 30.0,
            bandwidth_bytes_per_s: 0,
        }
    }
}

pub struct AutoSync {
    cfg: AutoSyncConfig,
    sync: GameSync,
    /// Round-robin position among the candidates.
    cursor: AtomicUsize,
    /// One run at a time (the cycle and an event may both ask).
    running: tokio::sync::Mutex<()>,
    runs: AtomicU64,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: AutoSyncConfig = ctx.settings.section("auto_sync")?;
    handler_base::ensure_config!(
        cfg.fanout >= 1,
        "auto_sync.fanout = {} must be at least 1",
        cfg.fanout
    );
    let s = SyncSettings::check("auto_sync", cfg.timeout_s, cfg.batch)?;
    let sync = GameSync::from_context(ctx, s)?.with_bandwidth(cfg.bandwidth_bytes_per_s);
    Ok(Arc::new(AutoSync {
        cfg,
        sync,
        cursor: AtomicUsize::new(0),
        running: tokio::sync::Mutex::new(()),
        runs: AtomicU64::new(0),
    }))
}

impl AutoSync {
    /// The nodes this daemon may push to, in cluster.toml order.
    pub fn candidates(&self) -> Vec<Peer> {
        self.sync
            .targets()
            .into_iter()
            .filter(|p| {
                !(self.cfg.exclude_coordinator
                    && p.has_role(Role::Coordinator)
                    && !p.has_role(Role::Training))
            })
            .collect()
    }

    /// The next `fanout` candidates, round-robin.
    pub fn choose(&self) -> Vec<Peer> {
        let c = self.candidates();
        if c.is_empty() {
            return c;
        }
        let n = self.cfg.fanout.min(c.len());
        let start = self.cursor.fetch_add(n, Ordering::Relaxed) % c.len();
        (0..n).map(|i| c[(start + i) % c.len()].clone()).collect()
    }

    /// One run: push every local config to the chosen targets. `Err` only when every
    /// chosen target failed.
    pub async fn sync_now(&self, why: &str) -> anyhow::Result<()> {
        let _one = self.running.lock().await;
        self.runs.fetch_add(1, Ordering::Relaxed);
        let configs = self.sync.local_configs().await;
        if configs.is_empty() {
            return Ok(());
        }
        let chosen = self.choose();
        if chosen.is_empty() {
            tracing::debug!(why, "no sync target in cluster.toml");
            return Ok(());
        }
        let mut failed = Vec::new();
        for peer in &chosen {
            if let Err(e) = self
                .sync
                .push_to(peer, &configs, &GameFilter::default())
                .await
            {
                failed.push(format!("{}: {e}", peer.name));
            }
        }
        if failed.len() == chosen.len() {
            anyhow::bail!("every chosen target failed: {}", failed.join("; "));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handler for AutoSync {
    fn subscriptions(&self) -> Vec<EventType> {
        vec![EventType::NewGamesAvailable]
    }

    async fn run_cycle(&self, _ctx: &Context) -> anyhow::Result<()> {
        self.sync_now("cycle").await
    }

    /// NEW_GAMES_AVAILABLE from this node (its `node` or source names this node):
    /// push at once. Other nodes' games are theirs to push.
    async fn handle_event(&self, ctx: &Context, event: &Event) -> anyhow::Result<()> {
        let Payload::NewGamesAvailable(ng) = &event.payload else {
            return Ok(());
        };
        let ours = if ng.node.is_empty() {
            names_node(&event.source, &ctx.node)
        } else {
            names_node(&ng.node, &ctx.node)
        };
        if ours {
            self.sync_now("new games").await?;
        }
        Ok(())
    }

    fn health_check(&self) -> HealthCheckResult {
        let c = self.candidates();
        let msg = if c.is_empty() {
            "no sync target in cluster.toml: nothing to push to".to_owned()
        } else {
            format!(
                "pushing to {} of {} targets per run",
                self.cfg.fanout.min(c.len()),
                c.len()
            )
        };
        let h = HealthCheckResult::running(msg)
            .detail("runs", self.runs.load(Ordering::Relaxed))
            .detail(
                "targets",
                c.iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            );
        self.sync.health_details(h)
    }
}

#[cfg(test)]
mod tests;
