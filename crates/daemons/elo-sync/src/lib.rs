//! `elo_sync`: the Elo match history of every node converges.
//!
//! Each cycle (60 s), for every peer: its `data/unified_elo.db` as a consistent snapshot
//! (the data_server serves databases as `VACUUM INTO` copies), fetched with the transfer
//! engine (verified; quarantined on mismatch) into `run/elo_sync/<peer>.db`, then merged
//! with `EloStore::merge_from`: every match not known here is recorded (by match id,
//! so merging twice changes nothing), labels fill in. A peer whose snapshot has the
//! SHA-256 merged last time is skipped (remembered in `run/elo_sync/merged.json`).
//! ELO_UPDATED is not re-sent for merged matches (the node that played them did).
//!
//! `[elo_sync]`: `per_host` (2), `bandwidth_bytes_per_s` (0), `timeout_s` (30).

use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_store::elo::EloStore;
use ringrift_transfer::events::Transfer;
use ringrift_transfer::files::{Root, Wanted, manifest_under};
use ringrift_transfer::{Peer, Setup, TransferSettings};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "elo_sync",
    about: "merge Elo ratings and matches across nodes, every 60 s",
    cycle_interval_s: Some(60.0),
    scope: Some(Scope::Node),
};

/// `[elo_sync]` in ringrift.toml.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EloSyncConfig {
    #[serde(flatten)]
    pub transfer: TransferSettings,
}

const ELO_REL: &str = "unified_elo.db";

pub struct EloSync {
    setup: Setup,
    dir: PathBuf,
    /// Peer → SHA-256 of the snapshot merged last.
    merged: Mutex<BTreeMap<String, String>>,
    status: Mutex<Status>,
}

#[derive(Debug, Default)]
struct Status {
    matches_merged: u64,
    failures: BTreeMap<String, String>,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: EloSyncConfig = ctx.settings.section("elo_sync")?;
    let setup = Setup::new(ctx, "elo_sync", cfg.transfer)?;
    let dir = ringrift_store::paths::run_dir(&ctx.home).join("elo_sync");
    let merged = match std::fs::read(dir.join("merged.json")) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "run/elo_sync/merged.json unreadable; every peer is merged again (idempotent)");
            BTreeMap::new()
        }),
        Err(_) => BTreeMap::new(),
    };
    Ok(Arc::new(EloSync {
        setup,
        dir,
        merged: Mutex::new(merged),
        status: Mutex::new(Status::default()),
    }))
}

impl EloSync {
    /// Merges `peer`'s Elo database if it changed; returns the matches new here.
    pub async fn sync_peer(&self, ctx: &Context, peer: &Peer) -> anyhow::Result<usize> {
        let doc = manifest_under(self.setup.engine.client(), peer, Root::Data, ELO_REL).await?;
        let Some(entry) = doc.files.get(ELO_REL) else {
            return Ok(0);
        };
        let last = self
            .merged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer.name)
            .cloned();
        if last.as_deref() == Some(entry.sha256.as_str()) {
            return Ok(0);
        }
        let transfer = Transfer::new(&peer.name, &ctx.node);
        let t0 = Instant::now();
        ctx.publish(transfer.started("")).await?;
        let copy = self.dir.join(format!("{}.db", peer.name));
        let wanted = Wanted {
            root: Root::Data,
            path: ELO_REL.into(),
            sha256: entry.sha256.clone(),
            size: entry.size,
        };
        let result = async {
            let f = self.setup.engine.fetch(peer, &wanted, &copy).await?;
            let (local, c) = (ringrift_store::paths::elo_db(&ctx.home), copy.clone());
            let n = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
                let n = EloStore::open(&local)?.merge_from(&c)?;
                let _ = std::fs::remove_file(&c);
                Ok(n)
            })
            .await??;
            anyhow::Ok((n, f.downloaded))
        }
        .await;
        match result {
            Ok((n, bytes)) => {
                ctx.publish(transfer.completed("", 1, bytes, t0.elapsed()))
                    .await?;
                let snapshot = {
                    let mut m = self.merged.lock().unwrap_or_else(|p| p.into_inner());
                    m.insert(peer.name.clone(), entry.sha256.clone());
                    serde_json::to_vec(&*m)?
                };
                let path = self.dir.join("merged.json");
                tokio::task::spawn_blocking(move || {
                    ringrift_store::manifest::atomic_write(&path, &snapshot)
                })
                .await??;
                Ok(n)
            }
            Err(e) => {
                ctx.publish(transfer.failed("", &format!("{e:#}"), t0.elapsed()))
                    .await?;
                Err(e)
            }
        }
    }
}

#[async_trait::async_trait]
impl Handler for EloSync {
    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        let peers = self.setup.peers();
        let mut failed = 0;
        for peer in &peers {
            match self.sync_peer(ctx, peer).await {
                Ok(n) => {
                    let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
                    s.matches_merged += n as u64;
                    s.failures.remove(&peer.name);
                    if n > 0 {
                        tracing::info!(peer = %peer.name, matches = n, "Elo history merged");
                    }
                }
                Err(e) => {
                    failed += 1;
                    tracing::warn!(peer = %peer.name, error = %format!("{e:#}"), "Elo sync");
                    self.status
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .failures
                        .insert(peer.name.clone(), format!("{e:#}"));
                }
            }
        }
        anyhow::ensure!(
            failed == 0 || failed < peers.len(),
            "Elo sync failed with every peer ({failed})"
        );
        Ok(())
    }

    fn health_check(&self) -> HealthCheckResult {
        let s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let h = if s.failures.is_empty() {
            HealthCheckResult::running("merging peers' Elo history")
        } else {
            HealthCheckResult::degraded(format!(
                "Elo sync failing with: {}",
                s.failures.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        };
        h.detail("matches_merged", s.matches_merged)
            .detail("peers", self.setup.peers().len())
    }
}

#[cfg(test)]
mod tests;
