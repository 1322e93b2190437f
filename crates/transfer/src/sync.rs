//! What every game-sync daemon (auto_sync, ephemeral_sync, cluster_data_sync,
//! high_quality_sync, training_node_watcher) shares: the cluster, the data client with
//! the token, the daemon's own watermark file `run/sync/<daemon>.db`, DATA_SYNC_*
//! reporting, and per-peer statistics for health. The policy (whom, when, what) stays in
//! each daemon.
//!
//! Common settings of those daemons' sections, read with [`SyncSettings`]:
//! `timeout_s` (30: connect and between two reads of a body; a stalled peer fails, a
//! slow one does not) and `batch` (500: games per request, 1-2000). A bad value exits 64
//! naming `<daemon>.<key>`.

use crate::games::{
    self, GameFilter, Link, MAX_PAGE, Pacer, PullOutcome, PushOutcome, SyncEvents, Watermarks,
};
use crate::{DataClient, Peer, TransferError};
use handler_base::{ConfigError, Context, HealthCheckResult};
use ringrift_cluster::ClusterConfig;
use ringrift_store::{ConfigKey, paths};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// The settings every game-sync daemon has (in its own section).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyncSettings {
    pub timeout: Duration,
    pub batch: usize,
}

impl SyncSettings {
    /// Validates `timeout_s` and `batch` of section `daemon`.
    pub fn check(daemon: &str, timeout_s: f64, batch: usize) -> Result<SyncSettings, ConfigError> {
        if !(timeout_s.is_finite() && timeout_s > 0.0 && timeout_s <= 3600.0) {
            return Err(ConfigError::Invalid(format!(
                "{daemon}.timeout_s = {timeout_s} must be a number of seconds in (0, 3600]"
            )));
        }
        if !(1..=MAX_PAGE).contains(&batch) {
            return Err(ConfigError::Invalid(format!(
                "{daemon}.batch = {batch} must be 1-{MAX_PAGE} games per request"
            )));
        }
        Ok(SyncSettings {
            timeout: Duration::from_secs_f64(timeout_s),
            batch,
        })
    }
}

/// What one peer link did lately (health details).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerStats {
    /// Last run that succeeded (ms since the epoch).
    pub last_success_ms: Option<i64>,
    /// The error of the last run, if it failed.
    pub last_error: Option<String>,
    pub games_sent: u64,
    pub games_received: u64,
    pub failures_in_row: u32,
}

/// The shared state of one game-sync daemon.
pub struct GameSync {
    pub home: PathBuf,
    /// This node's name.
    pub node: String,
    pub cluster: ClusterConfig,
    pub client: DataClient,
    pub watermarks: Watermarks,
    pub events: SyncEvents,
    pub batch: usize,
    configs: Vec<ConfigKey>,
    stats: Mutex<BTreeMap<String, PeerStats>>,
    pacer: Option<Pacer>,
}

impl GameSync {
    /// Loads the cluster (an invalid cluster.toml is a `ConfigError`), the token, and
    /// opens `run/sync/<ctx.name>.db`. The configs synced are `--configs` when given,
    /// else all twelve.
    pub fn from_context(ctx: &Context, s: SyncSettings) -> Result<GameSync, TransferError> {
        let (cluster, client) = crate::setup::connect(ctx, ctx.name, s.timeout.as_secs_f64())?;
        let watermarks = Watermarks::for_daemon(&ctx.home, ctx.name)?;
        let configs = if ctx.configs.is_empty() {
            ConfigKey::all()
        } else {
            ctx.configs
                .iter()
                .map(|c| {
                    c.parse::<ConfigKey>()
                        .map_err(|e| ConfigError::Invalid(format!("--configs {c:?}: {e}")))
                })
                .collect::<Result<_, _>>()?
        };
        Ok(GameSync {
            home: ctx.home.clone(),
            node: ctx.node.clone(),
            cluster,
            client,
            watermarks,
            events: SyncEvents::new(ctx),
            batch: s.batch,
            configs,
            stats: Mutex::new(BTreeMap::new()),
            pacer: None,
        })
    }

    /// Limits this daemon's pushes to `bytes_per_s` in all (0 = unlimited).
    pub fn with_bandwidth(mut self, bytes_per_s: u64) -> GameSync {
        self.pacer = Pacer::new(bytes_per_s);
        self
    }

    /// Every other node.
    pub fn peers(&self) -> Vec<Peer> {
        crate::peers::peers(&self.cluster)
    }

    /// The other nodes data may be sent to (not `exclude_from_sync`).
    pub fn targets(&self) -> Vec<Peer> {
        crate::peers::targets(&self.cluster)
    }

    /// Whether this node is `exclude_from_sync` (it takes no data).
    pub fn this_excluded(&self) -> bool {
        self.cluster
            .node(&self.node)
            .is_some_and(|n| n.exclude_from_sync)
    }

    pub fn configs(&self) -> &[ConfigKey] {
        &self.configs
    }

    /// The synced configs that have a local store (`data/games/{config}.db`).
    pub async fn local_configs(&self) -> Vec<ConfigKey> {
        let home = self.home.clone();
        let configs = self.configs.clone();
        tokio::task::spawn_blocking(move || {
            configs
                .into_iter()
                .filter(|c| paths::game_db(&home, *c).exists())
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    fn link<'a>(&'a self, peer: &'a Peer, config: ConfigKey, filter: &'a GameFilter) -> Link<'a> {
        Link {
            home: &self.home,
            client: &self.client,
            peer,
            config,
            watermarks: &self.watermarks,
            limit: self.batch,
            filter,
            events: Some(&self.events),
            pacer: self.pacer.as_ref(),
        }
    }

    fn record(&self, peer: &str, r: Result<(u64, u64), &TransferError>) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let s = stats.entry(peer.to_owned()).or_default();
        match r {
            Ok((sent, received)) => {
                s.last_success_ms = Some(ringrift_store::now_ms());
                s.last_error = None;
                s.failures_in_row = 0;
                s.games_sent += sent;
                s.games_received += received;
            }
            Err(e) => {
                s.last_error = Some(e.to_string());
                s.failures_in_row += 1;
            }
        }
    }

    /// Pushes this node's games of `configs` (after each link's watermark, passing
    /// `filter`) to `peer`, config by config; stops at the first failure (the peer is
    /// likely down: the other configs wait for the next run). Records the peer's stats.
    pub async fn push_to(
        &self,
        peer: &Peer,
        configs: &[ConfigKey],
        filter: &GameFilter,
    ) -> Result<PushOutcome, TransferError> {
        let mut total = PushOutcome::default();
        for &config in configs {
            match games::push_new(self.link(peer, config, filter)).await {
                Ok(o) => {
                    total.sent += o.sent;
                    total.new += o.new;
                    total.bytes += o.bytes;
                }
                Err(e) => {
                    self.record(&peer.name, Err(&e));
                    tracing::warn!(peer = %peer.name, %config, error = %e, "push failed");
                    return Err(e);
                }
            }
        }
        self.record(&peer.name, Ok((total.sent, 0)));
        if total.sent > 0 {
            tracing::info!(peer = %peer.name, sent = total.sent, new = total.new, bytes = total.bytes, "games pushed");
        }
        Ok(total)
    }

    /// Pulls `peer`'s games of `configs` after each link's pull watermark into this
    /// node's stores; stops at the first failure. Records the peer's stats.
    pub async fn pull_from(
        &self,
        peer: &Peer,
        configs: &[ConfigKey],
    ) -> Result<PullOutcome, TransferError> {
        let filter = GameFilter::default();
        let mut total = PullOutcome::default();
        for &config in configs {
            match games::pull_new(self.link(peer, config, &filter)).await {
                Ok(o) => {
                    total.received += o.received;
                    total.new += o.new;
                    total.bytes += o.bytes;
                }
                Err(e) => {
                    self.record(&peer.name, Err(&e));
                    tracing::warn!(peer = %peer.name, %config, error = %e, "pull failed");
                    return Err(e);
                }
            }
        }
        self.record(&peer.name, Ok((0, total.received)));
        if total.new > 0 {
            tracing::info!(peer = %peer.name, received = total.received, new = total.new, "games pulled");
        }
        Ok(total)
    }

    /// The per-peer statistics so far.
    pub fn stats(&self) -> BTreeMap<String, PeerStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `h` with one detail per peer: `peer.<name>` = last success, games moved, last
    /// error.
    pub fn health_details(&self, mut h: HealthCheckResult) -> HealthCheckResult {
        for (name, s) in self.stats() {
            let ago = s
                .last_success_ms
                .map(|t| format!("{:.0}s ago", (ringrift_store::now_ms() - t) as f64 / 1000.0))
                .unwrap_or_else(|| "never".into());
            let mut v = format!(
                "last success {ago}, sent {}, received {}",
                s.games_sent, s.games_received
            );
            if let Some(e) = &s.last_error {
                v.push_str(&format!(", last error: {e}"));
            }
            h = h.detail(format!("peer.{name}"), v);
        }
        h
    }
}

/// Whether `who` (a node name or a `daemon@node` source) names `node`.
pub fn names_node(who: &str, node: &str) -> bool {
    who == node || who.rsplit_once('@').is_some_and(|(_, n)| n == node)
}

/// The node named by `who` (`daemon@node` → `node`; a bare name as is).
pub fn node_of(who: &str) -> &str {
    who.rsplit_once('@').map_or(who, |(_, n)| n)
}

/// Games of this node not yet on any of some peers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unsynced {
    pub games: u64,
    /// `created_at` (ms) of the first of them in ingest order.
    pub oldest_ms: Option<i64>,
}

impl GameSync {
    /// Local games of `configs` after the highest push watermark over `peers`: games
    /// that no one of them has acknowledged (each link carries a prefix of the store, so
    /// a game at or below some peer's watermark is on that peer).
    pub async fn unsynced(
        &self,
        peers: &[Peer],
        configs: &[ConfigKey],
    ) -> Result<Unsynced, ringrift_store::StoreError> {
        use ringrift_store::OffRuntime;
        let mut out = Unsynced::default();
        for &config in configs {
            let names: Vec<String> = peers.iter().map(|p| p.name.clone()).collect();
            let safe = self
                .watermarks
                .off_runtime(move |w| {
                    let mut m = 0;
                    for n in &names {
                        m = m.max(w.get(n, config, games::Direction::Push)?);
                    }
                    Ok(m)
                })
                .await?;
            let path = paths::game_db(&self.home, config);
            let (n, first) = tokio::task::spawn_blocking(move || {
                if !path.exists() {
                    return Ok((0, None));
                }
                let s = ringrift_store::games::GameStore::open(&path)?;
                let safe = if s.max_seq()? < safe { 0 } else { safe };
                Ok::<_, ringrift_store::StoreError>((
                    s.count_since(safe)?,
                    s.games_since(safe, 1)?.first().map(|g| g.game.created_at),
                ))
            })
            .await
            .map_err(|e| ringrift_store::StoreError::Join(e.to_string()))??;
            out.games += n;
            out.oldest_ms = match (out.oldest_ms, first) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(out)
    }
}
