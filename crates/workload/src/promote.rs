//! Promotion: the gate on gauntlet results, and the atomic swap of the canonical model.
//!
//! A promotion verifies what it promotes: the candidate's payload SHA-256 must be the one
//! evaluated (the bytes checked are the bytes written), and the canonical model must still
//! be the one the candidate was compared with ([`WorkloadError::ModelChanged`],
//! [`WorkloadError::CanonicalChanged`]).
//!
//! Promoting backs up the current `models/canonical_{config}.rrm` (and its `.json`
//! sidecar) under `models/backup/`, copies the candidate over it atomically, writes the
//! sidecar (name, hashes, the evaluation that earned it) and points the
//! `models/ringrift_best_{config}` symlink at it by an atomic rename.

use crate::WorkloadError;
use crate::model::Model;
pub use ringrift_contracts::{EvaluateReport, Gate, GateDecision, PromotionReport, check_gate};
use ringrift_store::manifest::{atomic_copy, atomic_symlink, atomic_write};
use ringrift_store::{ConfigKey, paths};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
    /// The evaluation that earned the promotion, as written then (a record for people:
    /// sidecars of older homes hold reports of older shapes, so it is not read back as
    /// a typed report).
    pub evaluation: Option<serde_json::Value>,
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

/// Applies the gate and, if it passes, promotes `report.model`.
pub fn promote_if_passed(
    home: &Path,
    report: &EvaluateReport,
    gate: &Gate,
) -> Result<PromotionReport, WorkloadError> {
    let decision = check_gate(report.results.iter().map(|r| r.score()), gate);
    if !decision.passed {
        return Ok(PromotionReport {
            promoted: false,
            decision,
            canonical: None,
            backup: None,
            link: None,
        });
    }
    let mut r = promote(
        home,
        report.config_key,
        &report.model,
        &report.model_name,
        &report.model_sha256,
        report.canonical_sha256.as_deref(),
        Some(report),
    )?;
    r.decision = decision;
    Ok(r)
}

/// Promotes `model` (labelled `name`) to the canonical model of `config` (callers check
/// the gate) if its payload SHA-256 is `model_sha256` and the canonical model is still
/// the one of payload SHA-256 `canonical_sha256` (`None`: there was none): backup, atomic
/// write of the bytes verified, sidecar (with the `evaluation` that earned it, when the
/// caller has the whole report), atomic symlink.
pub fn promote(
    home: &Path,
    config: ConfigKey,
    model: &Path,
    name: &str,
    model_sha256: &str,
    canonical_sha256: Option<&str>,
    evaluation: Option<&EvaluateReport>,
) -> Result<PromotionReport, WorkloadError> {
    let bytes = std::fs::read(model).map_err(|e| WorkloadError::io("read model", model, e))?;
    let (_, header) = Model::from_bytes(model, &bytes)?;
    if header.payload_sha256 != model_sha256 {
        return Err(WorkloadError::ModelChanged {
            path: model.to_path_buf(),
            found: header.payload_sha256,
            evaluated: model_sha256.to_owned(),
        });
    }
    let current = canonical(home, config)?.map(|c| c.sha256);
    if current.as_deref() != canonical_sha256 {
        return Err(WorkloadError::CanonicalChanged {
            found: current,
            evaluated: canonical_sha256.map(str::to_owned),
        });
    }
    if header.config_key != config {
        return Err(WorkloadError::BadModel {
            path: model.to_path_buf(),
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
    atomic_write(&target, &bytes)?;
    let file_sha256 = ringrift_store::manifest::sha256_hex(&bytes);
    // Re-read what landed: a promotion never leaves an unreadable canonical model.
    let (_, landed) = Model::load(&target)?;
    let c = Canonical {
        name: name.to_owned(),
        path: target.clone(),
        sha256: landed.payload_sha256,
        file_sha256,
        generation: landed.generation,
        promoted_at: ringrift_store::now_ms(),
        evaluation: evaluation
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| WorkloadError::Invalid(e.to_string()))?,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// unified_promotion used to write an evaluation without `by_seat` and
    /// `stopped_early`; such a sidecar still names the canonical model.
    #[test]
    fn a_sidecar_with_an_older_evaluation_still_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key: ConfigKey = "hex8_2p".parse().expect("key");
        std::fs::create_dir_all(paths::models_dir(dir.path())).expect("models dir");
        std::fs::write(canonical_path(dir.path(), key), b"model").expect("model");
        let sidecar = serde_json::json!({
            "name": "gen1", "path": "/m/canonical_hex8_2p.rrm", "sha256": "ab",
            "file_sha256": "cd", "generation": 1, "promoted_at": 5,
            "evaluation": {"config_key": "hex8_2p", "results": [{"opponent": "random", "games": 10}]},
        });
        std::fs::write(
            sidecar_path(dir.path(), key),
            serde_json::to_vec(&sidecar).expect("json"),
        )
        .expect("sidecar");
        let c = canonical(dir.path(), key)
            .expect("readable")
            .expect("present");
        assert_eq!((c.name.as_str(), c.sha256.as_str()), ("gen1", "ab"));
    }
}
