//! `gossip_sync`: data discovery. Every cycle (60 s) it asks every node of cluster.toml,
//! this one included when its data_server runs (`run/data_server.addr`),
//! for `GET /manifest?root=data`, `GET /manifest?root=models` and `GET /games/summary`,
//! all at once, and writes the cluster's data view to `data/gossip/view.json` atomically
//! (`ringrift_transfer::games::GossipView`: per node when last seen, the last error,
//! file counts and bytes, and game counts per batch = config × source node × hour).
//! A node that does not answer keeps its last known figures with its error; nodes no
//! longer in cluster.toml are dropped. Readers (replication_monitor, the CLI) load it
//! with `GossipView::load(home)`.
//!
//! `[gossip_sync]`: `timeout_s` (10, per request). A bad value exits 64 naming the key.
//! Health: nodes answering of all; a cycle fails (DEGRADED after three) when none did.

use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_cluster::ClusterConfig;
use ringrift_transfer::games::{self, GossipView};
use ringrift_transfer::{DataClient, Peer};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub const INFO: DaemonInfo = DaemonInfo {
    name: "gossip_sync",
    about: "Gossip data discovery: every node's manifests and game summary in data/gossip/view.json",
    cycle_interval_s: Some(60.0),
    scope: Some(Scope::Node),
};

/// `[gossip_sync]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GossipSyncConfig {
    pub timeout_s: f64,
}

impl Default for GossipSyncConfig {
    fn default() -> Self {
        GossipSyncConfig { timeout_s: 10.0 }
    }
}

pub struct GossipSync {
    home: PathBuf,
    node: String,
    cluster: ClusterConfig,
    client: DataClient,
    view: Mutex<GossipView>,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: GossipSyncConfig = ctx.settings.section("gossip_sync")?;
    let (cluster, client) = ringrift_transfer::setup::connect(ctx, "gossip_sync", cfg.timeout_s)?;
    // The last view, so "last seen" survives a restart; an unreadable one starts afresh.
    let view = GossipView::load(&ctx.home).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "gossip view unreadable; starting a new one");
        GossipView::default()
    });
    Ok(Arc::new(GossipSync {
        home: ctx.home.clone(),
        node: ctx.node.clone(),
        cluster,
        client,
        view: Mutex::new(view),
    }))
}

impl GossipSync {
    /// Every node to ask: this one when its data server runs (`run/data_server.addr`;
    /// a profile without data_server has nothing to serve) and the peers.
    async fn nodes(&self) -> Vec<Peer> {
        let home = self.home.clone();
        let own =
            tokio::task::spawn_blocking(move || handler_base::read_addr_file(&home, "data_server"))
                .await
                .ok()
                .flatten();
        let mut out: Vec<Peer> = own
            .map(|a| Peer::at(&self.node, &format!("http://{a}")))
            .into_iter()
            .collect();
        out.extend(ringrift_transfer::peers::peers(&self.cluster));
        out
    }

    /// One round: ask every node, update and write the view. Returns how many answered.
    pub async fn round(&self) -> anyhow::Result<(usize, usize)> {
        let nodes = self.nodes().await;
        let answers =
            futures_util::future::join_all(nodes.iter().map(|p| games::node_view(&self.client, p)))
                .await;
        let now = ringrift_store::now_ms();
        let mut ok = 0;
        let view = {
            let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
            v.nodes
                .retain(|name, _| nodes.iter().any(|p| &p.name == name));
            for (peer, answer) in nodes.iter().zip(answers) {
                match answer {
                    Ok(nv) => {
                        ok += 1;
                        v.nodes.insert(peer.name.clone(), nv);
                    }
                    Err(e) => {
                        tracing::debug!(node = %peer.name, error = %e, "no gossip answer");
                        v.nodes.entry(peer.name.clone()).or_default().error = Some(e.to_string());
                    }
                }
            }
            v.updated_ms = now;
            v.clone()
        };
        let home = self.home.clone();
        tokio::task::spawn_blocking(move || view.save(&home)).await??;
        anyhow::ensure!(
            nodes.is_empty() || ok > 0,
            "no node answered (of {})",
            nodes.len()
        );
        Ok((ok, nodes.len()))
    }
}

#[async_trait::async_trait]
impl Handler for GossipSync {
    async fn run_cycle(&self, _ctx: &Context) -> anyhow::Result<()> {
        self.round().await.map(|_| ())
    }

    fn health_check(&self) -> HealthCheckResult {
        let v = self.view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let answering = v
            .nodes
            .values()
            .filter(|n| n.error.is_none() && n.seen_ms.is_some())
            .count();
        let mut h = HealthCheckResult::running(format!(
            "{answering} of {} nodes answered the last round",
            v.nodes.len()
        ));
        let now = ringrift_store::now_ms();
        for (name, n) in &v.nodes {
            let seen = n
                .seen_ms
                .map(|t| format!("seen {:.0}s ago", (now - t).max(0) as f64 / 1000.0))
                .unwrap_or_else(|| "never seen".into());
            let games: u64 = n.batches.iter().map(|b| b.count).sum();
            let mut d = format!(
                "{seen}, {} data files ({} bytes), {} model files, {games} games",
                n.data_files, n.data_bytes, n.model_files
            );
            if let Some(e) = &n.error {
                d.push_str(&format!(", last error: {e}"));
            }
            h = h.detail(format!("node.{name}"), d);
        }
        h
    }
}

#[cfg(test)]
mod tests;
