//! The promotion gate: thresholds ([`Gate`]) and the verdict on a gauntlet
//! ([`check_gate`]). Shared by the workload (`evaluate --promote`, early rejection), the
//! evaluation daemon (early rejection) and unified_promotion (the decision).

use crate::report::{HEURISTIC_ID, OpponentResult, RANDOM_ID};
use serde::{Deserialize, Serialize};

/// Promotion thresholds. Defaults are the seed's: lower 95 % bound of the win rate
/// ≥ 0.85 vs random and ≥ 0.60 vs heuristic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
pub struct GateDecision {
    pub passed: bool,
    pub reasons: Vec<String>,
}

/// What the gate reads of a result against one opponent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score<'a> {
    pub opponent: &'a str,
    pub games: u64,
    pub win_rate: f64,
    pub lower95: f64,
}

impl OpponentResult {
    pub fn score(&self) -> Score<'_> {
        Score {
            opponent: &self.opponent,
            games: self.games,
            win_rate: self.win_rate,
            lower95: self.lower95,
        }
    }
}

/// Checks gauntlet results against the gate. A missing anchor opponent (random,
/// heuristic) fails its condition; any other opponent is a canonical model and must be
/// matched on the point win rate.
pub fn check_gate<'a>(results: impl IntoIterator<Item = Score<'a>>, gate: &Gate) -> GateDecision {
    let results: Vec<Score<'a>> = results.into_iter().collect();
    let mut reasons = Vec::new();
    let mut bound = |opponent: &str, min: f64| match results.iter().find(|r| r.opponent == opponent)
    {
        None => reasons.push(format!("no games against {opponent}")),
        Some(r) if r.lower95 < min => reasons.push(format!(
            "vs {opponent}: lower 95% bound {:.3} < {min:.2} (win rate {:.3} over {} games)",
            r.lower95, r.win_rate, r.games
        )),
        Some(_) => {}
    };
    bound(RANDOM_ID, gate.min_lower_vs_random);
    bound(HEURISTIC_ID, gate.min_lower_vs_heuristic);
    for r in results
        .iter()
        .filter(|r| ![RANDOM_ID, HEURISTIC_ID].contains(&r.opponent))
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
