//! `model_sync`: every node's copy of each config's canonical model follows the
//! promotions made anywhere in the cluster.
//!
//! On MODEL_PROMOTED from another node it fetches that node's
//! `models/canonical_{config}.{rrm,onnx}` through the transfer engine (file SHA-256 from the
//! peer's manifest, verified; resumable; quarantined on mismatch), checks the model
//! header's payload SHA-256 is the one the event promoted, and installs it with
//! `ringrift_store::models::promote` (backup of the old one, atomic swap, sidecar,
//! `ringrift_best_{config}` symlink by atomic rename); then MODEL_DISTRIBUTED names this
//! node. Each cycle it catches up: a durable peer (all asked at once; an ephemeral node
//! runs no data_server) whose canonical model of a config has a higher generation than
//! ours (or we have none) is the source. The download lands in
//! `models/.incoming/` (hidden: never served, never taken for a model).
//!
//! The copy carries the fence of the promotion it copies: the peer's sidecar
//! (`canonical_{config}.json`, small, fetched first) names the payload and the leader's
//! fencing token that wrote it, and the install is `Fence::Leader(that token)`. So a
//! promotion by a deposed leader (a token lower than the one this home has seen) is
//! refused before its model is downloaded (`fenced` in health, the event acked: it will
//! never fit), and a newer leader's token reaches every home, the deposed leader's too,
//! whose own stale swap its store then refuses. A peer sidecar without a token (0:
//! written before fencing) installs as `Fence::Replica`; one naming another payload (the
//! manifest read in the middle of a promotion) installs nothing until the next try.
//!
//! `[model_sync]`: `per_host` (2), `bandwidth_bytes_per_s` (0 = unlimited),
//! `timeout_s` (30). Bad values exit 64 naming the key.

use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_proto::Event;
use ringrift_proto::wire::{self, EventType, event::Payload};
use ringrift_store::{ConfigKey, models};
use ringrift_transfer::events::Transfer;
use ringrift_transfer::files::{ManifestDoc, ManifestEntry, Root, Wanted, manifest};
use ringrift_transfer::model_fetch::{fetch_model, incoming_dir};
use ringrift_transfer::{Peer, Setup, TransferSettings, node_of};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "model_sync",
    about: "pull promoted models on MODEL_PROMOTED, verified, installed atomically",
    cycle_interval_s: Some(60.0),
    scope: Some(Scope::Node),
};

/// `[model_sync]` in ringrift.toml.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSyncConfig {
    #[serde(flatten)]
    pub transfer: TransferSettings,
}

/// The peers model_sync follows: the durable ones. An ephemeral node runs no data_server
/// in its shipped profile (asking it failed every cycle) and a canonical model is promoted
/// on a coordinator, never first on a spot node.
fn sources(setup: &Setup) -> Vec<Peer> {
    setup.peers().into_iter().filter(|p| !p.ephemeral).collect()
}

pub struct ModelSync {
    setup: Setup,
    status: Mutex<Status>,
}

#[derive(Debug, Default)]
struct Status {
    installed: u64,
    failed: u64,
    /// Copies refused for a stale fencing token.
    fenced: u64,
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
    /// The peer's canonical model was written with fencing token `token`, lower than
    /// the `seen` this home's canonical model has: a deposed leader's; not installed.
    Fenced { token: u64, seen: u64 },
    /// The peer's canonical model is generation `theirs`, not newer than our `ours`, and
    /// carries no newer leader's token: not installed.
    NotNewer { theirs: u32, ours: u32 },
}

/// What an install did with the downloaded file.
enum Installed {
    Yes(String),
    /// Not the payload asked for, or its sidecar named another one.
    No,
    /// The store refused the copy's token (token, highest seen).
    Fenced(u64, u64),
}

/// A peer's canonical model of a config as its manifest lists it: the model file (of
/// either format) and its sidecar.
#[derive(Debug, Clone)]
struct Source {
    name: String,
    entry: ManifestEntry,
    sidecar: Option<ManifestEntry>,
}

/// The manifest lines of `config`'s canonical model in a peer's manifest.
fn canonical_entry(doc: &ManifestDoc, config: ConfigKey) -> Option<Source> {
    models::ModelFormat::ALL.into_iter().find_map(|f| {
        let name = format!("canonical_{config}.{}", f.ext());
        doc.files.get(&name).map(|e| Source {
            name: name.clone(),
            entry: e.clone(),
            sidecar: doc.files.get(&format!("canonical_{config}.json")).cloned(),
        })
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
        let Some(source) = canonical_entry(&doc, config) else {
            return Ok(Outcome::NotThere);
        };
        self.install(ctx, peer, config, source, expect).await
    }

    /// The payload SHA-256 and fencing token `peer`'s sidecar of `config` records.
    async fn source_fence(
        &self,
        ctx: &Context,
        peer: &Peer,
        config: ConfigKey,
        sidecar: &ManifestEntry,
    ) -> anyhow::Result<(String, u64)> {
        let incoming = incoming_dir(&ctx.home).join(format!(
            "canonical_{config}.{}.json",
            &sidecar.sha256[..16.min(sidecar.sha256.len())]
        ));
        let wanted = Wanted {
            root: Root::Models,
            path: format!("canonical_{config}.json"),
            sha256: sidecar.sha256.clone(),
            size: sidecar.size,
        };
        self.setup.engine.fetch(peer, &wanted, &incoming).await?;
        let read = tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&incoming);
            let _ = std::fs::remove_file(&incoming);
            bytes
        })
        .await??;
        let c: models::Canonical = serde_json::from_slice(&read).map_err(|e| {
            anyhow::anyhow!(
                "{}'s canonical_{config}.json is not a sidecar: {e}",
                peer.name
            )
        })?;
        Ok((c.sha256, c.fence_token))
    }

    fn refused(&self, config: ConfigKey, peer: &Peer, token: u64, seen: u64) -> Outcome {
        tracing::warn!(%config, peer = %peer.name, token, seen, "the peer's canonical model was written with a stale fencing token (a deposed leader's): not installed");
        self.note(|s| s.fenced += 1);
        Outcome::Fenced { token, seen }
    }

    /// Installs `peer`'s canonical model of `config` (`source`: its manifest lines).
    async fn install(
        &self,
        ctx: &Context,
        peer: &Peer,
        config: ConfigKey,
        source: Source,
        expect: Option<&str>,
    ) -> anyhow::Result<Outcome> {
        let Source {
            name,
            entry,
            sidecar,
        } = source;
        let home = ctx.home.clone();
        let (local, seen) = tokio::task::spawn_blocking(move || {
            anyhow::Ok((
                models::canonical(&home, config)?,
                models::fence_token(&home, config)?,
            ))
        })
        .await??;
        if local
            .as_ref()
            .is_some_and(|c| c.file_sha256 == entry.sha256)
        {
            return Ok(Outcome::Current);
        }
        // The fence of the promotion copied, before its model is downloaded.
        let source_fence = match &sidecar {
            Some(s) => Some(self.source_fence(ctx, peer, config, s).await?),
            None => None,
        };
        if let Some((_, token)) = source_fence
            && token > 0
            && token < seen
        {
            return Ok(self.refused(config, peer, token, seen));
        }
        // Only a newer generation replaces ours (a late or replayed MODEL_PROMOTED, a peer
        // behind us), unless the copy carries a newer leader's token than any seen here
        // (a new leader may number from a generation we already passed).
        if let (Some(ours), Some(theirs)) = (local.as_ref(), entry.generation)
            && ours.generation >= theirs
            && source_fence
                .as_ref()
                .is_none_or(|(_, token)| *token <= seen)
        {
            tracing::info!(%config, peer = %peer.name, theirs, ours = ours.generation, "the peer's canonical model is not newer than ours: not installed");
            return Ok(Outcome::NotNewer {
                theirs,
                ours: ours.generation,
            });
        }
        let transfer = Transfer::new(&peer.name, &ctx.node);
        let key = config.to_string();
        let t0 = Instant::now();
        ctx.publish(transfer.started(&key)).await?;
        let result = async {
            let fetched = fetch_model(&self.setup.engine, peer, &ctx.home, &name, &entry).await?;
            let (home, inc, name) = (
                ctx.home.clone(),
                fetched.path.clone(),
                format!("from {}", peer.name),
            );
            let expect = expect.map(str::to_owned);
            let previous = local.map(|c| c.sha256);
            let source_fence = source_fence.clone();
            let sha = fetched.info.payload_sha256.clone();
            let installed = tokio::task::spawn_blocking(move || -> anyhow::Result<Installed> {
                let fence = match source_fence {
                    // The sidecar names another payload: the manifest was read in
                    // the middle of a promotion; the next try reads both anew.
                    Some((named, _)) if named != sha => None,
                    Some((_, token)) if token > 0 => Some(models::Fence::Leader(token)),
                    _ => Some(models::Fence::Replica),
                };
                let outcome = match fence {
                    Some(fence) if expect.as_ref().is_none_or(|e| *e == sha) => {
                        match models::promote(
                            &home,
                            config,
                            &inc,
                            &name,
                            &sha,
                            previous.as_deref(),
                            None,
                            fence,
                        ) {
                            Ok(_) => Installed::Yes(sha),
                            Err(ringrift_store::StoreError::Fenced { token, seen }) => {
                                Installed::Fenced(token, seen)
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    _ => Installed::No,
                };
                let _ = std::fs::remove_file(&inc);
                Ok(outcome)
            })
            .await??;
            anyhow::Ok((installed, fetched.downloaded))
        }
        .await;
        match result {
            Ok((Installed::Fenced(token, seen), bytes)) => {
                ctx.publish(transfer.completed(&key, 0, bytes, t0.elapsed()))
                    .await?;
                Ok(self.refused(config, peer, token, seen))
            }
            Ok((Installed::Yes(sha), bytes)) => {
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
            Ok((Installed::No, bytes)) => {
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
        let peers = sources(&self.setup);
        // The manifest lines read here are the ones installed from: one request per peer,
        // all at once (a dead peer costs one timeout, not one per peer in turn).
        let client = self.setup.engine.client();
        let answers =
            futures_util::future::join_all(peers.iter().map(|p| manifest(client, p, Root::Models)))
                .await;
        let mut best: std::collections::BTreeMap<ConfigKey, (u32, Peer, Source)> =
            Default::default();
        let mut errors = Vec::new();
        for (peer, answer) in peers.iter().zip(answers) {
            match answer {
                Ok(doc) => {
                    for config in ConfigKey::all() {
                        if let Some(source) = canonical_entry(&doc, config)
                            && let Some(g) = source.entry.generation
                            && best.get(&config).is_none_or(|(b, _, _)| g > *b)
                        {
                            best.insert(config, (g, peer.clone(), source));
                        }
                    }
                }
                Err(e) => errors.push(format!("{}: {e}", peer.name)),
            }
        }
        for (config, (generation, peer, source)) in best {
            let home = ctx.home.clone();
            let ours =
                tokio::task::spawn_blocking(move || models::canonical(&home, config)).await??;
            if ours.is_some_and(|c| c.generation >= generation) {
                continue;
            }
            if let Err(e) = self.install(ctx, &peer, config, source, None).await {
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
        .detail("fenced", s.fenced)
        .detail("peers", sources(&self.setup).len())
    }
}

#[cfg(test)]
mod tests;
