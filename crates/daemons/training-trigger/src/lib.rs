//! `training_trigger`: decides when a config trains, and says why each time.
//!
//! Queues one training work item when all hold: exported data exists, it is newer than
//! the data of the last queued training (freshness: never train on data the current
//! model already saw), it has at least `min_rows` rows, no training of the config is in
//! flight (never two at once), the cooldown since the last one has passed, and the latest
//! QUALITY_SCORE_UPDATED (if any) is at least `min_quality`. The decision state is
//! persisted; the in-flight item is reconciled with the work queue every cycle, so a
//! lost TRAINING_COMPLETED cannot stall the config.

use handler_base::StatusMap;
use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use handler_base::{Publish, event};
use ringrift_contracts::payload::TrainingItem;
use ringrift_contracts::wire::payload_json;
use ringrift_ledger::StateStore;
use ringrift_proto::{Event, EventType, wire};
use ringrift_store::ConfigKey;
use ringrift_store::work_queue::{NewWork, WorkKind, WorkQueue, WorkStatus};
use std::sync::Arc;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "training_trigger",
    about: "Decide when to train: data freshness, quality, cooldown",
    cycle_interval_s: Some(60.0),
    scope: Some(Scope::Node),
};

/// `[training_trigger]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TriggerConfig {
    pub min_rows: u64,
    pub cooldown_s: f64,
    pub min_quality: f64,
    pub priority: i64,
    /// How many of the newest NPZ exports a training reads (newest first).
    pub window: usize,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        TriggerConfig {
            min_rows: 1,
            cooldown_s: 60.0,
            min_quality: 0.0,
            priority: 10,
            window: 16,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Npz {
    pub path: String,
    pub sha256: String,
    pub rows: u64,
    pub watermark: i64,
}

/// Persisted per config.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TriggerState {
    pub latest: Option<Npz>,
    /// The newest exports, newest first (at most `window`).
    #[serde(default)]
    pub recent: Vec<Npz>,
    pub queued_watermark: i64,
    pub in_flight: Option<String>,
    pub last_done_ms: i64,
    pub quality: Option<f64>,
    pub trainings: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Queue(Npz),
    Wait(String),
}

/// The decision for one config at `now_ms`.
pub fn decide(st: &TriggerState, cfg: &TriggerConfig, now_ms: i64) -> Decision {
    let Some(latest) = &st.latest else {
        return Decision::Wait("no exported data yet".into());
    };
    if let Some(id) = &st.in_flight {
        return Decision::Wait(format!("training {id} is in flight"));
    }
    if latest.watermark <= st.queued_watermark {
        return Decision::Wait(format!(
            "newest data (watermark {}) is not newer than the last training's ({})",
            latest.watermark, st.queued_watermark
        ));
    }
    if latest.rows < cfg.min_rows {
        return Decision::Wait(format!("{} rows < min_rows {}", latest.rows, cfg.min_rows));
    }
    let cool_ms = (cfg.cooldown_s * 1000.0) as i64;
    if st.last_done_ms > 0 && now_ms - st.last_done_ms < cool_ms {
        return Decision::Wait(format!(
            "cooldown: {:.0}s left",
            (cool_ms - (now_ms - st.last_done_ms)) as f64 / 1000.0
        ));
    }
    if let Some(q) = st.quality {
        if q < cfg.min_quality {
            return Decision::Wait(format!(
                "quality {q:.3} < min_quality {:.3}",
                cfg.min_quality
            ));
        }
    }
    Decision::Queue(latest.clone())
}

pub struct Trigger {
    pub cfg: TriggerConfig,
    pub configs: Vec<ConfigKey>,
    pub queue: Arc<dyn WorkQueue>,
    pub state: StateStore,
    status: StatusMap,
    lock: tokio::sync::Mutex<()>,
}

impl Trigger {
    pub fn new(
        cfg: TriggerConfig,
        configs: Vec<ConfigKey>,
        queue: Arc<dyn WorkQueue>,
        state: StateStore,
    ) -> Self {
        Trigger {
            cfg,
            configs,
            queue,
            state,
            status: StatusMap::default(),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Applies an event to the state of its config, then decides for it.
    pub async fn on_event(
        &self,
        ev: &Event,
        emit: &dyn Publish,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        let Ok(config) = ev.config_key.parse::<ConfigKey>() else {
            tracing::debug!(config = %ev.config_key, "event without a usable config key; ignored");
            return Ok(());
        };
        if !self.configs.contains(&config) {
            return Ok(());
        }
        let _g = self.lock.lock().await;
        let key = config.to_string();
        let mut st: TriggerState = self.state.get(&key).await?.unwrap_or_default();
        use wire::event::Payload;
        match &ev.payload {
            Payload::NpzExportCompleted(n) => {
                let npz = Npz {
                    path: n.path.clone(),
                    sha256: n.sha256.clone(),
                    rows: n.rows,
                    watermark: n.watermark,
                };
                if st.latest.as_ref().is_none_or(|l| n.watermark > l.watermark) {
                    st.latest = Some(npz.clone());
                }
                if !st.recent.iter().any(|r| r.watermark == npz.watermark) {
                    st.recent.push(npz);
                    st.recent.sort_by(|a, b| b.watermark.cmp(&a.watermark));
                    st.recent.truncate(self.cfg.window.max(1));
                }
            }
            Payload::QualityScoreUpdated(q) => st.quality = Some(q.quality_score),
            Payload::TrainingCompleted(t) if st.in_flight.as_deref() == Some(t.run_id.as_str()) => {
                st.in_flight = None;
                st.last_done_ms = now_ms;
                st.trainings += 1;
            }
            _ => {}
        }
        self.state.put(&key, &st).await?;
        self.decide_and_act(config, st, emit, now_ms).await
    }

    /// Reconciles in-flight items with the queue and decides for every config.
    pub async fn cycle(&self, emit: &dyn Publish, now_ms: i64) -> anyhow::Result<()> {
        let _g = self.lock.lock().await;
        for &config in &self.configs {
            let key = config.to_string();
            let mut st: TriggerState = self.state.get(&key).await?.unwrap_or_default();
            if let Some(id) = st.in_flight.clone() {
                let q = self.queue.clone();
                let item = tokio::task::spawn_blocking(move || q.get(&id)).await??;
                let done = match &item {
                    None => true,
                    Some(i) => matches!(i.status, WorkStatus::Completed | WorkStatus::Failed),
                };
                if done {
                    tracing::info!(%config, item = ?st.in_flight, status = ?item.map(|i| i.status), "training item finished; config free to train again");
                    st.in_flight = None;
                    st.last_done_ms = now_ms;
                    self.state.put(&key, &st).await?;
                }
            }
            self.decide_and_act(config, st, emit, now_ms).await?;
        }
        Ok(())
    }

    async fn decide_and_act(
        &self,
        config: ConfigKey,
        mut st: TriggerState,
        emit: &dyn Publish,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        let key = config.to_string();
        match decide(&st, &self.cfg, now_ms) {
            Decision::Wait(why) => {
                if self.status.set(key, why.clone()) {
                    tracing::info!(%config, reason = %why, "not training");
                }
                Ok(())
            }
            Decision::Queue(npz) => {
                // Another training of this config already queued or running (e.g. by a
                // previous run of this daemon that died before saving): adopt it.
                let q = self.queue.clone();
                let open = tokio::task::spawn_blocking(move || {
                    q.open_items(WorkKind::Training, Some(config))
                })
                .await??;
                let id = match open.first() {
                    Some(item) => {
                        tracing::warn!(%config, item = %item.item_id, "a training item is already open; adopting it instead of queueing another");
                        item.item_id.clone()
                    }
                    None => {
                        let payload = payload_json(&TrainingItem {
                            npz_path: npz.path.clone(),
                            npz_paths: st.recent.iter().map(|r| r.path.clone()).collect(),
                            npz_sha256: npz.sha256.clone(),
                            rows: npz.rows,
                            watermark: npz.watermark,
                        })?;
                        let work = NewWork::new(
                            WorkKind::Training,
                            Some(config),
                            self.cfg.priority,
                            payload.clone(),
                        );
                        let q = self.queue.clone();
                        let id = tokio::task::spawn_blocking(move || q.enqueue(&work)).await??;
                        let item = wire::WorkItem {
                            work_id: id.clone(),
                            kind: "training".into(),
                            priority: self.cfg.priority as i32,
                            payload_json: payload.to_string(),
                            ..Default::default()
                        };
                        emit.publish_acked(event(
                            wire::event::Payload::WorkQueued(item),
                            format!("work:{id}"),
                            &key,
                        ))
                        .await?;
                        tracing::info!(%config, item = %id, watermark = npz.watermark, rows = npz.rows, "training queued: fresh data, nothing in flight, cooldown over");
                        id
                    }
                };
                st.in_flight = Some(id.clone());
                st.queued_watermark = st.queued_watermark.max(npz.watermark);
                self.state.put(&key, &st).await?;
                self.status.set(key, format!("training {id} queued"));
                Ok(())
            }
        }
    }
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: TriggerConfig = ctx.settings.section("training_trigger")?;
    handler_base::ensure_config!(
        cfg.cooldown_s >= 0.0,
        "training_trigger intervals must be >= 0"
    );
    handler_base::ensure_config!(cfg.window >= 1, "training_trigger.window must be >= 1");
    let configs = ringrift_loop::configs(ctx)?;
    let queue = ringrift_nats::open_node_queue(ctx)?;
    let state = StateStore::open(&ctx.home, &INFO)?;
    Ok(Arc::new(Trigger::new(cfg, configs, queue, state)))
}

#[async_trait::async_trait]
impl Handler for Trigger {
    fn subscriptions(&self) -> Vec<EventType> {
        vec![
            EventType::NpzExportCompleted,
            EventType::QualityScoreUpdated,
            EventType::TrainingCompleted,
            EventType::TrainingFailed,
        ]
    }
    /// It learns of exported data only from NPZ_EXPORT_COMPLETED (its cycle re-decides on
    /// what it learnt): exports before its first subscribe must count.
    fn replay_history(&self) -> bool {
        true
    }
    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        self.cycle(&*ctx.publisher, ringrift_store::now_ms()).await
    }
    async fn handle_event(&self, ctx: &Context, ev: &Event) -> anyhow::Result<()> {
        self.on_event(ev, &*ctx.publisher, ringrift_store::now_ms())
            .await
    }
    fn health_check(&self) -> HealthCheckResult {
        self.status.details(HealthCheckResult::running("deciding"))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod in_process;
