//! `unified_promotion` (legacy alias `auto_promotion`): on EVALUATION_COMPLETED applies
//! the promotion gate (lower 95 % bound of the win rate ≥ 0.85 vs random and ≥ 0.60 vs
//! heuristic, point win rate ≥ 0.5 vs the current canonical; configurable) and either
//! promotes atomically (backup of the current canonical, atomic copy to
//! `models/canonical_<config>.rrm`, atomic `ringrift_best_<config>` symlink) and
//! publishes MODEL_PROMOTED, or publishes PROMOTION_REJECTED with every failed reason.
//! Decisions are persisted by model SHA-256: a redelivered evaluation decides nothing twice.

use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use ringrift_contracts::{Gate, check_gate};
use ringrift_pipeline::convert;
use ringrift_pipeline::emit::{Emit, event};
use ringrift_pipeline::gate::PromotionConfig;
use ringrift_pipeline::state::StateStore;
use ringrift_pipeline::status::StatusLine;
use ringrift_proto::{Event, EventType, wire};
use ringrift_store::ConfigKey;
use ringrift_workload::promote::promote;
use std::path::PathBuf;
use std::sync::Arc;

pub const INFO: DaemonInfo = DaemonInfo {
    name: "unified_promotion",
    about: "Promote models that pass the gate",
};

/// A persisted decision.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Decided {
    pub promoted: bool,
    pub reason: String,
    pub at_ms: i64,
}

pub struct Promoter {
    pub gate: Gate,
    pub home: PathBuf,
    pub state: StateStore,
    status: StatusLine,
}

/// The config key of an EVALUATION_COMPLETED event.
fn config_of(ev: &Event) -> anyhow::Result<ConfigKey> {
    ev.config_key.parse().map_err(|err| {
        anyhow::anyhow!(
            "EVALUATION_COMPLETED #{} has config key {:?}: {err}",
            ev.seq,
            ev.config_key
        )
    })
}

impl Promoter {
    pub fn new(gate: Gate, home: PathBuf, state: StateStore) -> Self {
        Promoter {
            gate,
            home,
            state,
            status: StatusLine::new("waiting for evaluations"),
        }
    }

    pub async fn on_evaluation(&self, ev: &Event, emit: &dyn Emit) -> anyhow::Result<()> {
        let wire::event::Payload::EvaluationCompleted(e) = &ev.payload else {
            return Ok(());
        };
        let key = format!(
            "decided:{}",
            if e.model_sha256.is_empty() {
                &e.model_path
            } else {
                &e.model_sha256
            }
        );
        if let Some(d) = self.state.get::<Decided>(&key).await? {
            tracing::info!(model = %e.model_path, promoted = d.promoted, "already decided; not deciding again");
            return Ok(());
        }
        let config = config_of(ev)?;
        let decision = check_gate(e.results.iter().map(convert::score_of_wire), &self.gate);
        let sha = e.model_sha256.clone();
        let (promoted, reason) = if decision.passed {
            let (home, model) = (self.home.clone(), PathBuf::from(&e.model_path));
            let previous = ringrift_workload::promote::canonical(&self.home, config)
                .ok()
                .flatten()
                .map(|c| c.sha256)
                .unwrap_or_default();
            let pr = tokio::task::spawn_blocking(move || {
                let name = model.display().to_string();
                promote(&home, config, &model, &name, None)
            })
            .await??;
            let canonical = pr
                .canonical
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let p = wire::ModelPromoted {
                model_path: e.model_path.clone(),
                canonical_path: canonical.clone(),
                model_sha256: sha.clone(),
                previous_sha256: previous,
                elo: e.elo,
            };
            emit.emit(event(
                wire::event::Payload::ModelPromoted(p),
                format!("promoted:{sha}"),
                &ev.config_key,
            ))
            .await?;
            tracing::info!(config = %ev.config_key, model = %e.model_path, canonical = %canonical, "MODEL_PROMOTED: gate passed");
            (true, "gate passed".to_owned())
        } else {
            let reason = decision.reasons.join("; ");
            let p = wire::PromotionRejected {
                model_path: e.model_path.clone(),
                reason: reason.clone(),
            };
            emit.emit(event(
                wire::event::Payload::PromotionRejected(p),
                format!("rejected:{sha}"),
                &ev.config_key,
            ))
            .await?;
            tracing::info!(config = %ev.config_key, model = %e.model_path, %reason, "PROMOTION_REJECTED");
            (false, reason)
        };
        self.status.set(format!(
            "{}: {}",
            e.model_path,
            if promoted { "promoted" } else { "rejected" }
        ));
        self.state
            .put(
                &key,
                &Decided {
                    promoted,
                    reason,
                    at_ms: ringrift_store::now_ms(),
                },
            )
            .await?;
        Ok(())
    }
}

pub struct UnifiedPromotion(pub Promoter);

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let c = PromotionConfig::load(ctx)?;
    let gate = c.gate;
    let state = StateStore::open(&ctx.home, INFO.name)?;
    Ok(Arc::new(UnifiedPromotion(Promoter::new(
        gate,
        ctx.home.clone(),
        state,
    ))))
}

#[async_trait::async_trait]
impl Handler for UnifiedPromotion {
    fn subscriptions(&self) -> Vec<EventType> {
        vec![EventType::EvaluationCompleted]
    }
    /// EVALUATION_COMPLETED is its only trigger (no cycle fallback): one published before
    /// its first subscribe must still be decided.
    fn replay_history(&self) -> bool {
        true
    }
    async fn run_cycle(&self, _ctx: &Context) -> anyhow::Result<()> {
        Ok(())
    }
    async fn handle_event(&self, ctx: &Context, ev: &Event) -> anyhow::Result<()> {
        self.0.on_evaluation(ev, &ctx.publisher).await
    }
    fn health_check(&self) -> HealthCheckResult {
        HealthCheckResult::running(self.0.status.get()).detail(
            "gate",
            format!(
                "random ≥ {:.2}, heuristic ≥ {:.2} (lower 95%)",
                self.0.gate.min_lower_vs_random, self.0.gate.min_lower_vs_heuristic
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringrift_pipeline::emit::Recorder;

    fn evaluation(lower_random: f64, lower_heuristic: f64) -> Event {
        let r = |o: &str, l: f64| wire::OpponentResult {
            opponent: o.into(),
            games: 100,
            wins: 90,
            win_rate: l + 0.05,
            lower_95: l,
            upper_95: l + 0.1,
            ..Default::default()
        };
        let e = wire::EvaluationCompleted {
            model_path: "/nonexistent/m.rrm".into(),
            model_sha256: "s1".into(),
            results: vec![r("random", lower_random), r("heuristic", lower_heuristic)],
            elo: 1500.0,
            run_id: "w".into(),
        };
        Event::new(wire::event::Payload::EvaluationCompleted(e)).with_config("hex8_2p")
    }

    #[tokio::test]
    async fn failing_gate_is_rejected_with_every_reason_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = Promoter::new(
            Gate::default(),
            dir.path().to_owned(),
            StateStore::open(dir.path(), "unified_promotion").unwrap(),
        );
        let rec = Recorder::default();
        p.on_evaluation(&evaluation(0.80, 0.30), &rec)
            .await
            .unwrap();
        p.on_evaluation(&evaluation(0.80, 0.30), &rec)
            .await
            .unwrap();
        let evs = rec.events();
        assert_eq!(evs.len(), 1, "decided once");
        let wire::event::Payload::PromotionRejected(r) = &evs[0].payload else {
            panic!("{:?}", evs[0])
        };
        assert!(
            r.reason.contains("vs random") && r.reason.contains("vs heuristic"),
            "{}",
            r.reason
        );
    }

    #[tokio::test]
    async fn passing_gate_with_a_missing_model_fails_loudly_and_decides_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = Promoter::new(
            Gate::default(),
            dir.path().to_owned(),
            StateStore::open(dir.path(), "unified_promotion").unwrap(),
        );
        let rec = Recorder::default();
        assert!(
            p.on_evaluation(&evaluation(0.95, 0.70), &rec)
                .await
                .is_err(),
            "no model file to promote"
        );
        assert!(rec.events().is_empty());
        assert!(
            p.state
                .get::<Decided>("decided:s1")
                .await
                .unwrap()
                .is_none(),
            "retried on redelivery"
        );
    }

    #[test]
    fn a_bad_config_key_is_an_error_naming_it() {
        let mut bad = evaluation(0.9, 0.7);
        bad.config_key = "go19_2p".into();
        assert!(config_of(&bad).unwrap_err().to_string().contains("go19_2p"));
    }
}
