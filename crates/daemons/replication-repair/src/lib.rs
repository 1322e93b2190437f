//! `replication_repair`: brings every game batch to `target_copies` copies, every 60 s by
//! default.
//!
//! Each cycle asks every node of cluster.toml (this one included, through its
//! `data_server`) for its batch counts (`GET /games/summary`), classifies the batches and
//! plans the repairs (`ringrift_transfer::replication`: zero-copy before single-copy
//! before under-replicated, oldest hour first; a repair copies a batch from a node holding
//! all of it to a node that answered, is not excluded from sync and is not the batch's
//! source). At most `max_per_hour` repairs start in any sliding hour (the rest wait for a
//! later cycle) and `max_concurrent` run at once; each copy publishes DATA_SYNC_*, and a
//! cycle with work publishes REPAIR_COMPLETED {repaired, failed}. The hourly window is in
//! memory: a restart starts a new one.
//!
//! Only settled batches are judged: a batch's hour must have ended `settle_s` ago. The
//! running hour's batch grows with every game, so its copies always lag behind it; the
//! sync daemons copy it, and repair takes it up once it has settled.
//!
//! `[replication_repair]`: `target_copies` (2; at most nodes − 1), `max_per_hour` (500),
//! `max_concurrent` (3), `timeout_s` (30, per HTTP read), `settle_s` (600).

use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_proto::{Event, wire};
use ringrift_transfer::games::SyncEvents;
use ringrift_transfer::replication::{self, RateWindow, net};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const INFO: DaemonInfo = DaemonInfo {
    name: "replication_repair",
    about: "Repair zero > single > under-replicated game batches, 500/h, 3 at once",
    cycle_interval_s: Some(60.0),
    scope: Some(Scope::Node),
};

/// `[replication_repair]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepairConfig {
    pub target_copies: usize,
    pub max_per_hour: usize,
    pub max_concurrent: usize,
    pub timeout_s: f64,
    /// A batch is judged once its hour ended this long ago (the running hour's batch
    /// always lags on other nodes: the sync daemons copy it).
    pub settle_s: f64,
}

impl Default for RepairConfig {
    fn default() -> Self {
        RepairConfig {
            target_copies: 2,
            max_per_hour: 500,
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
    counts: replication::Counts,
    planned: usize,
    deferred: u64,
    repaired_total: u64,
    failed_total: u64,
    unreachable: Vec<String>,
    last_error: Option<String>,
}

pub struct ReplicationRepair {
    cfg: RepairConfig,
    net: net::Replication,
    window: Mutex<RateWindow>,
    clock: fn() -> Instant,
    status: Mutex<Status>,
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: RepairConfig = ctx.settings.section("replication_repair")?;
    handler_base::ensure_config!(
        cfg.settle_s.is_finite() && cfg.settle_s >= 0.0,
        "replication_repair.settle_s = {} must be a number of seconds >= 0",
        cfg.settle_s
    );
    handler_base::ensure_config!(
        cfg.target_copies >= 1,
        "replication_repair.target_copies = {} must be at least 1",
        cfg.target_copies
    );
    handler_base::ensure_config!(
        cfg.max_per_hour >= 1,
        "replication_repair.max_per_hour = {} must be at least 1",
        cfg.max_per_hour
    );
    handler_base::ensure_config!(
        (1..=64).contains(&cfg.max_concurrent),
        "replication_repair.max_concurrent = {} must be 1..=64",
        cfg.max_concurrent
    );
    let (cluster, client) =
        ringrift_transfer::setup::connect(ctx, "replication_repair", cfg.timeout_s)?;
    let net = net::Replication {
        client,
        members: net::members(&cluster),
        target_copies: cfg.target_copies,
        settle: Duration::from_secs_f64(cfg.settle_s),
    };
    Ok(Arc::new(ReplicationRepair {
        window: Mutex::new(RateWindow::new(cfg.max_per_hour, Duration::from_secs(3600))),
        cfg,
        net,
        clock: Instant::now,
        status: Mutex::new(Status::default()),
    }))
}

#[async_trait::async_trait]
impl Handler for ReplicationRepair {
    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        let net::Survey {
            holdings,
            unreachable,
            nodes,
            statuses,
            counts,
            open,
        } = self.net.survey().await;
        let plan = replication::plan(&statuses, &holdings, &nodes, |_| true);
        let planned = plan.len();
        let events = SyncEvents::new(ctx);
        let clock = self.clock;
        let done = self
            .net
            .repair_all(
                &events,
                plan,
                &self.window,
                &move || clock(),
                self.cfg.max_concurrent,
            )
            .await;
        for e in &done.errors {
            tracing::warn!(error = %e, "repair failed");
        }
        if done.repaired + done.failed > 0 {
            tracing::info!(
                repaired = done.repaired,
                failed = done.failed,
                deferred = done.deferred,
                "replication repairs"
            );
            ctx.publish(Event::new(wire::event::Payload::RepairCompleted(
                wire::RepairCompleted {
                    repaired: done.repaired,
                    failed: done.failed,
                },
            )))
            .await?;
        }
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        st.cycles += 1;
        st.counts = counts;
        st.open = open;
        st.planned = planned;
        st.deferred = done.deferred;
        st.repaired_total += done.repaired;
        st.failed_total += done.failed;
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
        let used = self
            .window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .used((self.clock)());
        let msg = format!(
            "{} zero-copy, {} single-copy, {} under-replicated batches; {} repaired, {} failed",
            st.counts.zero_copy,
            st.counts.single_copy,
            st.counts.under_replicated,
            st.repaired_total,
            st.failed_total
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
        .detail("zero_copy", st.counts.zero_copy)
        .detail("single_copy", st.counts.single_copy)
        .detail("under_replicated", st.counts.under_replicated)
        .detail("planned", st.planned)
        .detail("deferred", st.deferred)
        .detail("repairs_in_last_hour", used)
        .detail("repaired_total", st.repaired_total)
        .detail("failed_total", st.failed_total);
        match st.last_error {
            Some(e) => h.detail("last_error", e),
            None => h,
        }
    }
}

#[cfg(test)]
mod tests;
