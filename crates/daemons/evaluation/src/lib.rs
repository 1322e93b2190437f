//! `evaluation`: on TRAINING_COMPLETED, runs the gauntlet job (vs random, heuristic and
//! the current canonical model; Elo recorded by the job) and publishes
//! EVALUATION_COMPLETED with win rates, 95 % bounds and the canonical model it was
//! compared with. A model is evaluated once: the SHA-256s already evaluated are
//! persisted, and the event id is `eval:<sha>`. A PROMOTION_REJECTED with `reevaluate`
//! (the canonical model changed between evaluation and promotion) plays the gauntlet
//! again, once per (model, new canonical): `eval:<sha>:<canonical sha>`. The job gets
//! `--job-id evaluate:<sha>[:<canonical sha>]`, so its Elo match ids are the same in
//! every attempt and a gauntlet rerun after a crash counts no game twice.

use handler_base::StatusLine;
use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use handler_base::{Publish, event};
use ringrift_contracts::{EvaluateReport, Gate};
use ringrift_jobs::{JobKind, JobRequest, Jobs, RunnerJobs};
use ringrift_ledger::StateStore;
use ringrift_loop::convert;
use ringrift_loop::gate::PromotionConfig;
use ringrift_proto::{Event, EventType, wire};
use ringrift_store::ConfigKey;
use std::sync::Arc;
use std::time::Duration;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "evaluation",
    about: "Gauntlet on TRAINING_COMPLETED",
    cycle_interval_s: Some(60.0),
    scope: Some(Scope::Node),
};

/// `[evaluation]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    pub games_random: u32,
    pub games_heuristic: u32,
    pub games_canonical: u32,
    /// Search depth of the model against random and heuristic (as it plays when
    /// deployed).
    pub depth: u32,
    /// Search depth of both models in the SPRT against the canonical model. 1: each
    /// network's own judgement, which is what training changes. At depth 3 on hex8_2p the
    /// search decides 83–88 % of paired openings alike between close models, and a
    /// generation that is 93 Elo stronger than the first at depth 1 is 20 stronger at
    /// depth 3 (docs/measurements.md, "What limits learning").
    pub canonical_depth: u32,
    /// Stop the games against random or heuristic once the model's upper 95 % bound
    /// against it is below the promotion gate (`[unified_promotion]`): it cannot pass, so
    /// a weak model costs a few dozen games instead of the full count.
    pub early_reject: bool,
    /// Stop the games against random or heuristic at a look (every 100 games) where the
    /// model's lower bound at z 3.09 already clears the gate: a model well above the
    /// floors costs 100 games per floor instead of the full count
    /// (`ringrift_workload::evaluate::EARLY_ACCEPT_Z` says what it risks).
    pub early_accept: bool,
    pub timeout_s: f64,
    /// Gauntlets of different configs that run at once (one at a time per config), so a
    /// long 3-player gauntlet does not hold the 2-player configs' candidates back. Each
    /// takes a job slot of the node like any job.
    pub concurrent: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            games_random: 100,
            // Enough that a model whose true score is 0.63 clears the seed's 0.60 lower
            // bound (at 1000 games the 95 % half-width is about 0.03).
            games_heuristic: 1000,
            // The cap of the SPRT against the canonical model (elo0 0, elo1 15).
            // Simulated per game: at a cap of 10,000 an equal candidate is accepted in
            // 5.2 % of tests, one 5 Elo stronger in 27 %, 10 in 69 %, 15 in 96 %, after
            // 3,000 to 4,000 games (undecided at the cap counts as a rejection). Games at
            // `canonical_depth` 1 cost about a millisecond, so the cap is cheap.
            games_canonical: 10000,
            depth: 3,
            canonical_depth: 1,
            early_reject: true,
            early_accept: true,
            timeout_s: 3600.0,
            concurrent: 3,
        }
    }
}

pub struct Evaluator {
    pub cfg: EvalConfig,
    /// The promotion gate: its SPRT settings and, for early rejection, its bars.
    pub gate: Gate,
    pub jobs: Arc<dyn Jobs>,
    pub state: StateStore,
    status: StatusLine,
}

impl Evaluator {
    pub fn new(cfg: EvalConfig, gate: Gate, jobs: Arc<dyn Jobs>, state: StateStore) -> Self {
        Evaluator {
            cfg,
            gate,
            jobs,
            state,
            status: StatusLine::new("idle"),
        }
    }

    pub async fn on_trained(&self, ev: &Event, emit: &dyn Publish) -> anyhow::Result<()> {
        let wire::event::Payload::TrainingCompleted(t) = &ev.payload else {
            return Ok(());
        };
        let id = if t.model_sha256.is_empty() {
            t.model_path.clone()
        } else {
            t.model_sha256.clone()
        };
        self.gauntlet(ev, &t.model_path, &t.run_id, &id, emit).await
    }

    /// PROMOTION_REJECTED with `reevaluate`: the canonical model changed after the
    /// candidate's gauntlet, so it plays again (once per new canonical model).
    pub async fn on_rejected(&self, ev: &Event, emit: &dyn Publish) -> anyhow::Result<()> {
        let wire::event::Payload::PromotionRejected(r) = &ev.payload else {
            return Ok(());
        };
        if !r.reevaluate {
            return Ok(());
        }
        let id = format!("{}:{}", r.model_sha256, r.canonical_sha256);
        self.gauntlet(ev, &r.model_path, &r.run_id, &id, emit).await
    }

    /// Runs the gauntlet of `model_path` once per `id` (persisted as `evaluated:<id>`)
    /// and publishes EVALUATION_COMPLETED `eval:<id>`.
    async fn gauntlet(
        &self,
        ev: &Event,
        model_path: &str,
        run_id: &str,
        id: &str,
        emit: &dyn Publish,
    ) -> anyhow::Result<()> {
        let config: ConfigKey = ev.config_key.parse().map_err(|e| {
            anyhow::anyhow!(
                "{} #{} has config key {:?}: {e}",
                ringrift_proto::type_name(ev.kind),
                ev.seq,
                ev.config_key
            )
        })?;
        let done_key = format!("evaluated:{id}");
        if self
            .state
            .get::<serde_json::Value>(&done_key)
            .await?
            .is_some()
        {
            tracing::info!(model = %model_path, "already evaluated; not repeating the gauntlet");
            return Ok(());
        }
        self.status.set(format!("evaluating {model_path}"));
        let req = JobRequest::new(
            JobKind::Evaluate,
            format!("evaluate:{config}"),
            Duration::from_secs_f64(self.cfg.timeout_s),
        )
        .var("config_key", config)
        .var("model", model_path)
        .var(
            "name",
            std::path::Path::new(model_path)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into()),
        )
        .var("games_random", self.cfg.games_random)
        .var("games_heuristic", self.cfg.games_heuristic)
        .var("games_canonical", self.cfg.games_canonical)
        .var("depth", self.cfg.depth)
        .var("canonical_depth", self.cfg.canonical_depth)
        // Elo match ids are `<job id>/<game index>`. The runner's RINGRIFT_JOB_ID is new
        // for every start, so a gauntlet rerun after a crash would count its games
        // again; the id of the evaluation is the same for every attempt.
        .var("job_id", format!("evaluate:{id}"))
        .var("early_reject", self.cfg.early_reject)
        .var("early_accept", self.cfg.early_accept);
        // The gate goes with every gauntlet: the SPRT against the canonical model stops
        // its games when it decides, and early rejection uses the Wilson bars.
        let req = ringrift_jobs::gate_vars(req, &self.gate);
        let r: EvaluateReport = self.jobs.run(req).await?;
        let p = convert::evaluation_completed(&r, model_path, run_id);
        let summary: Vec<String> = p
            .results
            .iter()
            .map(|o| {
                format!(
                    "{} {:.3} [{:.3}, {:.3}]",
                    o.opponent, o.win_rate, o.lower_95, o.upper_95
                )
            })
            .collect();
        emit.publish_acked(event(
            wire::event::Payload::EvaluationCompleted(p),
            format!("eval:{id}"),
            &ev.config_key,
        ))
        .await?;
        self.state.put(&done_key, &r).await?;
        tracing::info!(%config, model = %model_path, results = %summary.join(", "), "EVALUATION_COMPLETED");
        self.status
            .set(format!("evaluated {model_path}: {}", summary.join(", ")));
        Ok(())
    }
}

pub struct Evaluation(pub Evaluator);

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: EvalConfig = ctx.settings.section("evaluation")?;
    handler_base::ensure_config!(
        cfg.games_random > 0 && cfg.games_heuristic > 0,
        "evaluation needs games against random and heuristic"
    );
    handler_base::ensure_config!(
        cfg.games_canonical > 0,
        "evaluation.games_canonical = 0 would skip the test against the canonical model, so every candidate that clears the floors would be promoted; it is the SPRT's cap (default 10000) and cannot be 0"
    );
    handler_base::ensure_config!(cfg.timeout_s > 0.0, "evaluation timeouts must be > 0");
    handler_base::ensure_config!(
        (1..=64).contains(&cfg.concurrent),
        "evaluation.concurrent must be 1 to 64 (gauntlets of different configs at once)"
    );
    handler_base::ensure_config!(
        cfg.depth >= 1 && cfg.canonical_depth >= 1,
        "evaluation depth and canonical_depth must be at least 1"
    );
    let gate = PromotionConfig::load(ctx)?.gate;
    let jobs = Arc::new(RunnerJobs::from_ctx(ctx)?);
    let state = StateStore::open(&ctx.home, &INFO)?;
    Ok(Arc::new(Evaluation(Evaluator::new(cfg, gate, jobs, state))))
}

#[async_trait::async_trait]
impl Handler for Evaluation {
    fn subscriptions(&self) -> Vec<EventType> {
        vec![EventType::TrainingCompleted, EventType::PromotionRejected]
    }
    /// One call runs a job, bounded by its timeout.
    fn longest_call(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.0.cfg.timeout_s)
    }
    /// Events are its only trigger (no cycle fallback): one published before its first
    /// subscribe must still be evaluated.
    fn replay_history(&self) -> bool {
        true
    }
    /// One gauntlet at a time per config; configs side by side.
    fn lane(&self, ev: &Event) -> String {
        ev.config_key.clone()
    }
    fn max_concurrent(&self) -> usize {
        self.0.cfg.concurrent
    }
    async fn run_cycle(&self, _ctx: &Context) -> anyhow::Result<()> {
        Ok(())
    }
    async fn handle_event(&self, ctx: &Context, ev: &Event) -> anyhow::Result<()> {
        match ev.kind {
            EventType::PromotionRejected => self.0.on_rejected(ev, &*ctx.publisher).await,
            _ => self.0.on_trained(ev, &*ctx.publisher).await,
        }
    }
    fn health_check(&self) -> HealthCheckResult {
        HealthCheckResult::running(self.0.status.get())
    }
}

#[cfg(test)]
mod in_process;
#[cfg(test)]
mod tests {
    use super::*;
    use handler_base::Recorded;
    use ringrift_contracts::OpponentResult;
    use ringrift_contracts::wire::report_json;
    use ringrift_jobs::FakeJobs;

    fn trained(sha: &str) -> Event {
        let t = wire::TrainingCompleted {
            run_id: "w1".into(),
            model_path: "/m/g1.rrm".into(),
            model_sha256: sha.into(),
            generation: 1,
            ..Default::default()
        };
        Event::new(wire::event::Payload::TrainingCompleted(t)).with_config("hex8_2p")
    }

    fn result(opponent: &str, wins: u64, lower95: f64, upper95: f64) -> OpponentResult {
        OpponentResult {
            opponent: opponent.into(),
            games: 100,
            wins,
            draws: 0,
            losses: 100 - wins,
            win_rate: wins as f64 / 100.0,
            lower95,
            upper95,
            by_seat: vec![[50.0, wins as f64 / 2.0], [50.0, wins as f64 / 2.0]],
            stopped_early: false,
            groups: Vec::new(),
            depth: 0,
        }
    }

    fn jobs() -> Arc<FakeJobs> {
        FakeJobs::new(|req| {
            let r = EvaluateReport {
                config_key: req.vars["config_key"].parse().unwrap(),
                model: req.vars["model"].clone().into(),
                model_name: "g1".into(),
                model_sha256: "abc".into(),
                generation: 1,
                canonical_sha256: None,
                results: vec![
                    result("random", 97, 0.915, 0.99),
                    result("heuristic", 40, 0.31, 0.5),
                ],
                elo: Some(1612.5),
                elapsed_s: 1.0,
                games_per_s: 200.0,
                promotion: None,
            };
            report_json(req.kind, &r).map_err(|e| e.to_string())
        })
    }

    /// An evaluator with the default config and gate on `jobs`, its state under `dir`.
    fn evaluator(dir: &std::path::Path, jobs: Arc<FakeJobs>) -> Evaluator {
        Evaluator::new(
            EvalConfig::default(),
            Gate::default(),
            jobs,
            StateStore::open(dir, &INFO).unwrap(),
        )
    }

    #[tokio::test]
    async fn gauntlet_result_becomes_evaluation_completed_once() {
        let dir = tempfile::tempdir().unwrap();
        let j = jobs();
        let e = evaluator(dir.path(), j.clone());
        let rec = Recorded::default();
        e.on_trained(&trained("abc"), &rec).await.unwrap();
        e.on_trained(&trained("abc"), &rec).await.unwrap();
        let calls = j.calls();
        assert_eq!(
            calls.len(),
            1,
            "a redelivered event does not rerun the gauntlet"
        );
        let args = ringrift_jobs::default_argv(&calls[0]).unwrap().join(" ");
        assert!(
            args.contains("--games-heuristic 1000")
                && args.contains("--job-id evaluate:abc evaluate")
                && args.contains("--depth 3")
                && args.contains("--early-reject true --early-accept true --gate-random 0.85 --gate-heuristic 0.6")
                && args.contains("--canonical-test sprt --sprt-elo0 0 --sprt-elo1 15"),
            "{args}"
        );
        let evs = rec.events();
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].id, "eval:abc");
        let wire::event::Payload::EvaluationCompleted(p) = &evs[0].payload else {
            panic!()
        };
        assert_eq!(p.results.len(), 2);
        assert!((p.results[0].lower_95 - 0.915).abs() < 1e-9 && p.elo > 1600.0);
    }

    /// unified_promotion refused the candidate because the canonical model changed after
    /// its gauntlet: it plays again, once, and the new EVALUATION_COMPLETED is an event
    /// of its own (not deduplicated against the first).
    #[tokio::test]
    async fn a_rejection_asking_for_reevaluation_replays_the_gauntlet_once() {
        let dir = tempfile::tempdir().unwrap();
        let j = jobs();
        let e = evaluator(dir.path(), j.clone());
        let rec = Recorded::default();
        e.on_trained(&trained("abc"), &rec).await.unwrap();
        let rejected = |reevaluate| {
            let r = wire::PromotionRejected {
                model_path: "/m/g1.rrm".into(),
                reason: "canonical changed since evaluation".into(),
                model_sha256: "abc".into(),
                canonical_sha256: "c2".into(),
                reevaluate,
                run_id: "w1".into(),
                ..Default::default()
            };
            Event::new(wire::event::Payload::PromotionRejected(r)).with_config("hex8_2p")
        };
        e.on_rejected(&rejected(false), &rec).await.unwrap();
        assert_eq!(j.calls().len(), 1, "a plain rejection evaluates nothing");
        e.on_rejected(&rejected(true), &rec).await.unwrap();
        e.on_rejected(&rejected(true), &rec).await.unwrap();
        let calls = j.calls();
        assert_eq!(calls.len(), 2, "one re-evaluation");
        assert_eq!(calls[1].vars["model"], "/m/g1.rrm");
        let args = ringrift_jobs::default_argv(&calls[1]).unwrap().join(" ");
        assert!(
            args.contains("--gate-canonical 0.5") && args.contains("--job-id evaluate:abc:c2"),
            "{args}"
        );
        let ids: Vec<_> = rec.events().iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids, ["eval:abc", "eval:abc:c2"]);
    }

    #[tokio::test]
    async fn a_bad_config_key_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = Evaluator::new(
            EvalConfig::default(),
            Gate::default(),
            jobs(),
            StateStore::open(dir.path(), &INFO).unwrap(),
        );
        let mut ev = trained("x");
        ev.config_key = "hex9_9p".into();
        let err = e.on_trained(&ev, &Recorded::default()).await.unwrap_err();
        assert!(err.to_string().contains("hex9_9p"), "{err}");
    }
}
