//! `model_sync`: every node's copy of each config's canonical model follows the
//! promotions made anywhere in the cluster.
//!
//! On MODEL_PROMOTED from another node it fetches that node's
//! `models/canonical_{config}.{rrm,onnx}` through the transfer engine (file SHA-256 from the
//! peer's manifest, verified; resumable; quarantined on mismatch), checks the model
//! header's payload SHA-256 is the one the event promoted, and installs it with
//! `ringrift_store::models::promote` (backup of the old one, atomic swap, sidecar,
//! `ringrift_best_{config}` symlink by atomic rename); then MODEL_DISTRIBUTED names this
//! node. Each cycle it catches up: a peer whose canonical model of a config has a
//! higher generation than ours (or we have none) is the source. The download lands in
//! `models/.incoming/` (hidden: never served, never taken for a model).
//!
//! `[model_sync]`: `per_host` (2), `bandwidth_bytes_per_s` (0 = unlimited),
//! `timeout_s` (30). Bad values exit 64 naming the key.

use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_proto::Event;
use ringrift_proto::wire::{self, EventType, event::Payload};
use ringrift_store::{ConfigKey, models};
use ringrift_transfer::events::Transfer;
use ringrift_transfer::files::{ManifestDoc, ManifestEntry, Root, Wanted, manifest};
use ringrift_transfer::{Peer, Setup, TransferSettings, node_of};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "model_sync",
    about: "pull promoted models on MODEL_PROMOTED, verified, installed atomically",
};

/// `[model_sync]` in ringrift.toml.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSyncConfig {
    #[serde(flatten)]
    pub transfer: TransferSettings,
}

pub struct ModelSync {
    setup: Setup,
    status: Mutex<Status>,
}

#[derive(Debug, Default)]
struct Status {
    installed: u64,
    failed: u64,
    last: String,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: ModelSyncConfig = ctx.settings.section("model_sync")?;
    let setup = Setup::new(ctx, "model_sync", cfg.transfer)?;
    Ok(Arc::new(ModelSync {
        setup,
        status: Mutex::new(Status::default()),
    }))
}

/// What one attempt to follow a peer's canonical model did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Installed; the new canonical model's payload SHA-256.
    Installed(String),
    /// We already have that file.
    Current,
    /// The peer's canonical model is no longer the one asked for (a later promotion
    /// will bring the newer one), or it has none.
    NotThere,
}

/// The manifest line of `config`'s canonical model in a peer's manifest, of either
/// format, with its name.
fn canonical_entry(doc: &ManifestDoc, config: ConfigKey) -> Option<(String, ManifestEntry)> {
    models::ModelFormat::ALL.into_iter().find_map(|f| {
        let name = format!("canonical_{config}.{}", f.ext());
        doc.files.get(&name).map(|e| (name, e.clone()))
    })
}

impl ModelSync {
    fn note(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Makes our canonical model of `config` the one `peer` has (its manifest read now),
    /// if its payload is `expect` (any when `None`).
    pub async fn follow(
        &self,
        ctx: &Context,
        peer: &Peer,
        config: ConfigKey,
        expect: Option<&str>,
    ) -> anyhow::Result<Outcome> {
        let doc = manifest(self.setup.engine.client(), peer, Root::Models).await?;
        let Some((name, entry)) = canonical_entry(&doc, config) else {
            return Ok(Outcome::NotThere);
        };
        self.install(ctx, peer, config, name, entry, expect).await
    }

    /// Installs `peer`'s canonical model of `config`, the file `name` (of either format)
    /// whose manifest line is `entry`.
    async fn install(
        &self,
        ctx: &Context,
        peer: &Peer,
        config: ConfigKey,
        name: String,
        entry: ManifestEntry,
        expect: Option<&str>,
    ) -> anyhow::Result<Outcome> {
        let home = ctx.home.clone();
        let local = tokio::task::spawn_blocking(move || models::canonical(&home, config)).await??;
        if local
            .as_ref()
            .is_some_and(|c| c.file_sha256 == entry.sha256)
        {
            return Ok(Outcome::Current);
        }
        let transfer = Transfer::new(&peer.name, &ctx.node);
        let key = config.to_string();
        let t0 = Instant::now();
        ctx.publish(transfer.started(&key)).await?;
        let incoming = ringrift_store::paths::models_dir(&ctx.home)
            .join(".incoming")
            .join(format!(
                "canonical_{config}.{}.{}",
                &entry.sha256[..16],
                models::ModelFormat::of(&name).unwrap_or_default().ext()
            ));
        let wanted = Wanted {
            root: Root::Models,
            path: name,
            sha256: entry.sha256.clone(),
            size: entry.size,
        };
        let result = async {
            let fetched = self.setup.engine.fetch(peer, &wanted, &incoming).await?;
            let (home, inc, name) = (
                ctx.home.clone(),
                incoming.clone(),
                format!("from {}", peer.name),
            );
            let expect = expect.map(str::to_owned);
            let previous = local.map(|c| c.sha256);
            let installed =
                tokio::task::spawn_blocking(move || -> anyhow::Result<Option<String>> {
                    let header = models::identify_file(&inc)?;
                    let outcome = if expect.as_ref().is_some_and(|e| *e != header.payload_sha256) {
                        None
                    } else {
                        models::promote(
                            &home,
                            config,
                            &inc,
                            &name,
                            &header.payload_sha256,
                            previous.as_deref(),
                            None,
                            // A copy of a promotion fenced on the node that made it.
                            models::Fence::Replica,
                        )?;
                        Some(header.payload_sha256)
                    };
                    let _ = std::fs::remove_file(&inc);
                    Ok(outcome)
                })
                .await??;
            anyhow::Ok((installed, fetched.downloaded))
        }
        .await;
        match result {
            Ok((Some(sha), bytes)) => {
                ctx.publish(transfer.completed(&key, 1, bytes, t0.elapsed()))
                    .await?;
                let canonical = models::canonical_file(&ctx.home, config).unwrap_or_default();
                let ev = Event::new(Payload::ModelDistributed(wire::ModelDistributed {
                    model_path: canonical.display().to_string(),
                    model_sha256: sha.clone(),
                    nodes: vec![ctx.node.clone()],
                }))
                .with_config(key.clone())
                .with_id(format!("model_distributed:{}:{key}:{sha}", ctx.node));
                ctx.publish(ev).await?;
                tracing::info!(config = %key, peer = %peer.name, sha256 = %sha, "canonical model installed");
                self.note(|s| {
                    s.installed += 1;
                    s.last = format!("{key} {} from {}", &sha[..12.min(sha.len())], peer.name);
                });
                Ok(Outcome::Installed(sha))
            }
            Ok((None, bytes)) => {
                ctx.publish(transfer.completed(&key, 0, bytes, t0.elapsed()))
                    .await?;
                Ok(Outcome::NotThere)
            }
            Err(e) => {
                ctx.publish(transfer.failed(&key, &format!("{e:#}"), t0.elapsed()))
                    .await?;
                self.note(|s| s.failed += 1);
                Err(e)
            }
        }
    }

    /// Catch-up: for each config where a peer's canonical model has a higher generation
    /// than ours, follow the peer with the highest.
    async fn catch_up(&self, ctx: &Context) -> anyhow::Result<()> {
        let peers = self.setup.peers();
        // The manifest lines read here are the ones installed from: one request per peer.
        let mut best: std::collections::BTreeMap<ConfigKey, (u32, Peer, String, ManifestEntry)> =
            Default::default();
        let mut errors = Vec::new();
        for peer in &peers {
            match manifest(self.setup.engine.client(), peer, Root::Models).await {
                Ok(doc) => {
                    for config in ConfigKey::all() {
                        if let Some((name, e)) = canonical_entry(&doc, config)
                            && let Some(g) = e.generation
                            && best.get(&config).is_none_or(|(b, _, _, _)| g > *b)
                        {
                            best.insert(config, (g, peer.clone(), name, e));
                        }
                    }
                }
                Err(e) => errors.push(format!("{}: {e}", peer.name)),
            }
        }
        for (config, (generation, peer, name, entry)) in best {
            let home = ctx.home.clone();
            let ours =
                tokio::task::spawn_blocking(move || models::canonical(&home, config)).await??;
            if ours.is_some_and(|c| c.generation >= generation) {
                continue;
            }
            if let Err(e) = self.install(ctx, &peer, config, name, entry, None).await {
                errors.push(format!("{config} from {}: {e:#}", peer.name));
            }
        }
        if !errors.is_empty() && errors.len() >= peers.len().max(1) {
            anyhow::bail!("model catch-up: {}", errors.join("; "));
        }
        for e in errors {
            tracing::warn!(error = %e, "model catch-up");
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handler for ModelSync {
    fn subscriptions(&self) -> Vec<EventType> {
        vec![EventType::ModelPromoted]
    }

    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        self.catch_up(ctx).await
    }

    async fn handle_event(&self, ctx: &Context, ev: &Event) -> anyhow::Result<()> {
        let Payload::ModelPromoted(p) = &ev.payload else {
            return Ok(());
        };
        let Some(node) = node_of(&ev.source) else {
            tracing::warn!(source = %ev.source, "MODEL_PROMOTED without a node in its source; ignored");
            return Ok(());
        };
        if node == ctx.node {
            return Ok(());
        }
        let config: ConfigKey = match ev.config_key.parse() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(config = %ev.config_key, error = %e, "MODEL_PROMOTED with a bad config key; ignored");
                return Ok(());
            }
        };
        let Some(peer) = self.setup.peer(node) else {
            tracing::warn!(%node, "MODEL_PROMOTED by a node not in cluster.toml; ignored");
            return Ok(());
        };
        // An error nacks the event: it comes back (and the cycle's catch-up retries too).
        self.follow(ctx, &peer, config, Some(&p.model_sha256))
            .await?;
        Ok(())
    }

    fn health_check(&self) -> HealthCheckResult {
        let s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        HealthCheckResult::running(if s.last.is_empty() {
            "following promotions".to_owned()
        } else {
            format!("last installed: {}", s.last)
        })
        .detail("installed", s.installed)
        .detail("failed", s.failed)
        .detail("peers", self.setup.peers().len())
    }
}

#[cfg(test)]
mod tests;
