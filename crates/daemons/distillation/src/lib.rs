//! `distillation`: after MODEL_PROMOTED, distils the new canonical model into a smaller
//! student (distill job on the newest NPZ exports), runs the student's gauntlet
//! (evaluate job vs random and heuristic; its Elo is recorded under its own name) and
//! publishes ELO_UPDATED for it. The student is never promoted by this daemon: it emits
//! no EVALUATION_COMPLETED. One distillation per promoted model (persisted by SHA-256).

use handler_base::StatusLine;
use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use handler_base::{Publish, event};
use ringrift_contracts::{EvaluateReport, TrainReport};
use ringrift_jobs::{JobKind, JobRequest, Jobs, RunnerJobs};
use ringrift_ledger::StateStore;
use ringrift_proto::{Event, EventType, wire};
use ringrift_store::{ConfigKey, paths};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "distillation",
    about: "Distil promoted models into smaller ones",
    cycle_interval_s: Some(300.0),
    scope: Some(Scope::Cluster),
};

/// `[distillation]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistillConfig {
    pub hidden: u32,
    pub npz_window: usize,
    pub games_random: u32,
    pub games_heuristic: u32,
    pub timeout_s: f64,
}

impl Default for DistillConfig {
    fn default() -> Self {
        DistillConfig {
            hidden: 16,
            npz_window: 4,
            games_random: 100,
            games_heuristic: 100,
            timeout_s: 3600.0,
        }
    }
}

/// The newest `n` NPZ files of `config` under `data/training`, newest first.
pub fn newest_npz(home: &Path, config: ConfigKey, n: usize) -> Vec<PathBuf> {
    ringrift_store::model_files::newest_files(
        &paths::training_dir(home),
        &format!("{config}_"),
        &[".npz"],
        n,
    )
}

pub struct Distiller {
    pub cfg: DistillConfig,
    pub home: PathBuf,
    pub jobs: Arc<dyn Jobs>,
    pub state: StateStore,
    status: StatusLine,
}

impl Distiller {
    pub fn new(cfg: DistillConfig, home: PathBuf, jobs: Arc<dyn Jobs>, state: StateStore) -> Self {
        Distiller {
            cfg,
            home,
            jobs,
            state,
            status: StatusLine::new("waiting for a promotion"),
        }
    }

    pub async fn on_promoted(&self, ev: &Event, emit: &dyn Publish) -> anyhow::Result<()> {
        let wire::event::Payload::ModelPromoted(m) = &ev.payload else {
            return Ok(());
        };
        let config: ConfigKey = ev.config_key.parse().map_err(|e| {
            anyhow::anyhow!(
                "MODEL_PROMOTED #{} has config key {:?}: {e}",
                ev.seq,
                ev.config_key
            )
        })?;
        let key = format!("distilled:{}", m.model_sha256);
        if self.state.get::<serde_json::Value>(&key).await?.is_some() {
            return Ok(());
        }
        let (home, w) = (self.home.clone(), self.cfg.npz_window);
        let data = tokio::task::spawn_blocking(move || newest_npz(&home, config, w)).await?;
        if data.is_empty() {
            anyhow::bail!("no NPZ exports of {config} to distil on");
        }
        let teacher = if m.canonical_path.is_empty() {
            &m.model_path
        } else {
            &m.canonical_path
        };
        let tag: String = m.model_sha256.chars().take(12).collect();
        let output = paths::models_dir(&self.home)
            .join(config.to_string())
            .join(format!("distilled_{tag}.rrm"));
        self.status.set(format!("distilling {teacher}"));
        let req = JobRequest::new(
            JobKind::Distill,
            format!("distill:{config}"),
            Duration::from_secs_f64(self.cfg.timeout_s),
        )
        .var("config_key", config)
        .var("teacher", teacher)
        .list("data", data.iter().map(|d| d.display()))
        .var("output", output.display())
        .var("hidden", self.cfg.hidden);
        let trained: TrainReport = self.jobs.run(req).await?;
        let student = trained.output.display().to_string();
        let name = format!("distilled_{tag}");
        let req = JobRequest::new(
            JobKind::Evaluate,
            format!("evaluate-distilled:{config}"),
            Duration::from_secs_f64(self.cfg.timeout_s),
        )
        .var("config_key", config)
        .var("model", &student)
        .var("name", &name)
        .var("games_random", self.cfg.games_random)
        .var("games_heuristic", self.cfg.games_heuristic)
        .var("games_canonical", 0)
        .var("depth", 2)
        .var("canonical_depth", 2)
        // One id per student: a rerun records none of its games twice.
        .var("job_id", format!("evaluate-distilled:{config}:{tag}"))
        .var("early_reject", false)
        .var("early_accept", false);
        // A student is measured, never promoted: every bar at 0.
        let req = ringrift_jobs::gate_vars(
            req,
            &ringrift_contracts::Gate {
                min_lower_vs_random: 0.0,
                min_lower_vs_heuristic: 0.0,
                min_lower_vs_canonical: 0.0,
                ..Default::default()
            },
        );
        let report: EvaluateReport = self.jobs.run(req).await?;
        let summary: Vec<String> = report
            .results
            .iter()
            .map(|r| {
                format!(
                    "{} {:.3} [{:.3}, {:.3}]",
                    r.opponent, r.win_rate, r.lower95, r.upper95
                )
            })
            .collect();
        // Elo is absent only when the job was told not to record it.
        let elo = report
            .elo
            .ok_or_else(|| anyhow::anyhow!("the gauntlet of {name} recorded no Elo"))?;
        let p = wire::EloUpdated {
            participant: name.clone(),
            elo,
            previous_elo: 0.0,
            games: (self.cfg.games_random + self.cfg.games_heuristic),
        };
        emit.publish_acked(event(
            wire::event::Payload::EloUpdated(p),
            format!("distilled-elo:{tag}"),
            &ev.config_key,
        ))
        .await?;
        self.state.put(&key, &serde_json::json!({"student": student, "teacher": teacher, "train": trained, "gauntlet": report})).await?;
        let msg = format!(
            "{name} (hidden {}): {}; Elo {elo:.0}",
            self.cfg.hidden,
            summary.join(", ")
        );
        tracing::info!(%config, "{msg}");
        self.status.set(msg);
        Ok(())
    }
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: DistillConfig = ctx.settings.section("distillation")?;
    handler_base::ensure_config!(
        cfg.hidden > 0 && cfg.npz_window > 0 && cfg.games_random > 0 && cfg.games_heuristic > 0,
        "distillation: hidden, npz_window and game counts must be > 0"
    );
    handler_base::ensure_config!(cfg.timeout_s > 0.0, "distillation timeouts must be > 0");
    let jobs = Arc::new(RunnerJobs::from_ctx(ctx)?);
    let state = StateStore::open(&ctx.home, &INFO)?;
    Ok(Arc::new(Distiller::new(cfg, ctx.home.clone(), jobs, state)))
}

#[async_trait::async_trait]
impl Handler for Distiller {
    fn subscriptions(&self) -> Vec<EventType> {
        vec![EventType::ModelPromoted]
    }
    /// One call runs a job, bounded by its timeout.
    fn longest_call(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.cfg.timeout_s)
    }
    /// MODEL_PROMOTED is its only trigger (no cycle fallback): a promotion before its
    /// first subscribe must still be distilled.
    fn replay_history(&self) -> bool {
        true
    }
    async fn run_cycle(&self, _ctx: &Context) -> anyhow::Result<()> {
        Ok(())
    }
    async fn handle_event(&self, ctx: &Context, ev: &Event) -> anyhow::Result<()> {
        self.on_promoted(ev, &*ctx.publisher).await
    }
    fn health_check(&self) -> HealthCheckResult {
        HealthCheckResult::running(self.status.get())
    }
}

#[cfg(test)]
mod in_process;
#[cfg(test)]
mod tests {
    use super::*;
    use handler_base::Recorded;
    use ringrift_contracts::example;
    use ringrift_contracts::wire::report_json;
    use ringrift_jobs::FakeJobs;

    fn promoted() -> Event {
        let m = wire::ModelPromoted {
            model_path: "/m/g3.rrm".into(),
            canonical_path: "/m/canonical_hex8_2p.rrm".into(),
            model_sha256: "abcdef0123456789".into(),
            ..Default::default()
        };
        Event::new(wire::event::Payload::ModelPromoted(m)).with_config("hex8_2p")
    }

    #[tokio::test]
    async fn distils_then_runs_the_students_gauntlet_once() {
        let dir = tempfile::tempdir().unwrap();
        let training = paths::training_dir(dir.path());
        std::fs::create_dir_all(&training).unwrap();
        for i in 0..3 {
            std::fs::write(training.join(format!("hex8_2p_after{i}.npz")), b"x").unwrap();
        }
        std::fs::write(training.join("square8_2p_after0.npz"), b"x").unwrap();
        let jobs = FakeJobs::new(|r| match r.kind {
            JobKind::Distill => {
                let t = example::train(r.vars["config_key"].parse().unwrap(), &r.vars["output"]);
                report_json(r.kind, &t).map_err(|e| e.to_string())
            }
            _ => {
                let e = example::evaluate(
                    r.vars["config_key"].parse().unwrap(),
                    &r.vars["model"],
                    vec![example::opponent("random", 100, 90, 0.83, 0.95)],
                    Some(1480.0),
                );
                report_json(r.kind, &e).map_err(|e| e.to_string())
            }
        });
        let d = Distiller::new(
            DistillConfig::default(),
            dir.path().to_owned(),
            jobs.clone(),
            StateStore::open(dir.path(), &INFO).unwrap(),
        );
        let rec = Recorded::default();
        d.on_promoted(&promoted(), &rec).await.unwrap();
        d.on_promoted(&promoted(), &rec).await.unwrap();
        let calls = jobs.calls();
        assert_eq!(
            calls.iter().map(|c| c.kind).collect::<Vec<_>>(),
            vec![JobKind::Distill, JobKind::Evaluate],
            "once per promoted model"
        );
        assert_eq!(calls[0].vars["teacher"], "/m/canonical_hex8_2p.rrm");
        assert_eq!(calls[0].lists["data"].len(), 3, "three hex8 exports");
        let argv = ringrift_jobs::default_argv(&calls[0]).unwrap();
        let at = argv.iter().position(|a| a == "--data").unwrap();
        assert_eq!(argv[at + 1..at + 4], calls[0].lists["data"][..]);
        let args = ringrift_jobs::default_argv(&calls[1]).unwrap().join(" ");
        assert!(args.contains("--games-canonical 0"), "{args}");
        assert!(
            matches!(&rec.payloads()[0], wire::event::Payload::EloUpdated(e) if e.participant == "distilled_abcdef012345" && e.elo == 1480.0)
        );
        assert!(
            !rec.payloads()
                .iter()
                .any(|p| matches!(p, wire::event::Payload::EvaluationCompleted(_))),
            "the student is not put up for promotion"
        );
    }

    #[tokio::test]
    async fn no_exports_is_an_error_that_nacks_for_retry() {
        let dir = tempfile::tempdir().unwrap();
        let d = Distiller::new(
            DistillConfig::default(),
            dir.path().to_owned(),
            FakeJobs::new(|_| Ok(serde_json::json!({}))),
            StateStore::open(dir.path(), &INFO).unwrap(),
        );
        assert!(
            d.on_promoted(&promoted(), &Recorded::default())
                .await
                .unwrap_err()
                .to_string()
                .contains("no NPZ")
        );
    }
}
