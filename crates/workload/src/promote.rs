//! Promotion job: the gate on a gauntlet report, then the verified atomic swap of the
//! canonical model, which lives with the models folder in `ringrift_store::models` (so
//! `unified_promotion` promotes without linking the engine).

use crate::WorkloadError;
pub use ringrift_contracts::{EvaluateReport, Gate, GateDecision, PromotionReport, check_gate};
pub use ringrift_store::models::{Canonical, Fence, best_link, canonical, canonical_path, promote};
use std::path::Path;

/// Applies the gate and, if it passes, promotes `report.model` as `fence` (a stale
/// leader token is `StoreError::Fenced`, nothing promoted).
pub fn promote_if_passed(
    home: &Path,
    report: &EvaluateReport,
    gate: &Gate,
    fence: Fence,
) -> Result<PromotionReport, WorkloadError> {
    let decision = check_gate(
        report.results.iter().map(|r| r.score()),
        gate,
        report.config_key.players(),
    );
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
        fence,
    )?;
    r.decision = decision;
    Ok(r)
}
