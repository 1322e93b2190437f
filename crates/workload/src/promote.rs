//! Promotion: the gate on gauntlet results, and the atomic swap of the canonical model.
//!
//! Promoting backs up the current `models/canonical_{config}.rrm` (and its `.json`
//! sidecar) under `models/backup/`, copies the candidate over it atomically, writes the
//! sidecar (name, hashes, the evaluation that earned it) and points the
//! `models/ringrift_best_{config}` symlink at it by an atomic rename.

use crate::WorkloadError;
use crate::evaluate::EvaluateReport;
use crate::model::Model;
use ringrift_store::manifest::{atomic_copy, atomic_symlink, atomic_write};
use ringrift_store::{ConfigKey, paths};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Promotion thresholds. Defaults are the seed's: lower 95 % bound of the win rate
/// ≥ 0.85 vs random and ≥ 0.60 vs heuristic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    pub min_lower_vs_random: f64,
    pub min_lower_vs_heuristic: f64,
    /// Minimum point win rate against the current canonical model, when one was played
    /// (a candidate must not be worse than what it replaces).
    pub min_vs_canonical: f64,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            min_lower_vs_random: 0.85,
            min_lower_vs_heuristic: 0.60,
            min_vs_canonical: 0.5,
        }
    }
}

/// The gate's verdict, with a reason per failed condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateDecision {
    pub passed: bool,
    pub reasons: Vec<String>,
}

/// Checks an evaluation against the gate. A missing opponent fails its condition.
pub fn check_gate(report: &EvaluateReport, gate: &Gate) -> GateDecision {
    let mut reasons = Vec::new();
    let mut bound = |opponent: &str, min: f64| match report.against(opponent) {
        None => reasons.push(format!("no games against {opponent}")),
        Some(r) if r.lower95 < min => reasons.push(format!(
            "vs {opponent}: lower 95% bound {:.3} < {min:.2} (win rate {:.3} over {} games)",
            r.lower95, r.win_rate, r.games
        )),
        Some(_) => {}
    };
    bound(ringrift_store::elo::RANDOM_ID, gate.min_lower_vs_random);
    bound(
        ringrift_store::elo::HEURISTIC_ID,
        gate.min_lower_vs_heuristic,
    );
    let anchors = [
        ringrift_store::elo::RANDOM_ID,
        ringrift_store::elo::HEURISTIC_ID,
    ];
    for r in report
        .results
        .iter()
        .filter(|r| !anchors.contains(&r.opponent.as_str()))
    {
        if r.win_rate < gate.min_vs_canonical {
            reasons.push(format!(
                "vs canonical {}: win rate {:.3} < {:.2}",
                r.opponent, r.win_rate, gate.min_vs_canonical
            ));
        }
    }
    GateDecision {
        passed: reasons.is_empty(),
        reasons,
    }
}

/// The canonical model of a config as recorded in its sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canonical {
    pub name: String,
    pub path: PathBuf,
    /// Payload SHA-256 from the model header.
    pub sha256: String,
    pub file_sha256: String,
    pub generation: u32,
    pub promoted_at: i64,
    pub evaluation: Option<EvaluateReport>,
}

pub fn canonical_path(home: &Path, config: ConfigKey) -> PathBuf {
    paths::models_dir(home).join(format!("canonical_{config}.rrm"))
}

fn sidecar_path(home: &Path, config: ConfigKey) -> PathBuf {
    paths::models_dir(home).join(format!("canonical_{config}.json"))
}

pub fn best_link(home: &Path, config: ConfigKey) -> PathBuf {
    paths::models_dir(home).join(format!("ringrift_best_{config}"))
}

/// The current canonical model, if any (sidecar must be readable and match the file).
pub fn canonical(home: &Path, config: ConfigKey) -> Result<Option<Canonical>, WorkloadError> {
    let model = canonical_path(home, config);
    let sidecar = sidecar_path(home, config);
    if !model.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&sidecar)
        .map_err(|e| WorkloadError::io("read canonical sidecar", &sidecar, e))?;
    let c: Canonical = serde_json::from_slice(&bytes).map_err(|e| {
        WorkloadError::Invalid(format!(
            "canonical sidecar {} is not valid: {e}",
            sidecar.display()
        ))
    })?;
    Ok(Some(c))
}

/// What a promotion did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromotionReport {
    pub promoted: bool,
    pub decision: GateDecision,
    pub canonical: Option<PathBuf>,
    pub backup: Option<PathBuf>,
    pub link: Option<PathBuf>,
}

/// Applies the gate and, if it passes, promotes `report.model`.
pub fn promote_if_passed(
    home: &Path,
    report: &EvaluateReport,
    gate: &Gate,
) -> Result<PromotionReport, WorkloadError> {
    let decision = check_gate(report, gate);
    if !decision.passed {
        return Ok(PromotionReport {
            promoted: false,
            decision,
            canonical: None,
            backup: None,
            link: None,
        });
    }
    let mut r = promote(home, report)?;
    r.decision = decision;
    Ok(r)
}

/// Promotes unconditionally (callers check the gate): backup, atomic copy, sidecar,
/// atomic symlink.
pub fn promote(home: &Path, report: &EvaluateReport) -> Result<PromotionReport, WorkloadError> {
    let config = report.config_key;
    let (_, header) = Model::load(&report.model)?;
    if header.config_key != config {
        return Err(WorkloadError::BadModel {
            path: report.model.clone(),
            reason: format!(
                "model is for {}, promoting into {config}",
                header.config_key
            ),
        });
    }
    let target = canonical_path(home, config);
    let sidecar = sidecar_path(home, config);
    let mut backup = None;
    if target.exists() {
        let dir = paths::models_dir(home).join("backup");
        let stamp = ringrift_store::now_ms();
        let b = dir.join(format!("canonical_{config}.{stamp}.rrm"));
        atomic_copy(&target, &b)?;
        if sidecar.exists() {
            atomic_copy(
                &sidecar,
                &dir.join(format!("canonical_{config}.{stamp}.json")),
            )?;
        }
        backup = Some(b);
    }
    let file_sha256 = atomic_copy(&report.model, &target)?;
    // Re-read what landed: a promotion never leaves an unreadable canonical model.
    let (_, landed) = Model::load(&target)?;
    let c = Canonical {
        name: report.model_name.clone(),
        path: target.clone(),
        sha256: landed.payload_sha256,
        file_sha256,
        generation: landed.generation,
        promoted_at: ringrift_store::now_ms(),
        evaluation: Some(report.clone()),
    };
    let json = serde_json::to_vec_pretty(&c).map_err(|e| WorkloadError::Invalid(e.to_string()))?;
    atomic_write(&sidecar, &json)?;
    let link = best_link(home, config);
    let rel = target
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| target.clone());
    atomic_symlink(&rel, &link)?;
    Ok(PromotionReport {
        promoted: true,
        decision: GateDecision {
            passed: true,
            reasons: Vec::new(),
        },
        canonical: Some(target),
        backup,
        link: Some(link),
    })
}
