//! `unified_promotion` (legacy alias `auto_promotion`): on EVALUATION_COMPLETED applies
//! the promotion gate (lower 95 % bound of the win rate ≥ 0.85 vs random and ≥ 0.60 vs
//! heuristic, and ≥ 0.5 vs the current canonical; configurable) and either promotes
//! atomically (backup of the current canonical, atomic write of the verified bytes to
//! `models/canonical_<config>.rrm`, atomic `ringrift_best_<config>` symlink) and
//! publishes MODEL_PROMOTED, or publishes PROMOTION_REJECTED with every failed reason.
//! It promotes only what was evaluated: a file whose payload SHA-256 is not the event's
//! is rejected, and so is a candidate compared with a canonical model that has been
//! replaced since ("canonical changed since evaluation"; the rejection asks the
//! evaluation daemon to play it again against the new canonical, `reevaluate`).
//! Decisions are persisted by model SHA-256 and the canonical it was compared with: a
//! redelivered evaluation decides nothing twice.
//!
//! The candidate is promoted from a local copy: an evaluation published by another node
//! (`evaluation@<node>`) whose `model_path` is not a readable file in this home (the
//! model was trained and evaluated there, under that node's `models/`) is fetched first
//! from that node's data_server (`ringrift_transfer::model_fetch`: file SHA-256 from its
//! manifest, verified, into `models/.incoming/`), and that copy is promoted; the payload
//! SHA-256 check and the fence are the same. A failed fetch nacks the evaluation (it is
//! retried with backoff), it is not a rejection.
//!
//! A leader-only duty: it decides only while this node leads, confirms the leader's
//! token right before the canonical write, and the write itself carries the token: the
//! model store swaps the canonical model only if no higher token has written it
//! (`ringrift_store::models::Fence`), so a leader deposed between its confirmation and
//! the swap changes nothing. A token refused by either skips the promotion (a warning
//! naming the tokens, `fence_refused` in health) and leaves the evaluation undecided. An
//! evaluation that
//! arrives while this node does not lead is nacked on a node-local event log and ignored
//! on a shared one ([`ringrift_cluster::duty`]).

use handler_base::StatusLine;
use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use handler_base::{Publish, event};
use ringrift_cluster::Leader;
use ringrift_cluster::duty::LeaderDuty;
use ringrift_contracts::{Gate, check_gate};
use ringrift_ledger::{Ledger, Promotion, PromotionWriter, StateStore};
use ringrift_loop::convert;
use ringrift_loop::gate::PromotionConfig;
use ringrift_proto::{Event, EventType, wire};
use ringrift_store::models::{Fence, promote};
use ringrift_store::{ConfigKey, StoreError};
use ringrift_transfer::model_fetch::fetch_model_at;
use ringrift_transfer::{Setup, TransferSettings, node_of};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub const INFO: DaemonInfo = DaemonInfo {
    name: "unified_promotion",
    about: "Promote models that pass the gate",
    cycle_interval_s: Some(60.0),
    scope: Some(Scope::Cluster),
};

/// A persisted decision.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Decided {
    pub promoted: bool,
    pub reason: String,
    pub at_ms: i64,
    /// The SPRT against the canonical model, when one was played.
    #[serde(default)]
    pub sprt: Option<ringrift_contracts::SprtState>,
}

pub struct Promoter {
    pub gate: Gate,
    pub home: PathBuf,
    pub state: StateStore,
    /// The decisions others read (the dashboard, recovery).
    ledger: PromotionWriter,
    pub duty: LeaderDuty,
    status: StatusLine,
    /// This node and its view of the others' data servers (`None`: models are only
    /// ever read where the event says).
    remote: Option<(String, Setup)>,
    /// Candidates fetched from the node that evaluated them.
    fetched: AtomicU64,
}

/// The file promotion reads: the event's path, or a copy fetched from another node
/// (removed once the promotion is done with it).
struct Candidate {
    path: PathBuf,
    fetched: bool,
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
    pub fn new(
        gate: Gate,
        home: PathBuf,
        state: StateStore,
        ledger: PromotionWriter,
        duty: LeaderDuty,
    ) -> Self {
        Promoter {
            gate,
            home,
            state,
            ledger,
            duty,
            status: StatusLine::new("waiting for evaluations"),
            remote: None,
            fetched: AtomicU64::new(0),
        }
    }

    /// Fetches candidates evaluated on other nodes through `setup` (this node: `node`).
    pub fn with_remote(mut self, node: &str, setup: Setup) -> Self {
        self.remote = Some((node.to_owned(), setup));
        self
    }

    /// The file to promote for `e` (published as `source`): its path when it is a
    /// readable file in this home, or when it comes from this node or no known peer;
    /// else a copy fetched from the node that published it. A failed fetch is an error
    /// (the evaluation is nacked and retried).
    async fn candidate(
        &self,
        source: &str,
        e: &wire::EvaluationCompleted,
    ) -> anyhow::Result<Candidate> {
        let path = PathBuf::from(&e.model_path);
        let (p, home) = (path.clone(), self.home.clone());
        let (readable, here) = tokio::task::spawn_blocking(move || {
            let readable = p.is_file();
            (readable, readable && p.starts_with(&home))
        })
        .await?;
        let local = Candidate {
            path,
            fetched: false,
        };
        let Some((this, setup)) = &self.remote else {
            return Ok(local);
        };
        let from = match node_of(source) {
            Some(n) if n != this && !here => n,
            _ => return Ok(local),
        };
        let Some(peer) = setup.peer(from) else {
            anyhow::ensure!(
                readable,
                "the model {} was evaluated on {from}, a node not in cluster.toml, and is not readable here",
                e.model_path
            );
            return Ok(local);
        };
        let got = fetch_model_at(&setup.engine, &peer, &self.home, &e.model_path)
            .await
            .map_err(|err| {
                anyhow::anyhow!(
                    "fetch the evaluated model {} from {from} ({}): {err}",
                    e.model_path,
                    peer.url
                )
            })?;
        self.fetched.fetch_add(1, Ordering::Relaxed);
        tracing::info!(model = %e.model_path, node = %from, copy = %got.path.display(), bytes = got.downloaded, "evaluated model fetched from the node that evaluated it");
        Ok(Candidate {
            path: got.path,
            fetched: true,
        })
    }

    pub async fn on_evaluation(&self, ev: &Event, emit: &dyn Publish) -> anyhow::Result<()> {
        let wire::event::Payload::EvaluationCompleted(e) = &ev.payload else {
            return Ok(());
        };
        let id = if e.model_sha256.is_empty() {
            &e.model_path
        } else {
            &e.model_sha256
        };
        // An evaluation against a canonical model is its own decision: a re-evaluation
        // after the canonical changed is decided again.
        let id = if e.canonical_sha256.is_empty() {
            id.clone()
        } else {
            format!("{id}:{}", e.canonical_sha256)
        };
        let key = format!("decided:{id}");
        if let Some(d) = self.state.get::<Decided>(&key).await? {
            tracing::info!(model = %e.model_path, promoted = d.promoted, "already decided; not deciding again");
            return Ok(());
        }
        let what = format!("EVALUATION_COMPLETED #{} ({})", ev.seq, e.model_path);
        let leader = self.duty.for_event(&what).await?;
        // Decided by an earlier leader (killed after its swap, before its ack, so the
        // event came here): the decision record is that node's, but the model is, or
        // was, canonical here (model_sync installed it). Deciding again would reject it
        // as "canonical changed" and have it re-evaluated against itself.
        if !e.model_sha256.is_empty() {
            let config = config_of(ev)?;
            let (home, sha) = (self.home.clone(), e.model_sha256.clone());
            let promoted_before = tokio::task::spawn_blocking(move || {
                ringrift_store::models::was_canonical(&home, config, &sha)
            })
            .await??;
            if promoted_before {
                tracing::info!(model = %e.model_path, "already promoted (canonical here now or before); not deciding again");
                let d = Decided {
                    promoted: true,
                    reason: "already promoted (by an earlier leader)".into(),
                    at_ms: ringrift_store::now_ms(),
                    sprt: None,
                };
                self.record(config, &id, e, &d).await?;
                self.state.put(&key, &d).await?;
                return Ok(());
            }
        }
        self.decide(ev, e, &key, &id, &leader, emit).await
    }

    /// Decides an evaluation as `leader` (read when the event arrived).
    async fn decide(
        &self,
        ev: &Event,
        e: &wire::EvaluationCompleted,
        key: &str,
        id: &str,
        leader: &Leader,
        emit: &dyn Publish,
    ) -> anyhow::Result<()> {
        let config = config_of(ev)?;
        let decision = check_gate(
            e.results.iter().map(convert::score_of_wire),
            &self.gate,
            config.players(),
        );
        let (sprt_llr, sprt_games) = decision
            .sprt
            .map(|s| (s.llr, u32::try_from(s.games).unwrap_or(u32::MAX)))
            .unwrap_or_default();
        let sha = e.model_sha256.clone();
        let evaluated_canonical =
            (!e.canonical_sha256.is_empty()).then(|| e.canonical_sha256.clone());
        // Rejected: the reason, whether to play it again, the canonical it was against.
        let rejected = if decision.passed {
            let what = format!("promote {} into canonical_{config}", e.model_path);
            let candidate = self.candidate(&ev.source, e).await?;
            if !self.duty.confirm(leader, &what).await? {
                self.status.set(format!(
                    "deposed (token {} refused): {} not promoted",
                    leader.token, e.model_path
                ));
                remove_copy(&candidate).await;
                return Err(self.duty.not_leading(&what));
            }
            let home = self.home.clone();
            let (model, name) = (candidate.path.clone(), stem(&e.model_path));
            let expected = (sha.clone(), evaluated_canonical.clone());
            let fence = Fence::Leader(leader.token);
            let outcome = tokio::task::spawn_blocking(move || {
                promote(
                    &home,
                    config,
                    &model,
                    &name,
                    &expected.0,
                    expected.1.as_deref(),
                    None,
                    fence,
                )
            })
            .await;
            remove_copy(&candidate).await;
            let outcome = outcome?;
            match outcome {
                Ok(pr) => {
                    let canonical = pr
                        .canonical
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    let p = wire::ModelPromoted {
                        model_path: e.model_path.clone(),
                        canonical_path: canonical.clone(),
                        model_sha256: sha.clone(),
                        previous_sha256: e.canonical_sha256.clone(),
                        elo: e.elo,
                        sprt_llr,
                        sprt_games,
                    };
                    emit.publish_acked(event(
                        wire::event::Payload::ModelPromoted(p),
                        format!("promoted:{sha}"),
                        &ev.config_key,
                    ))
                    .await?;
                    tracing::info!(config = %ev.config_key, model = %e.model_path, canonical = %canonical, sprt_llr, sprt_games, "MODEL_PROMOTED: gate passed");
                    None
                }
                Err(err @ StoreError::Fenced { .. }) => {
                    // Deposed between the confirmation and the swap: a newer leader has
                    // written the canonical model; nothing was changed.
                    self.duty.refused_by_store(&what, &err);
                    self.status
                        .set(format!("deposed ({err}): {} not promoted", e.model_path));
                    return Err(self.duty.not_leading(&format!("{what}: {err}")));
                }
                Err(err @ StoreError::ModelChanged { .. }) => {
                    Some((err.to_string(), false, e.canonical_sha256.clone()))
                }
                Err(StoreError::CanonicalChanged { found, evaluated }) => {
                    let reason = StoreError::CanonicalChanged {
                        found: found.clone(),
                        evaluated,
                    }
                    .to_string();
                    Some((reason, true, found.unwrap_or_default()))
                }
                Err(err) => return Err(err.into()),
            }
        } else {
            Some((
                decision.reasons.join("; "),
                false,
                e.canonical_sha256.clone(),
            ))
        };
        let promoted = rejected.is_none();
        let reason = match rejected {
            None => "gate passed".to_owned(),
            Some((reason, reevaluate, canonical_now)) => {
                let p = wire::PromotionRejected {
                    model_path: e.model_path.clone(),
                    reason: reason.clone(),
                    model_sha256: sha.clone(),
                    canonical_sha256: canonical_now,
                    reevaluate,
                    run_id: e.run_id.clone(),
                    sprt_llr,
                    sprt_games,
                };
                emit.publish_acked(event(
                    wire::event::Payload::PromotionRejected(p),
                    format!("rejected:{id}"),
                    &ev.config_key,
                ))
                .await?;
                tracing::info!(config = %ev.config_key, model = %e.model_path, %reason, reevaluate, "PROMOTION_REJECTED");
                reason
            }
        };
        self.status.set(format!(
            "{}: {}",
            e.model_path,
            if promoted { "promoted" } else { "rejected" }
        ));
        let d = Decided {
            promoted,
            reason,
            at_ms: ringrift_store::now_ms(),
            sprt: decision.sprt,
        };
        self.record(config, id, e, &d).await?;
        self.state.put(key, &d).await?;
        Ok(())
    }

    /// Puts the decision `d` on the evaluation `e` (decision id `id`) in the ledger,
    /// before it is saved as decided, so a crash between the two repeats the (idempotent)
    /// ledger write rather than skipping it.
    async fn record(
        &self,
        config: ConfigKey,
        id: &str,
        e: &wire::EvaluationCompleted,
        d: &Decided,
    ) -> anyhow::Result<()> {
        self.ledger
            .record(&Promotion {
                decision: id.to_owned(),
                config,
                model: e.model_path.clone(),
                model_sha256: e.model_sha256.clone(),
                promoted: d.promoted,
                reason: d.reason.clone(),
                at_ms: d.at_ms,
            })
            .await?;
        Ok(())
    }
}

/// The file stem of a model path (the name its promotion records).
fn stem(path: &str) -> String {
    Path::new(path)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Removes a fetched copy (the promotion copied what it keeps); a path of the event is
/// left alone.
async fn remove_copy(c: &Candidate) {
    if c.fetched {
        let p = c.path.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(p)).await;
    }
}

pub struct UnifiedPromotion(pub Promoter);

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let c = PromotionConfig::load(ctx)?;
    let gate = c.gate;
    let state = StateStore::open(&ctx.home, &INFO)?;
    let ledger = Ledger::open(&ctx.home)?.promoter(&INFO)?;
    let duty = LeaderDuty::from_ctx(ctx)?;
    let setup = Setup::new(ctx, INFO.name, TransferSettings::default())?;
    Ok(Arc::new(UnifiedPromotion(
        Promoter::new(gate, ctx.home.clone(), state, ledger, duty).with_remote(&ctx.node, setup),
    )))
}

#[async_trait::async_trait]
impl Handler for UnifiedPromotion {
    /// A leader duty on one consumer for the cluster: only the leader's copy pulls.
    fn pull_gate(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        Some(self.0.duty.pull_gate())
    }
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
        self.0.on_evaluation(ev, &*ctx.publisher).await
    }
    fn health_check(&self) -> HealthCheckResult {
        HealthCheckResult::running(self.0.status.get())
            .detail("gate", self.0.gate.summary())
            .detail("fence_refused", self.0.duty.refused())
            .detail("fetched", self.0.fetched.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod in_process;
#[cfg(test)]
mod tests {
    use super::*;
    use handler_base::Recorded;
    use ringrift_cluster::Leadership;

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
            ..Default::default()
        };
        Event::new(wire::event::Payload::EvaluationCompleted(e)).with_config("hex8_2p")
    }

    #[tokio::test]
    async fn failing_gate_is_rejected_with_every_reason_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = promoter(dir.path());
        let rec = Recorded::default();
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
        // Others read the decision in the ledger.
        let key: ConfigKey = "hex8_2p".parse().unwrap();
        let ds = Ledger::open(dir.path())
            .unwrap()
            .promotions(key, 10)
            .await
            .unwrap();
        assert!(
            matches!(&ds[..], [d] if !d.promoted && d.reason == r.reason),
            "{ds:?}"
        );
    }

    #[tokio::test]
    async fn passing_gate_with_a_missing_model_fails_loudly_and_decides_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = promoter(dir.path());
        let rec = Recorded::default();
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

    /// A model file in `dir` whose payload is `seed`'s bytes (written through the
    /// store's `.rrm` encoder; promotion never decodes the weights); returns its path
    /// and payload SHA-256.
    fn model(dir: &std::path::Path, name: &str, seed: u64) -> (PathBuf, String) {
        let (h, bytes) =
            ringrift_store::models::example("hex8_2p".parse().unwrap(), 1, &seed.to_le_bytes())
                .unwrap();
        let path = dir.join(format!("{name}.rrm"));
        std::fs::write(&path, bytes).unwrap();
        (path, h.payload_sha256)
    }

    fn passing(path: &std::path::Path, sha: &str, canonical_sha: &str) -> Event {
        let mut ev = evaluation(0.95, 0.70);
        let wire::event::Payload::EvaluationCompleted(e) = &mut ev.payload else {
            unreachable!()
        };
        e.model_path = path.display().to_string();
        e.model_sha256 = sha.into();
        e.canonical_sha256 = canonical_sha.into();
        ev
    }

    fn promoter(dir: &std::path::Path) -> Promoter {
        promoter_as(dir, "me")
    }

    /// A promoter of node `this` on a cluster led by "me" with token 7.
    fn promoter_as(dir: &std::path::Path, this: &str) -> Promoter {
        let me = Leader {
            node: "me".into(),
            token: 7,
        };
        Promoter::new(
            Gate::default(),
            dir.to_owned(),
            StateStore::open(dir, &INFO).unwrap(),
            Ledger::open(dir).unwrap().promoter(&INFO).unwrap(),
            LeaderDuty::new(Leadership::fixed(this, Some(me))),
        )
    }

    fn canonical_sha(dir: &std::path::Path) -> Option<String> {
        let key: ConfigKey = "hex8_2p".parse().unwrap();
        ringrift_store::models::canonical(dir, key)
            .unwrap()
            .map(|c| c.sha256)
    }

    /// An evaluation an earlier leader decided and swapped in, redelivered to a new
    /// leader (the old one killed before its ack) whose home has the model from
    /// model_sync, now or in its backups: recorded as promoted, no second decision (it
    /// was rejected as "canonical changed" and re-evaluated against itself).
    #[tokio::test]
    async fn an_evaluation_promoted_by_an_earlier_leader_is_not_decided_again() {
        let dir = tempfile::tempdir().unwrap();
        let key: ConfigKey = "hex8_2p".parse().unwrap();
        let (x, x_sha) = model(dir.path(), "x", 1);
        let (y, y_sha) = model(dir.path(), "y", 2);
        // As model_sync installs the earlier leader's promotions here: x, then y over it.
        for (m, sha, before) in [(&x, &x_sha, None), (&y, &y_sha, Some(x_sha.as_str()))] {
            promote(dir.path(), key, m, "m", sha, before, None, Fence::Replica).unwrap();
        }
        let p = promoter(dir.path());
        let rec = Recorded::default();
        // y is canonical here; x was (a backup).
        p.on_evaluation(&passing(&y, &y_sha, &x_sha), &rec)
            .await
            .unwrap();
        p.on_evaluation(&passing(&x, &x_sha, ""), &rec)
            .await
            .unwrap();
        assert!(rec.events().is_empty(), "{:?}", rec.events());
        assert_eq!(canonical_sha(dir.path()), Some(y_sha.clone()));
        for k in [
            format!("decided:{y_sha}:{x_sha}"),
            format!("decided:{x_sha}"),
        ] {
            let d = p.state.get::<Decided>(&k).await.unwrap();
            assert!(d.is_some_and(|d| d.promoted), "{k}");
        }
    }

    /// The file at the event's path is not the model that was evaluated (overwritten
    /// since): it is rejected, not promoted.
    #[tokio::test]
    async fn a_file_that_is_not_the_evaluated_model_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = model(dir.path(), "a", 1);
        let (_, sha_b) = model(dir.path(), "b", 2);
        let rec = Recorded::default();
        promoter(dir.path())
            .on_evaluation(&passing(&a, &sha_b, ""), &rec)
            .await
            .unwrap();
        let evs = rec.events();
        let wire::event::Payload::PromotionRejected(r) = &evs[0].payload else {
            panic!("{:?}", evs[0])
        };
        assert!(
            r.reason.contains(&format!("but {sha_b} was evaluated")),
            "{}",
            r.reason
        );
        assert!(!r.reevaluate);
        assert_eq!(canonical_sha(dir.path()), None, "nothing promoted");
    }

    /// Evaluated against canonical A, promoted A → B in the meantime: the candidate is
    /// rejected with "canonical changed since evaluation" and a re-evaluation request
    /// naming B; evaluated against B, it is promoted, B being the previous canonical.
    #[tokio::test]
    async fn a_canonical_changed_since_evaluation_is_refused_and_reevaluated() {
        let dir = tempfile::tempdir().unwrap();
        let (a, sha_a) = model(dir.path(), "a", 1);
        let (b, sha_b) = model(dir.path(), "b", 2);
        let (c, sha_c) = model(dir.path(), "c", 3);
        let p = promoter(dir.path());
        let rec = Recorded::default();
        p.on_evaluation(&passing(&a, &sha_a, ""), &rec)
            .await
            .unwrap();
        p.on_evaluation(&passing(&b, &sha_b, &sha_a), &rec)
            .await
            .unwrap();
        assert_eq!(canonical_sha(dir.path()), Some(sha_b.clone()));
        // c was evaluated while a was canonical.
        p.on_evaluation(&passing(&c, &sha_c, &sha_a), &rec)
            .await
            .unwrap();
        assert_eq!(
            canonical_sha(dir.path()),
            Some(sha_b.clone()),
            "c not promoted"
        );
        let evs = rec.events();
        let wire::event::Payload::PromotionRejected(r) = &evs[2].payload else {
            panic!("{:?}", evs[2])
        };
        assert!(
            r.reason.contains("canonical changed since evaluation"),
            "{}",
            r.reason
        );
        assert!(r.reevaluate);
        assert_eq!(
            (r.model_sha256.as_str(), r.canonical_sha256.as_str()),
            (sha_c.as_str(), sha_b.as_str())
        );
        // The re-evaluation against b is a new decision.
        p.on_evaluation(&passing(&c, &sha_c, &sha_b), &rec)
            .await
            .unwrap();
        assert_eq!(canonical_sha(dir.path()), Some(sha_c.clone()));
        let evs = rec.events();
        let wire::event::Payload::ModelPromoted(m) = &evs[3].payload else {
            panic!("{:?}", evs[3])
        };
        assert_eq!(m.previous_sha256, sha_b);
    }

    /// A follower nacks a passing evaluation that reaches it (nothing promoted, nothing
    /// decided, so the redelivery is decided), never acks it. Once this node leads, the
    /// redelivered evaluation is promoted.
    #[tokio::test]
    async fn a_follower_nacks_and_the_leader_promotes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, sha_a) = model(dir.path(), "a", 1);
        let ev = passing(&a, &sha_a, "");
        let rec = Recorded::default();
        let err = promoter_as(dir.path(), "other")
            .on_evaluation(&ev, &rec)
            .await
            .expect_err("nacked for redelivery");
        assert!(err.to_string().contains("does not lead"), "{err}");
        assert!(rec.events().is_empty(), "{:?}", rec.events());
        assert_eq!(
            canonical_sha(dir.path()),
            None,
            "a follower promotes nothing"
        );
        promoter(dir.path()).on_evaluation(&ev, &rec).await.unwrap();
        assert_eq!(canonical_sha(dir.path()), Some(sha_a));
        assert!(matches!(
            &rec.events()[..],
            [e] if matches!(e.payload, wire::event::Payload::ModelPromoted(_))
        ));
    }

    /// A deposed leader (its token from when the evaluation arrived is no longer the
    /// leader's) writes no canonical model, counts the refusal and leaves the evaluation
    /// undecided.
    #[tokio::test]
    async fn a_refused_token_promotes_nothing_and_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (a, sha_a) = model(dir.path(), "a", 1);
        let ev = passing(&a, &sha_a, "");
        let wire::event::Payload::EvaluationCompleted(e) = &ev.payload else {
            unreachable!()
        };
        let p = promoter(dir.path());
        let stale = Leader {
            node: "me".into(),
            token: 6,
        };
        let rec = Recorded::default();
        let err = p
            .decide(&ev, e, "decided:x", "x", &stale, &rec)
            .await
            .expect_err("nacked");
        assert!(err.to_string().contains("does not lead"), "{err}");
        assert_eq!(canonical_sha(dir.path()), None, "nothing promoted");
        assert!(rec.events().is_empty());
        assert!(p.state.get::<Decided>("decided:x").await.unwrap().is_none());
        assert_eq!(
            UnifiedPromotion(p).health_check().details["fence_refused"],
            "1"
        );
    }

    /// Node "me" passed its confirmation with token 7 (its leadership still says so),
    /// but another node has since led with token 8 and written the canonical model a
    /// (the candidate b was evaluated against a, so the SHA check passes): the swap is
    /// refused by the store, the canonical model stays a, the refusal names both tokens
    /// and is counted, nothing is published and the evaluation stays undecided.
    #[tokio::test]
    async fn a_deposed_leader_does_not_change_the_canonical_model() {
        let dir = tempfile::tempdir().unwrap();
        let (a, sha_a) = model(dir.path(), "a", 1);
        let (b, sha_b) = model(dir.path(), "b", 2);
        let key: ConfigKey = "hex8_2p".parse().unwrap();
        let (home, a2, sha) = (dir.path().to_owned(), a.clone(), sha_a.clone());
        tokio::task::spawn_blocking(move || {
            promote(&home, key, &a2, "a", &sha, None, None, Fence::Leader(8))
        })
        .await
        .unwrap()
        .expect("the newer leader promotes a");
        let p = promoter(dir.path());
        let rec = Recorded::default();
        let err = p
            .on_evaluation(&passing(&b, &sha_b, &sha_a), &rec)
            .await
            .expect_err("nacked: refused by the store");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("token 7") && msg.contains("token 8"),
            "the error names both tokens: {msg}"
        );
        assert_eq!(
            canonical_sha(dir.path()),
            Some(sha_a),
            "canonical unchanged"
        );
        assert!(rec.events().is_empty(), "{:?}", rec.events());
        assert!(
            p.state
                .get::<Decided>(&format!(
                    "decided:{sha_b}:{}",
                    canonical_sha(dir.path()).unwrap()
                ))
                .await
                .unwrap()
                .is_none(),
            "undecided"
        );
        assert_eq!(
            UnifiedPromotion(p).health_check().details["fence_refused"],
            "1"
        );
    }

    #[test]
    fn a_bad_config_key_is_an_error_naming_it() {
        let mut bad = evaluation(0.9, 0.7);
        bad.config_key = "go19_2p".into();
        assert!(config_of(&bad).unwrap_err().to_string().contains("go19_2p"));
    }
}
