//! `npz_distribution`: each exported NPZ reaches the training nodes.
//!
//! On NPZ_EXPORT_COMPLETED made on another node, a node with one of the target roles
//! (`roles`, default `["training"]`) fetches `data/training/<file name>` from the
//! exporting node's data_server with the transfer engine: the SHA-256 it must have is
//! the event's (not the manifest's), so a file rewritten or damaged since the export is
//! quarantined, never installed. It lands at the same place in this home (atomic
//! rename), where `continuous_training_loop` finds it and checks the hash again; then
//! NPZ_DISTRIBUTED names this node. If the exporter's file has already been replaced by
//! a newer export, nothing is fetched (that export's own event brings it).
//!
//! `[npz_distribution]`: `roles` (["training"]), `per_host` (2),
//! `bandwidth_bytes_per_s` (0), `timeout_s` (30).

use handler_base::scope::Scope;
use handler_base::{ConfigError, Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_cluster::Role;
use ringrift_proto::Event;
use ringrift_proto::wire::{self, EventType, event::Payload};
use ringrift_transfer::events::Transfer;
use ringrift_transfer::files::{Root, Wanted, manifest_under};
use ringrift_transfer::{Setup, TransferSettings, node_of};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "npz_distribution",
    about: "bring exported NPZ files to the training nodes, verified; NPZ_DISTRIBUTED",
    cycle_interval_s: Some(60.0),
    scope: Some(Scope::Node),
};

/// `[npz_distribution]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NpzConfig {
    /// This node receives NPZ files when it has one of these roles.
    pub roles: Vec<String>,
    #[serde(flatten)]
    pub transfer: TransferSettings,
}

impl Default for NpzConfig {
    fn default() -> Self {
        NpzConfig {
            roles: vec!["training".into()],
            transfer: TransferSettings::default(),
        }
    }
}

pub struct NpzDistribution {
    setup: Setup,
    receiver: bool,
    status: Mutex<(u64, u64, String)>,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: NpzConfig = ctx.settings.section("npz_distribution")?;
    let mut roles = Vec::new();
    for r in &cfg.roles {
        roles.push(Role::parse(r).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "npz_distribution.roles: {r:?} is not a role (coordinator, training, selfplay, ephemeral)"
            ))
        })?);
    }
    let setup = Setup::new(ctx, "npz_distribution", cfg.transfer)?;
    let receiver = setup
        .cluster
        .this_node()
        .roles
        .iter()
        .any(|r| roles.contains(r));
    Ok(Arc::new(NpzDistribution {
        setup,
        receiver,
        status: Mutex::new((0, 0, String::new())),
    }))
}

impl NpzDistribution {
    async fn receive(
        &self,
        ctx: &Context,
        ev: &Event,
        p: &wire::NpzExportCompleted,
    ) -> anyhow::Result<()> {
        let Some(node) = node_of(&ev.source) else {
            tracing::warn!(source = %ev.source, "NPZ_EXPORT_COMPLETED without a node in its source; ignored");
            return Ok(());
        };
        if node == ctx.node {
            return Ok(());
        }
        let Some(peer) = self.setup.peer(node) else {
            tracing::warn!(%node, "NPZ_EXPORT_COMPLETED from a node not in cluster.toml; ignored");
            return Ok(());
        };
        let Some(name) = std::path::Path::new(&p.path)
            .file_name()
            .and_then(|n| n.to_str())
        else {
            tracing::warn!(path = %p.path, "NPZ_EXPORT_COMPLETED without a file name; ignored");
            return Ok(());
        };
        let rel = format!("training/{name}");
        let dest = ringrift_store::paths::training_dir(&ctx.home).join(name);
        let (d2, sha) = (dest.clone(), p.sha256.clone());
        let have = tokio::task::spawn_blocking(move || {
            ringrift_store::manifest::hash_file(&d2)
                .ok()
                .map(|(s, _)| s == sha)
        })
        .await?;
        if have == Some(true) {
            return Ok(());
        }
        let doc = manifest_under(self.setup.engine.client(), &peer, Root::Data, "training").await?;
        let Some(entry) = doc.files.get(&rel) else {
            tracing::info!(file = %rel, %node, "exported NPZ no longer on its node; nothing to fetch");
            return Ok(());
        };
        if entry.sha256 != p.sha256 {
            tracing::info!(file = %rel, %node, "exported NPZ replaced by a newer export since; its own event brings it");
            return Ok(());
        }
        let transfer = Transfer::new(node, &ctx.node);
        let t0 = Instant::now();
        ctx.publish(transfer.started(&ev.config_key)).await?;
        let wanted = Wanted {
            root: Root::Data,
            path: rel,
            sha256: p.sha256.clone(),
            size: entry.size,
        };
        match self.setup.engine.fetch(&peer, &wanted, &dest).await {
            Ok(f) => {
                ctx.publish(transfer.completed(&ev.config_key, 1, f.downloaded, t0.elapsed()))
                    .await?;
                let done = Event::new(Payload::NpzDistributed(wire::NpzDistributed {
                    npz_path: dest.display().to_string(),
                    sha256: p.sha256.clone(),
                    nodes: vec![ctx.node.clone()],
                }))
                .with_config(ev.config_key.clone())
                .with_id(format!("npz_distributed:{}:{}", ctx.node, p.sha256));
                ctx.publish(done).await?;
                let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
                s.0 += 1;
                s.2 = format!("{name} from {node}");
                Ok(())
            }
            Err(e) => {
                ctx.publish(transfer.failed(&ev.config_key, &e.to_string(), t0.elapsed()))
                    .await?;
                self.status.lock().unwrap_or_else(|p| p.into_inner()).1 += 1;
                // Nacked: redelivered (a transient failure heals, a corrupt source
                // ends in the dead-letter queue after the router's limit).
                Err(e.into())
            }
        }
    }
}

#[async_trait::async_trait]
impl Handler for NpzDistribution {
    fn subscriptions(&self) -> Vec<EventType> {
        vec![EventType::NpzExportCompleted]
    }

    async fn run_cycle(&self, _ctx: &Context) -> anyhow::Result<()> {
        Ok(())
    }

    async fn handle_event(&self, ctx: &Context, ev: &Event) -> anyhow::Result<()> {
        match &ev.payload {
            Payload::NpzExportCompleted(p) if self.receiver => self.receive(ctx, ev, p).await,
            _ => Ok(()),
        }
    }

    fn health_check(&self) -> HealthCheckResult {
        let s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let msg = if !self.receiver {
            "not a receiving node (see npz_distribution.roles)".to_owned()
        } else if s.2.is_empty() {
            "waiting for exports".to_owned()
        } else {
            format!("last received: {}", s.2)
        };
        HealthCheckResult::running(msg)
            .detail("received", s.0)
            .detail("failed", s.1)
    }
}

#[cfg(test)]
mod tests;
