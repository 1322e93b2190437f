//! `replication_monitor`: counts the copies of every game batch across the cluster,
//! every 60 s by default.
//!
//! Each cycle asks every node of cluster.toml (this one included, through its
//! `data_server`) for its batch counts (`GET /games/summary`) and classifies the batches
//! (`ringrift_transfer::replication::classify`: zero-copy, single-copy,
//! under-replicated against `target_copies`, at most nodes − 1). REPLICATION_ALERT
//! {zero_copy, single_copy, under_replicated} is published when any count is non-zero or
//! the counts changed since the last alert (so the return to all-zero is published once).
//! Emergency sync (`emergency_sync`, on by default): a zero-copy batch whose source node
//! is ephemeral is copied at once to one durable node (not ephemeral, not excluded from
//! sync), at most `max_concurrent` at once and `emergency_max_per_hour` per sliding
//! hour, each copy reported as DATA_SYNC_*. Health: the three counts, and DEGRADED while
//! a node does not answer. Systematic repair is `replication_repair`'s.
//!
//! Only settled batches count: a batch's hour must have ended `settle_s` ago. The
//! running hour's batch grows with every game, so its copies always lag behind it; counted,
//! it kept every alert non-zero and was emergency-copied again every cycle. Copying it as
//! it grows is `auto_sync`'s and `ephemeral_sync`'s work; health reports it as
//! `open_batches`.
//!
//! `[replication_monitor]`: `target_copies` (2), `emergency_sync` (true),
//! `emergency_max_per_hour` (500), `max_concurrent` (3), `timeout_s` (30), `settle_s`
//! (600).

use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_proto::{Event, wire};
use ringrift_transfer::games::SyncEvents;
use ringrift_transfer::replication::{self, Counts, Level, RateWindow, net};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const INFO: DaemonInfo = DaemonInfo {
    name: "replication_monitor",
    about: "Zero-, single-copy and under-replicated game batches; emergency sync",
    cycle_interval_s: Some(60.0),
    scope: Some(Scope::Node),
};

/// `[replication_monitor]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    pub target_copies: usize,
    pub emergency_sync: bool,
    pub emergency_max_per_hour: usize,
    pub max_concurrent: usize,
    pub timeout_s: f64,
    /// A batch is judged once its hour ended this long ago (the running hour's batch
    /// always lags on other nodes: the sync daemons copy it).
    pub settle_s: f64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            target_copies: 2,
            emergency_sync: true,
            emergency_max_per_hour: 500,
            max_concurrent: 3,
            timeout_s: 30.0,
            settle_s: 600.0,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Status {
    cycles: u64,
    /// Batches not judged yet (hour running or not settled).
    open: usize,
    counts: Counts,
    batches: usize,
    /// The counts of the last alert (all zero before any).
    alerted: Counts,
    emergency_total: u64,
    emergency_failed: u64,
    unreachable: Vec<String>,
    last_error: Option<String>,
}

pub struct ReplicationMonitor {
    cfg: MonitorConfig,
    net: net::Replication,
    window: Mutex<RateWindow>,
    status: Mutex<Status>,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: MonitorConfig = ctx.settings.section("replication_monitor")?;
    handler_base::ensure_config!(
        cfg.settle_s.is_finite() && cfg.settle_s >= 0.0,
        "replication_monitor.settle_s = {} must be a number of seconds >= 0",
        cfg.settle_s
    );
    handler_base::ensure_config!(
        cfg.target_copies >= 1,
        "replication_monitor.target_copies = {} must be at least 1",
        cfg.target_copies
    );
    handler_base::ensure_config!(
        cfg.emergency_max_per_hour >= 1,
        "replication_monitor.emergency_max_per_hour = {} must be at least 1",
        cfg.emergency_max_per_hour
    );
    handler_base::ensure_config!(
        (1..=64).contains(&cfg.max_concurrent),
        "replication_monitor.max_concurrent = {} must be 1..=64",
        cfg.max_concurrent
    );
    let (cluster, client) =
        ringrift_transfer::setup::connect(ctx, "replication_monitor", cfg.timeout_s)?;
    let net = net::Replication {
        client,
        members: net::members(&cluster),
        target_copies: cfg.target_copies,
        settle: Duration::from_secs_f64(cfg.settle_s),
    };
    Ok(Arc::new(ReplicationMonitor {
        window: Mutex::new(RateWindow::new(
            cfg.emergency_max_per_hour,
            Duration::from_secs(3600),
        )),
        cfg,
        net,
        status: Mutex::new(Status::default()),
    }))
}

#[async_trait::async_trait]
impl Handler for ReplicationMonitor {
    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        let net::Survey {
            holdings,
            unreachable,
            nodes,
            statuses,
            counts,
            open,
        } = self.net.survey().await;
        let alerted = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .alerted;
        if counts.any() || counts != alerted {
            ctx.publish(Event::new(wire::event::Payload::ReplicationAlert(
                wire::ReplicationAlert {
                    zero_copy: counts.zero_copy,
                    single_copy: counts.single_copy,
                    under_replicated: counts.under_replicated,
                },
            )))
            .await?;
            if counts != alerted {
                tracing::warn!(
                    zero_copy = counts.zero_copy,
                    single_copy = counts.single_copy,
                    under_replicated = counts.under_replicated,
                    "REPLICATION_ALERT"
                );
            }
        }
        let mut done = replication::Executed::default();
        if self.cfg.emergency_sync {
            let ephemeral: BTreeSet<&str> = nodes
                .iter()
                .filter(|n| n.ephemeral)
                .map(|n| n.name.as_str())
                .collect();
            let durable = |name: &str| {
                nodes
                    .iter()
                    .any(|n| n.name == name && !n.ephemeral && !n.exclude_from_sync)
            };
            let mut seen = BTreeSet::new();
            let urgent: Vec<_> = replication::plan(&statuses, &holdings, &nodes, |s| {
                s.level == Some(Level::ZeroCopy) && ephemeral.contains(s.batch.source_node.as_str())
            })
            .into_iter()
            .filter(|r| durable(&r.to) && seen.insert(r.batch.clone()))
            .collect();
            if !urgent.is_empty() {
                let events = SyncEvents::new(ctx);
                done = self
                    .net
                    .repair_all(
                        &events,
                        urgent,
                        &self.window,
                        &Instant::now,
                        self.cfg.max_concurrent,
                    )
                    .await;
                tracing::info!(
                    copied = done.repaired,
                    failed = done.failed,
                    deferred = done.deferred,
                    "emergency sync of zero-copy batches from ephemeral nodes"
                );
                for e in &done.errors {
                    tracing::warn!(error = %e, "emergency sync failed");
                }
            }
        }
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        st.cycles += 1;
        st.counts = counts;
        st.open = open;
        st.batches = statuses.len();
        st.alerted = counts;
        st.emergency_total += done.repaired;
        st.emergency_failed += done.failed;
        st.unreachable = unreachable
            .iter()
            .map(|(n, e)| format!("{n}: {e}"))
            .collect();
        st.last_error = done.errors.first().cloned();
        Ok(())
    }

    fn health_check(&self) -> HealthCheckResult {
        let st = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let msg = format!(
            "{} batches: {} zero-copy, {} single-copy, {} under-replicated",
            st.batches, st.counts.zero_copy, st.counts.single_copy, st.counts.under_replicated
        );
        let h = if st.unreachable.is_empty() {
            HealthCheckResult::running(msg)
        } else {
            HealthCheckResult::degraded(format!(
                "{msg}; not answering: {}",
                st.unreachable.join("; ")
            ))
        }
        .detail("cycles", st.cycles)
        .detail("open_batches", st.open)
        .detail("batches", st.batches)
        .detail("zero_copy", st.counts.zero_copy)
        .detail("single_copy", st.counts.single_copy)
        .detail("under_replicated", st.counts.under_replicated)
        .detail("emergency_copies", st.emergency_total)
        .detail("emergency_failed", st.emergency_failed);
        match st.last_error {
            Some(e) => h.detail("last_error", e),
            None => h,
        }
    }
}

#[cfg(test)]
mod tests;
