//! The promotion gate: thresholds ([`Gate`]) and the verdict on a gauntlet
//! ([`check_gate`]). Shared by the workload (`evaluate --promote`, early rejection), the
//! evaluation daemon (early rejection) and unified_promotion (the decision).

use crate::report::{HEURISTIC_ID, OpponentResult, RANDOM_ID};
use serde::{Deserialize, Serialize};

/// Promotion thresholds, each on the Wilson lower 95 % bound of the candidate's score
/// (wins + draws/2 over games). Defaults are the seed's: ≥ 0.85 vs random and ≥ 0.60 vs
/// heuristic; and ≥ 0.5 vs the current canonical model, i.e. the candidate must be
/// better than what it replaces with 95 % confidence, not merely score half a small
/// sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gate {
    pub min_lower_vs_random: f64,
    pub min_lower_vs_heuristic: f64,
    /// Minimum Wilson lower 95 % bound against the current canonical model, when one
    /// was played (0.5: significantly better than it; lower values trade confidence for
    /// fewer games, 0 disables the check).
    pub min_lower_vs_canonical: f64,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            min_lower_vs_random: 0.85,
            min_lower_vs_heuristic: 0.60,
            min_lower_vs_canonical: 0.5,
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
/// heuristic) fails its condition; any other opponent is a canonical model and is held to
/// `min_lower_vs_canonical`.
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
        if r.lower95 < gate.min_lower_vs_canonical {
            reasons.push(format!(
                "vs canonical {}: lower 95% bound {:.3} < {:.2} (win rate {:.3} over {} games)",
                r.opponent, r.lower95, gate.min_lower_vs_canonical, r.win_rate, r.games
            ));
        }
    }
    GateDecision {
        passed: reasons.is_empty(),
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example::opponent;
    use crate::report::OpponentResult;

    fn anchors() -> Vec<OpponentResult> {
        vec![
            opponent(RANDOM_ID, 100, 97, 0.915, 0.99),
            opponent(HEURISTIC_ID, 100, 75, 0.66, 0.82),
        ]
    }

    /// 28 of 50 against the canonical model is a point score of 0.56 but a Wilson lower
    /// bound of 0.42: no evidence the candidate is better, so it is not promoted.
    #[test]
    fn the_canonical_is_beaten_on_a_lower_bound_not_a_point_score() {
        let mut results = anchors();
        results.push(opponent("gen1", 50, 28, 0.423, 0.69));
        let d = check_gate(results.iter().map(|r| r.score()), &Gate::default());
        assert!(!d.passed, "{d:?}");
        assert!(
            d.reasons[0].contains("vs canonical gen1: lower 95% bound 0.423 < 0.50"),
            "{d:?}"
        );
        let mut results = anchors();
        results.push(opponent("gen1", 200, 130, 0.581, 0.71));
        let d = check_gate(results.iter().map(|r| r.score()), &Gate::default());
        assert!(d.passed, "{d:?}");
        let lenient = Gate {
            min_lower_vs_canonical: 0.4,
            ..Gate::default()
        };
        let mut results = anchors();
        results.push(opponent("gen1", 50, 28, 0.423, 0.69));
        assert!(check_gate(results.iter().map(|r| r.score()), &lenient).passed);
    }
}
