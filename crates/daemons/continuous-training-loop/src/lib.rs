//! `continuous_training_loop`: claims training items from the work queue and runs the
//! train job, publishing TRAINING_STARTED, then TRAINING_COMPLETED or TRAINING_FAILED.
//!
//! No duplicate training of the same data: the watermark of the last trained data is
//! persisted per config and an item whose data is not newer is completed as stale
//! without training; the train job's key (`train:<config>`) lets a restarted daemon
//! adopt a job still running from before its crash. A restarted daemon first resumes
//! the items it still holds (`held_by`) instead of waiting for their leases to expire.

use handler_base::StatusLine;
use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use handler_base::{Publish, event};
use ringrift_contracts::TrainReport;
use ringrift_contracts::payload::TrainingItem;
use ringrift_contracts::wire::parse_payload;
use ringrift_jobs::{JobKind, JobRequest, Jobs, RunnerJobs};
use ringrift_ledger::{Checkpoint, Ledger, StateStore, TrainingWriter};
use ringrift_loop::claim;
use ringrift_proto::wire;
use ringrift_store::work_queue::{WorkItem, WorkKind, WorkQueue};
use ringrift_store::{ConfigKey, paths};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "continuous_training_loop",
    about: "Claim training items and run training jobs",
    cycle_interval_s: Some(30.0),
    scope: Some(Scope::Node),
};

/// `[continuous_training_loop]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoopConfig {
    pub lease_s: f64,
    pub timeout_s: f64,
    /// Training epochs (`{epochs}` of the train template).
    pub epochs: u32,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            lease_s: 300.0,
            timeout_s: 3600.0,
            epochs: 6,
        }
    }
}

/// Persisted per config.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Trained {
    pub watermark: i64,
    pub generation: u32,
    pub last_model: String,
    /// The training under way, saved before its job starts.
    #[serde(default)]
    pub started: Option<Started>,
}

/// A training's item and the model it continues from. A restart resumes the same job
/// (the job runner matches key and spec) instead of choosing the newest model again,
/// which may be the one the first attempt's job wrote after its daemon died.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Started {
    pub item_id: String,
    pub init: Option<String>,
}

pub struct Trainer {
    pub cfg: LoopConfig,
    pub worker: String,
    pub home: PathBuf,
    pub queue: Arc<dyn WorkQueue>,
    pub jobs: Arc<dyn Jobs>,
    pub state: StateStore,
    /// The checkpoints others read (maintenance: the trained watermark).
    ledger: TrainingWriter,
    status: StatusLine,
    /// One step at a time: the cycle and WORK_QUEUED events both call `step`.
    one: tokio::sync::Mutex<()>,
}

impl Trainer {
    pub fn new(
        cfg: LoopConfig,
        worker: String,
        home: PathBuf,
        queue: Arc<dyn WorkQueue>,
        jobs: Arc<dyn Jobs>,
        state: StateStore,
        ledger: TrainingWriter,
    ) -> Self {
        Trainer {
            cfg,
            worker,
            home,
            queue,
            jobs,
            state,
            ledger,
            status: StatusLine::new("idle"),
            one: tokio::sync::Mutex::new(()),
        }
    }

    fn lease(&self) -> Duration {
        Duration::from_secs_f64(self.cfg.lease_s)
    }

    /// Resumes held items, else claims one; trains it. Returns whether it did work.
    pub async fn step(&self, emit: &dyn Publish) -> anyhow::Result<bool> {
        let _one = self.one.lock().await;
        let (q, w) = (self.queue.clone(), self.worker.clone());
        let held = tokio::task::spawn_blocking(move || q.held_by(&w)).await??;
        let item = match held.into_iter().find(|i| i.kind == WorkKind::Training) {
            Some(i) => {
                tracing::info!(item = %i.item_id, "resuming a training item held before a restart");
                i
            }
            None => match claim::claim(
                &self.queue,
                &self.worker,
                &[WorkKind::Training],
                self.lease(),
            )
            .await?
            {
                Some(i) => i,
                None => return Ok(false),
            },
        };
        let outcome = claim::run_leased(
            &self.queue,
            &self.worker,
            &item,
            self.lease(),
            |stop| async {
                self.train(&item, emit, stop)
                    .await
                    .map_err(|e| format!("{e:#}"))
            },
        )
        .await?;
        if let Err(e) = outcome {
            let config = item.config_key.map(|c| c.to_string()).unwrap_or_default();
            let p = wire::TrainingFailed {
                run_id: item.item_id.clone(),
                error: e.clone(),
                // A payload that does not parse is itself the failure (named in `error`).
                npz_path: parse_payload::<TrainingItem>(&item.item_id, &item.payload)
                    .map(|p| p.npz_path)
                    .unwrap_or_default(),
            };
            emit.publish_acked(event(
                wire::event::Payload::TrainingFailed(p),
                format!("train-failed:{}:{}", item.item_id, item.attempts),
                &config,
            ))
            .await?;
            tracing::error!(item = %item.item_id, error = %e, "training failed");
        }
        Ok(true)
    }

    async fn train(
        &self,
        item: &WorkItem,
        emit: &dyn Publish,
        stop: ringrift_jobs::CancellationToken,
    ) -> anyhow::Result<serde_json::Value> {
        let config: ConfigKey = item
            .config_key
            .ok_or_else(|| anyhow::anyhow!("training item {} has no config key", item.item_id))?;
        let key = config.to_string();
        let p: TrainingItem = parse_payload(&item.item_id, &item.payload)?;
        let (npz, watermark, npz_sha) = (
            local_npz(&self.home, &p.npz_path),
            p.watermark,
            p.npz_sha256.clone(),
        );
        let mut st: Trained = self.state.get(&key).await?.unwrap_or_default();
        if watermark <= st.watermark {
            tracing::warn!(%config, item = %item.item_id, watermark, trained = st.watermark, "data already trained on; completing the item without training");
            self.status
                .set(format!("skipped stale item {}", item.item_id));
            return Ok(serde_json::json!({"skipped": "data not newer than the last training"}));
        }
        // The file must be the one that was announced: an export rewritten since (or a
        // damaged copy) is refused, never trained on.
        let (path, expected) = (npz.clone(), npz_sha.clone());
        let (actual, _) = tokio::task::spawn_blocking(move || {
            ringrift_store::manifest::hash_file(std::path::Path::new(&path))
        })
        .await??;
        anyhow::ensure!(
            actual == expected,
            "NPZ {npz} has SHA-256 {actual}, but its NPZ_EXPORT_COMPLETED said {expected}; refusing to train on it"
        );
        let generation = st.generation + 1;
        self.status
            .set(format!("training {config} generation {generation}"));
        let started = wire::TrainingStarted {
            run_id: item.item_id.clone(),
            npz_path: npz.clone(),
            npz_sha256: npz_sha.clone(),
            samples: p.rows,
        };
        emit.publish_acked(event(
            wire::event::Payload::TrainingStarted(started),
            format!("train-start:{}", item.item_id),
            &key,
        ))
        .await?;
        let output = paths::models_dir(&self.home)
            .join(key.as_str())
            .join(format!(
                "gen{generation:04}_w{watermark}.{}",
                self.jobs.model_format().ext()
            ));
        let mut req = JobRequest::new(
            JobKind::Train,
            format!("train:{config}"),
            Duration::from_secs_f64(self.cfg.timeout_s),
        )
        .var("config_key", config)
        .var("output", output.display())
        .var("generation", generation)
        .var("epochs", self.cfg.epochs)
        .var("model_format", self.jobs.model_format());
        // {data}: the newest export, then the older ones of the window still here.
        let mut data = vec![npz.clone()];
        data.extend(
            p.npz_paths
                .iter()
                .map(|p| local_npz(&self.home, p))
                .filter(|p| *p != npz && std::path::Path::new(p).exists()),
        );
        req = req.list("data", data);
        // Continue from the current model (canonical, else the newest generation; "" =
        // a fresh network), the same one as the attempt this may resume.
        let init = match st.started.as_ref() {
            Some(s) if s.item_id == item.item_id => s.init.clone(),
            _ => {
                let (home, c) = (self.home.clone(), config);
                let init = tokio::task::spawn_blocking(move || {
                    ringrift_store::model_files::current_model(&home, c)
                })
                .await?
                .map(|m| m.display().to_string());
                st.started = Some(Started {
                    item_id: item.item_id.clone(),
                    init: init.clone(),
                });
                self.state.put(&key, &st).await?;
                init
            }
        };
        req = req.opt("init", init);
        let t0 = std::time::Instant::now();
        let r: TrainReport = self.jobs.run_until(req, stop).await?;
        let model = r.output.display().to_string();
        let done = wire::TrainingCompleted {
            run_id: item.item_id.clone(),
            model_path: model.clone(),
            model_sha256: r.sha256.clone(),
            npz_sha256: npz_sha,
            samples: r.samples as u64,
            policy_loss: r.val_policy_ce,
            value_loss: r.val_value_mse,
            generation,
            duration_s: t0.elapsed().as_secs_f64(),
        };
        emit.publish_acked(event(
            wire::event::Payload::TrainingCompleted(done),
            format!("trained:{config}:{watermark}"),
            &key,
        ))
        .await?;
        st.watermark = watermark;
        st.generation = generation;
        st.last_model = model.clone();
        st.started = None;
        self.state.put(&key, &st).await?;
        self.ledger
            .record(&Checkpoint {
                config,
                generation,
                watermark,
                model: model.clone(),
                at_ms: ringrift_store::now_ms(),
            })
            .await?;
        tracing::info!(%config, generation, model = %model, "TRAINING_COMPLETED");
        self.status
            .set(format!("trained {config} generation {generation}"));
        Ok(serde_json::to_value(&r)?)
    }
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: LoopConfig = ctx.settings.section("continuous_training_loop")?;
    handler_base::ensure_config!(
        cfg.lease_s >= 1.0 && cfg.timeout_s > 0.0,
        "continuous_training_loop: lease_s >= 1, timeouts > 0"
    );
    let queue = ringrift_nats::open_node_queue(ctx)?;
    let jobs = Arc::new(RunnerJobs::from_ctx(ctx)?);
    let state = StateStore::open(&ctx.home, &INFO)?;
    let ledger = Ledger::open(&ctx.home)?.trainer(&INFO)?;
    Ok(Arc::new(Trainer::new(
        cfg,
        ctx.source(),
        ctx.home.clone(),
        queue,
        jobs,
        state,
        ledger,
    )))
}

#[async_trait::async_trait]
impl Handler for Trainer {
    /// WORK_QUEUED wakes the loop at once; the cycle is the fallback poll.
    fn subscriptions(&self) -> Vec<ringrift_proto::EventType> {
        vec![ringrift_proto::EventType::WorkQueued]
    }
    /// One call runs a job, bounded by its timeout.
    fn longest_call(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.cfg.timeout_s)
    }
    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        while self.step(&*ctx.publisher).await? {}
        Ok(())
    }
    async fn handle_event(&self, ctx: &Context, ev: &ringrift_proto::Event) -> anyhow::Result<()> {
        match &ev.payload {
            wire::event::Payload::WorkQueued(w) if w.kind == "training" => {
                self.run_cycle(ctx).await
            }
            _ => Ok(()),
        }
    }
    fn health_check(&self) -> HealthCheckResult {
        HealthCheckResult::running(self.status.get())
    }
}

/// Where an announced NPZ is on this node: its path when that exists here (exported on
/// this node), else the file of that name in this home's `data/training/` (exported on
/// another node and brought here, verified, by `npz_distribution`). The SHA-256 check
/// that follows decides whether it is the announced file.
fn local_npz(home: &std::path::Path, announced: &str) -> String {
    let p = std::path::Path::new(announced);
    if p.exists() {
        return announced.to_owned();
    }
    match p.file_name() {
        Some(name) => paths::training_dir(home).join(name).display().to_string(),
        None => announced.to_owned(),
    }
}

#[cfg(test)]
mod in_process;
#[cfg(test)]
mod tests;
