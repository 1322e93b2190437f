//! `model_distribution`: the promoting node's half of model distribution. It answers
//! "has every node got the new model?".
//!
//! On MODEL_PROMOTED made on this node it records the promotion (config, payload and
//! file SHA-256 of the new canonical model) in `run/model_distribution.json` (atomic; a
//! restart goes on tracking). Each cycle it reads every peer's models manifest (its
//! data_server) and marks the nodes whose `canonical_{config}.*` (any model format) has that file
//! SHA-256 (each node's `model_sync` pulls and verifies it). When all have it:
//! MODEL_DISTRIBUTED with every node. A node still without it after `deadline_s`: one
//! DATA_SYNC_FAILED naming it, and health DEGRADED listing the laggards until it
//! catches up (MODEL_DISTRIBUTED is still sent then). A newer promotion of the same
//! config replaces the older one's tracking.
//!
//! `[model_distribution]`: `deadline_s` (900), `timeout_s` (30, per manifest request).

use handler_base::scope::Scope;
use handler_base::{ConfigError, Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_proto::Event;
use ringrift_proto::wire::{self, EventType, event::Payload};
use ringrift_store::{ConfigKey, models};
use ringrift_transfer::events::Transfer;
use ringrift_transfer::files::{Root, manifest};
use ringrift_transfer::{Setup, TransferSettings, node_of};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "model_distribution",
    about: "track each promoted model until every node holds it; MODEL_DISTRIBUTED",
    cycle_interval_s: Some(60.0),
    scope: Some(Scope::Node),
};

/// `[model_distribution]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistributionConfig {
    /// Seconds after a promotion when a node without the model is reported.
    pub deadline_s: f64,
    /// Per manifest request, seconds.
    pub timeout_s: f64,
}

impl Default for DistributionConfig {
    fn default() -> Self {
        DistributionConfig {
            deadline_s: 900.0,
            timeout_s: 30.0,
        }
    }
}

/// One promotion being tracked.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    pub payload_sha256: String,
    pub file_sha256: String,
    pub model_path: String,
    pub since_ms: i64,
    /// Nodes that hold it.
    pub reached: BTreeSet<String>,
    /// Nodes already reported late.
    pub reported: BTreeSet<String>,
}

pub struct ModelDistribution {
    setup: Setup,
    deadline: Duration,
    state_path: PathBuf,
    pending: Mutex<BTreeMap<String, Pending>>,
    distributed: Mutex<u64>,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: DistributionConfig = ctx.settings.section("model_distribution")?;
    handler_base::ensure_config!(
        cfg.deadline_s.is_finite() && cfg.deadline_s > 0.0,
        "model_distribution.deadline_s = {} must be a positive number of seconds",
        cfg.deadline_s
    );
    let setup = Setup::new(
        ctx,
        "model_distribution",
        TransferSettings {
            timeout_s: cfg.timeout_s,
            ..Default::default()
        },
    )?;
    let state_path = ringrift_store::paths::run_dir(&ctx.home).join("model_distribution.json");
    let pending = match std::fs::read(&state_path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            ConfigError::Invalid(format!(
                "{}: {e} (delete it to stop tracking older promotions)",
                state_path.display()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => anyhow::bail!("read {}: {e}", state_path.display()),
    };
    Ok(Arc::new(ModelDistribution {
        setup,
        deadline: Duration::from_secs_f64(cfg.deadline_s),
        state_path,
        pending: Mutex::new(pending),
        distributed: Mutex::new(0),
    }))
}

impl ModelDistribution {
    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn save(&self) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(&*self.pending())?;
        let path = self.state_path.clone();
        tokio::task::spawn_blocking(move || ringrift_store::manifest::atomic_write(&path, &bytes))
            .await??;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handler for ModelDistribution {
    fn subscriptions(&self) -> Vec<EventType> {
        vec![EventType::ModelPromoted]
    }

    async fn handle_event(&self, ctx: &Context, ev: &Event) -> anyhow::Result<()> {
        let Payload::ModelPromoted(p) = &ev.payload else {
            return Ok(());
        };
        if node_of(&ev.source) != Some(ctx.node.as_str()) {
            return Ok(());
        }
        let Ok(config) = ev.config_key.parse::<ConfigKey>() else {
            tracing::warn!(config = %ev.config_key, "MODEL_PROMOTED with a bad config key; not tracked");
            return Ok(());
        };
        let home = ctx.home.clone();
        let Some(c) =
            tokio::task::spawn_blocking(move || models::canonical(&home, config)).await??
        else {
            anyhow::bail!("MODEL_PROMOTED for {config} but this node has no canonical model");
        };
        if c.sha256 != p.model_sha256 {
            // Promoted again since: that promotion's event is tracked instead.
            return Ok(());
        }
        self.pending().insert(
            config.to_string(),
            Pending {
                payload_sha256: c.sha256,
                file_sha256: c.file_sha256,
                model_path: c.path.display().to_string(),
                since_ms: ringrift_store::now_ms(),
                reached: BTreeSet::from([ctx.node.clone()]),
                reported: BTreeSet::new(),
            },
        );
        self.save().await
    }

    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        if self.pending().is_empty() {
            return Ok(());
        }
        let peers = self.setup.peers();
        // One manifest per peer per cycle, whatever the number of configs tracked.
        let mut held: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for peer in &peers {
            match manifest(self.setup.engine.client(), peer, Root::Models).await {
                Ok(doc) => {
                    held.insert(
                        peer.name.clone(),
                        doc.files.into_iter().map(|(k, v)| (k, v.sha256)).collect(),
                    );
                }
                Err(e) => tracing::debug!(peer = %peer.name, error = %e, "models manifest"),
            }
        }
        let now = ringrift_store::now_ms();
        let mut events = Vec::new();
        let mut done = Vec::new();
        {
            let mut pending = self.pending();
            for (config, p) in pending.iter_mut() {
                // The canonical model in any format (ours `.rrm`, an external
                // trainer's `.onnx`): the file SHA-256 says which.
                let files: Vec<String> = models::ModelFormat::ALL
                    .into_iter()
                    .map(|f| format!("canonical_{config}.{}", f.ext()))
                    .collect();
                for peer in &peers {
                    let has = |m: &BTreeMap<String, String>| {
                        files
                            .iter()
                            .any(|f| m.get(f).is_some_and(|s| *s == p.file_sha256))
                    };
                    if held.get(&peer.name).is_some_and(has) {
                        p.reached.insert(peer.name.clone());
                    }
                }
                let missing: Vec<&str> = peers
                    .iter()
                    .map(|p| p.name.as_str())
                    .filter(|n| !p.reached.contains(*n))
                    .collect();
                if missing.is_empty() {
                    events.push(
                        Event::new(Payload::ModelDistributed(wire::ModelDistributed {
                            model_path: p.model_path.clone(),
                            model_sha256: p.payload_sha256.clone(),
                            nodes: p.reached.iter().cloned().collect(),
                        }))
                        .with_config(config.clone())
                        .with_id(format!(
                            "model_distributed:all:{config}:{}",
                            p.payload_sha256
                        )),
                    );
                    done.push(config.clone());
                    continue;
                }
                let late =
                    u64::try_from(now - p.since_ms).unwrap_or(0) > self.deadline.as_millis() as u64;
                if late {
                    for node in missing {
                        if p.reported.insert(node.to_owned()) {
                            events.push(Transfer::new(&ctx.node, node).failed(
                                config,
                                &format!(
                                    "canonical model {} not on {node} {} s after its promotion",
                                    &p.payload_sha256[..12.min(p.payload_sha256.len())],
                                    self.deadline.as_secs()
                                ),
                                Duration::from_millis(u64::try_from(now - p.since_ms).unwrap_or(0)),
                            ));
                        }
                    }
                }
            }
        }
        for ev in events {
            ctx.publish(ev).await?;
        }
        if !done.is_empty() {
            *self.distributed.lock().unwrap_or_else(|p| p.into_inner()) += done.len() as u64;
            let mut pending = self.pending();
            for c in &done {
                pending.remove(c);
            }
        }
        self.save().await
    }

    fn health_check(&self) -> HealthCheckResult {
        let pending = self.pending();
        let late: Vec<String> = pending
            .iter()
            .flat_map(|(c, p)| {
                p.reported
                    .iter()
                    .filter(|n| !p.reached.contains(*n))
                    .map(move |n| format!("{c}@{n}"))
            })
            .collect();
        let distributed = *self.distributed.lock().unwrap_or_else(|p| p.into_inner());
        let h = if late.is_empty() {
            HealthCheckResult::running(format!("{} promotion(s) being distributed", pending.len()))
        } else {
            HealthCheckResult::degraded(format!("models late on: {}", late.join(", ")))
        };
        h.detail("pending", pending.len())
            .detail("distributed", distributed)
    }
}

#[cfg(test)]
mod tests;
