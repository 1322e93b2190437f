//! `data_pipeline`: the per-config stage machine selfplay → sync → export → train →
//! evaluate → promote, driven by the loop's events and persisted, so a restart resumes
//! the right stage. Stages move in order, one step at a time, and only a stage's own
//! events count as its progress ([`effect`]); a stage that sees none within its timeout
//! is reported (PIPELINE_STAGE_STALLED, health DEGRADED) instead of waited on forever.
//! PIPELINE_PAUSED / PIPELINE_RESUMED pause and resume stall detection.
//!
//! Its registry dependencies are the daemons that execute the stages
//! (training_trigger → auto_export, continuous_training_loop, job_scheduler), so any
//! profile running the pipeline runs its stages.

use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use handler_base::{Publish, event};
use ringrift_ledger::{Ledger, StageRecord, StageWriter, StateStore};
use ringrift_proto::{Event, EventType, wire};
use ringrift_store::ConfigKey;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub const INFO: DaemonInfo = DaemonInfo {
    name: "data_pipeline",
    about: "Per-config stage machine with stall detection",
    cycle_interval_s: Some(30.0),
    scope: Some(Scope::Node),
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Selfplay,
    Export,
    Train,
    Evaluate,
    Promote,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Selfplay => "selfplay",
            Stage::Export => "export",
            Stage::Train => "train",
            Stage::Evaluate => "evaluate",
            Stage::Promote => "promote",
        }
    }
}

/// `[data_pipeline]` in ringrift.toml: stall timeouts per stage, seconds.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    pub selfplay_timeout_s: f64,
    pub export_timeout_s: f64,
    pub train_timeout_s: f64,
    pub evaluate_timeout_s: f64,
    pub promote_timeout_s: f64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            selfplay_timeout_s: 1800.0,
            export_timeout_s: 1800.0,
            train_timeout_s: 7200.0,
            evaluate_timeout_s: 3600.0,
            promote_timeout_s: 600.0,
        }
    }
}

impl PipelineConfig {
    fn timeout_ms(&self, s: Stage) -> i64 {
        let secs = match s {
            Stage::Selfplay => self.selfplay_timeout_s,
            Stage::Export => self.export_timeout_s,
            Stage::Train => self.train_timeout_s,
            Stage::Evaluate => self.evaluate_timeout_s,
            Stage::Promote => self.promote_timeout_s,
        };
        (secs * 1000.0) as i64
    }
}

/// Persisted per config.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConfigStage {
    pub stage: Stage,
    pub since_ms: i64,
    pub last_progress_ms: i64,
    pub generation: u32,
    pub promoted: u32,
    pub last_event: String,
    pub stalled_reported_for: Option<i64>,
}

impl ConfigStage {
    fn new(now: i64) -> Self {
        ConfigStage {
            stage: Stage::Selfplay,
            since_ms: now,
            last_progress_ms: now,
            generation: 0,
            promoted: 0,
            last_event: String::new(),
            stalled_reported_for: None,
        }
    }
}

/// What an event means to a config whose current stage is `cur`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The stage's own work ended: move to the next stage in the order.
    Advance(Stage),
    /// The stage's own work goes on (counts against a stall, no move).
    Progress,
    /// Another stage's event (e.g. new games while training, an export mid-evaluation):
    /// neither progress nor a move, so it cannot hide a hung stage.
    Ignore,
}

/// Stages follow their order, selfplay → export → train → evaluate → promote →
/// selfplay, one step at a time, and only the current stage's events count.
pub fn effect(cur: Stage, p: &wire::event::Payload) -> Effect {
    use wire::event::Payload::*;
    match (cur, p) {
        (Stage::Selfplay, SelfplayCompleted(_) | NewGamesAvailable(_) | DataSyncCompleted(_)) => {
            Effect::Advance(Stage::Export)
        }
        (Stage::Selfplay, DataSyncStarted(_) | DataSyncFailed(_)) => Effect::Progress,
        (Stage::Export, NpzExportCompleted(_)) => Effect::Advance(Stage::Train),
        (Stage::Train, TrainingStarted(_) | TrainingFailed(_)) => Effect::Progress,
        (Stage::Train, TrainingCompleted(_)) => Effect::Advance(Stage::Evaluate),
        (Stage::Evaluate, EvaluationCompleted(_)) => Effect::Advance(Stage::Promote),
        (Stage::Promote, ModelPromoted(_) | PromotionRejected(_)) => {
            Effect::Advance(Stage::Selfplay)
        }
        _ => Effect::Ignore,
    }
}

pub struct Pipeline {
    pub cfg: PipelineConfig,
    pub configs: Vec<ConfigKey>,
    pub state: StateStore,
    /// The stage per config, for other readers (the dashboard).
    ledger: StageWriter,
    /// The pauses in force, per source (`_pauses`; `_paused` in older state).
    paused: Mutex<ringrift_loop::pause::Pauses>,
    view: Mutex<BTreeMap<String, ConfigStage>>,
    lock: tokio::sync::Mutex<()>,
}

impl Pipeline {
    pub fn new(
        cfg: PipelineConfig,
        configs: Vec<ConfigKey>,
        state: StateStore,
        ledger: StageWriter,
    ) -> Self {
        Pipeline {
            cfg,
            configs,
            state,
            ledger,
            paused: Mutex::new(Default::default()),
            view: Mutex::new(BTreeMap::new()),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    async fn load(&self, key: &str, now: i64) -> anyhow::Result<ConfigStage> {
        Ok(self
            .state
            .get(key)
            .await?
            .unwrap_or_else(|| ConfigStage::new(now)))
    }

    async fn save(&self, key: &str, st: &ConfigStage) -> anyhow::Result<()> {
        self.state.put(key, st).await?;
        self.ledger
            .record(&StageRecord {
                config: key.parse()?,
                stage: st.stage.as_str().to_owned(),
                generation: st.generation,
                since_ms: st.since_ms,
            })
            .await?;
        self.view
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_owned(), st.clone());
        Ok(())
    }

    pub async fn restore(&self) -> anyhow::Result<()> {
        let pauses = match self.state.get("_pauses").await? {
            Some(p) => p,
            None => ringrift_loop::pause::Pauses::from_legacy(
                self.state.get::<Option<String>>("_paused").await?.flatten(),
            ),
        };
        *self.paused.lock().unwrap_or_else(|x| x.into_inner()) = pauses;
        let now = ringrift_store::now_ms();
        for c in &self.configs {
            let st = self.load(&c.to_string(), now).await?;
            self.view
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(c.to_string(), st);
        }
        Ok(())
    }

    pub async fn on_event(&self, ev: &Event, now: i64) -> anyhow::Result<()> {
        let _g = self.lock.lock().await;
        match &ev.payload {
            wire::event::Payload::PipelinePaused(_) => {
                let pauses = {
                    let mut p = self.paused.lock().unwrap_or_else(|x| x.into_inner());
                    p.apply(ev);
                    p.clone()
                };
                return Ok(self.state.put("_pauses", &pauses).await?);
            }
            wire::event::Payload::PipelineResumed(_) => {
                let (pauses, resumed) = {
                    let mut p = self.paused.lock().unwrap_or_else(|x| x.into_inner());
                    let was = p.is_paused();
                    p.apply(ev);
                    (p.clone(), was && !p.is_paused())
                };
                // Still paused by another source, or it was not paused: nothing resumes.
                if !resumed {
                    return Ok(self.state.put("_pauses", &pauses).await?);
                }
                // Time spent paused is not a stall.
                for c in &self.configs {
                    let mut st = self.load(&c.to_string(), now).await?;
                    st.last_progress_ms = now;
                    self.save(&c.to_string(), &st).await?;
                }
                return Ok(self.state.put("_pauses", &pauses).await?);
            }
            _ => {}
        }
        let Ok(config) = ev.config_key.parse::<ConfigKey>() else {
            return Ok(());
        };
        if !self.configs.contains(&config) {
            return Ok(());
        }
        let mut st = self.load(&config.to_string(), now).await?;
        let effect = effect(st.stage, &ev.payload);
        if effect == Effect::Ignore {
            tracing::debug!(%config, stage = st.stage.as_str(), event = ringrift_proto::type_name(ev.kind), "not this stage's event; ignored");
            return Ok(());
        }
        st.last_progress_ms = now;
        st.last_event = ringrift_proto::type_name(ev.kind).to_owned();
        st.stalled_reported_for = None;
        if let wire::event::Payload::TrainingCompleted(t) = &ev.payload {
            st.generation = st.generation.max(t.generation);
        }
        if matches!(ev.payload, wire::event::Payload::ModelPromoted(_)) {
            st.promoted += 1;
        }
        if let Effect::Advance(next) = effect {
            tracing::info!(%config, from = st.stage.as_str(), to = next.as_str(), event = %st.last_event, "stage change");
            st.stage = next;
            st.since_ms = now;
        }
        self.save(&config.to_string(), &st).await
    }

    /// Reports stages without progress past their timeout (once per stall).
    pub async fn check_stalls(
        &self,
        emit: &dyn Publish,
        now: i64,
    ) -> anyhow::Result<Vec<(ConfigKey, Stage)>> {
        let _g = self.lock.lock().await;
        if self
            .paused
            .lock()
            .unwrap_or_else(|x| x.into_inner())
            .is_paused()
        {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for &c in &self.configs {
            let mut st = self.load(&c.to_string(), now).await?;
            let idle = now - st.last_progress_ms;
            if idle > self.cfg.timeout_ms(st.stage)
                && st.stalled_reported_for != Some(st.last_progress_ms)
            {
                let p = wire::PipelineStageStalled {
                    stage: st.stage.as_str().into(),
                    stalled_for_s: idle as f64 / 1000.0,
                };
                emit.publish_acked(event(
                    wire::event::Payload::PipelineStageStalled(p),
                    format!("stall:{c}:{}:{}", st.stage.as_str(), st.last_progress_ms),
                    &c.to_string(),
                ))
                .await?;
                tracing::warn!(config = %c, stage = st.stage.as_str(), idle_s = idle / 1000, "stage stalled: no progress event within its timeout");
                st.stalled_reported_for = Some(st.last_progress_ms);
                out.push((c, st.stage));
            }
            self.save(&c.to_string(), &st).await?;
        }
        Ok(out)
    }

    pub fn health(&self, now: i64) -> HealthCheckResult {
        let view = self.view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut parts = Vec::new();
        let mut stalled = false;
        for (k, st) in &view {
            let idle = now - st.last_progress_ms;
            let s = idle > self.cfg.timeout_ms(st.stage);
            stalled |= s;
            parts.push(format!(
                "{k}: {}{} ({}s, gen {}, promoted {})",
                st.stage.as_str(),
                if s { " STALLED" } else { "" },
                (now - st.since_ms) / 1000,
                st.generation,
                st.promoted
            ));
        }
        let msg = parts.join("; ");
        let mut h = match self
            .paused
            .lock()
            .unwrap_or_else(|x| x.into_inner())
            .reason()
        {
            Some(why) => HealthCheckResult::degraded(format!("paused ({why}); {msg}")),
            None if stalled => HealthCheckResult::degraded(msg),
            None => HealthCheckResult::running(msg),
        };
        for (k, st) in view {
            h = h.detail(format!("stage.{k}"), st.stage.as_str());
        }
        h
    }
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: PipelineConfig = ctx.settings.section("data_pipeline")?;
    for s in [
        Stage::Selfplay,
        Stage::Export,
        Stage::Train,
        Stage::Evaluate,
        Stage::Promote,
    ] {
        handler_base::ensure_config!(
            cfg.timeout_ms(s) > 0,
            "data_pipeline.{}_timeout_s must be > 0",
            s.as_str()
        );
    }
    let configs = ringrift_loop::configs(ctx)?;
    let state = StateStore::open(&ctx.home, &INFO)?;
    let ledger = Ledger::open(&ctx.home)?.stager(&INFO)?;
    Ok(Arc::new(Pipeline::new(cfg, configs, state, ledger)))
}

#[async_trait::async_trait]
impl Handler for Pipeline {
    fn subscriptions(&self) -> Vec<EventType> {
        use EventType::*;
        vec![
            SelfplayCompleted,
            NewGamesAvailable,
            DataSyncCompleted,
            NpzExportCompleted,
            TrainingStarted,
            TrainingCompleted,
            TrainingFailed,
            EvaluationCompleted,
            ModelPromoted,
            PromotionRejected,
            PipelinePaused,
            PipelineResumed,
        ]
    }
    /// Its stage machine is built from the loop's events alone: a first start must see
    /// the stages that already happened.
    fn replay_history(&self) -> bool {
        true
    }
    async fn on_start(&self, _ctx: &Context) -> anyhow::Result<()> {
        self.restore().await
    }
    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        self.check_stalls(&*ctx.publisher, ringrift_store::now_ms())
            .await
            .map(|_| ())
    }
    async fn handle_event(&self, _ctx: &Context, ev: &Event) -> anyhow::Result<()> {
        self.on_event(ev, ringrift_store::now_ms()).await
    }
    fn health_check(&self) -> HealthCheckResult {
        self.health(ringrift_store::now_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use handler_base::Recorded;
    use wire::event::Payload;

    fn ev(p: Payload) -> Event {
        Event::new(p).with_config("hex8_2p")
    }

    fn pipeline(dir: &std::path::Path) -> Pipeline {
        let cfg = PipelineConfig {
            train_timeout_s: 10.0,
            ..Default::default()
        };
        Pipeline::new(
            cfg,
            vec!["hex8_2p".parse().unwrap()],
            StateStore::open(dir, &INFO).unwrap(),
            Ledger::open(dir).unwrap().stager(&INFO).unwrap(),
        )
    }

    async fn stage(p: &Pipeline) -> Stage {
        p.state
            .get::<ConfigStage>("hex8_2p")
            .await
            .unwrap()
            .unwrap()
            .stage
    }

    #[tokio::test]
    async fn events_walk_the_stages_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path());
        p.on_event(&ev(Payload::NewGamesAvailable(Default::default())), 1)
            .await
            .unwrap();
        assert_eq!(stage(&p).await, Stage::Export);
        p.on_event(&ev(Payload::NpzExportCompleted(Default::default())), 2)
            .await
            .unwrap();
        assert_eq!(stage(&p).await, Stage::Train);
        let p2 = pipeline(dir.path());
        p2.restore().await.unwrap();
        p2.on_event(
            &ev(Payload::TrainingCompleted(wire::TrainingCompleted {
                generation: 3,
                ..Default::default()
            })),
            3,
        )
        .await
        .unwrap();
        assert_eq!(stage(&p2).await, Stage::Evaluate);
        // Others read the stage in the ledger.
        let stages = Ledger::open(dir.path()).unwrap().stages().await.unwrap();
        assert!(
            matches!(&stages[..], [s] if s.stage == "evaluate" && s.generation == 3),
            "{stages:?}"
        );
        p2.on_event(&ev(Payload::EvaluationCompleted(Default::default())), 4)
            .await
            .unwrap();
        p2.on_event(&ev(Payload::ModelPromoted(Default::default())), 5)
            .await
            .unwrap();
        let st: ConfigStage = p2.state.get("hex8_2p").await.unwrap().unwrap();
        assert_eq!(
            (st.stage, st.generation, st.promoted),
            (Stage::Selfplay, 3, 1)
        );
    }

    /// Drives a fresh pipeline to the train stage at `now`.
    async fn to_train(p: &Pipeline, now: i64) {
        p.on_event(&ev(Payload::NewGamesAvailable(Default::default())), now)
            .await
            .unwrap();
        p.on_event(&ev(Payload::NpzExportCompleted(Default::default())), now)
            .await
            .unwrap();
        assert_eq!(stage(p).await, Stage::Train);
    }

    #[tokio::test]
    async fn other_stages_events_neither_hide_a_stall_nor_move_the_stage() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path());
        let rec = Recorded::default();
        to_train(&p, 1_000).await;
        // Selfplay keeps announcing games while the trainer hangs.
        for t in (2_000..=12_000).step_by(2_000) {
            p.on_event(&ev(Payload::NewGamesAvailable(Default::default())), t)
                .await
                .unwrap();
        }
        assert_eq!(
            p.check_stalls(&rec, 12_000).await.unwrap(),
            vec![("hex8_2p".parse().unwrap(), Stage::Train)],
            "new games are not training progress"
        );
        // Evaluating: a later export does not send the config back to train.
        p.on_event(&ev(Payload::TrainingCompleted(Default::default())), 13_000)
            .await
            .unwrap();
        assert_eq!(stage(&p).await, Stage::Evaluate);
        p.on_event(&ev(Payload::NpzExportCompleted(Default::default())), 14_000)
            .await
            .unwrap();
        assert_eq!(stage(&p).await, Stage::Evaluate);
        // Out of order: a promotion while evaluating does not skip ahead either.
        p.on_event(&ev(Payload::ModelPromoted(Default::default())), 15_000)
            .await
            .unwrap();
        assert_eq!(stage(&p).await, Stage::Evaluate);
    }

    #[tokio::test]
    async fn a_stall_is_reported_once_and_cleared_by_progress() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path());
        let rec = Recorded::default();
        to_train(&p, 1_000).await;
        assert!(p.check_stalls(&rec, 10_000).await.unwrap().is_empty());
        assert_eq!(
            p.check_stalls(&rec, 12_000).await.unwrap(),
            vec![("hex8_2p".parse().unwrap(), Stage::Train)]
        );
        assert!(
            p.check_stalls(&rec, 13_000).await.unwrap().is_empty(),
            "reported once"
        );
        assert!(matches!(
            p.health(13_000).status,
            handler_base::HealthStatus::Degraded
        ));
        p.on_event(&ev(Payload::TrainingStarted(Default::default())), 13_500)
            .await
            .unwrap();
        assert!(p.check_stalls(&rec, 14_000).await.unwrap().is_empty());
        assert_eq!(rec.events().len(), 1);
    }

    #[tokio::test]
    async fn paused_pipeline_reports_no_stall_and_resumes_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let p = pipeline(dir.path());
        let rec = Recorded::default();
        to_train(&p, 1_000).await;
        p.on_event(
            &Event::new(Payload::PipelinePaused(wire::PipelineControl {
                reason: "maintenance".into(),
            })),
            1_100,
        )
        .await
        .unwrap();
        assert!(p.check_stalls(&rec, 60_000).await.unwrap().is_empty());
        p.on_event(
            &Event::new(Payload::PipelineResumed(Default::default())),
            60_000,
        )
        .await
        .unwrap();
        assert!(
            p.check_stalls(&rec, 65_000).await.unwrap().is_empty(),
            "paused time is not a stall"
        );
    }
}

#[cfg(test)]
mod in_process;
