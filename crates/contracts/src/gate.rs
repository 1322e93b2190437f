//! The promotion gate: thresholds ([`Gate`]) and the verdict on a gauntlet
//! ([`check_gate`]). Shared by the workload (`evaluate --promote`, early rejection), the
//! evaluation daemon (early rejection) and unified_promotion (the decision).

pub use crate::sprt::{Sprt, SprtState, Verdict, per_seat_bar};
use serde::{Deserialize, Serialize};

/// Elo participant name of the random player (an anchor opponent of the gate).
pub const RANDOM_ID: &str = "random";
/// Elo participant name of the heuristic player (an anchor opponent of the gate).
pub const HEURISTIC_ID: &str = "heuristic";

/// How the candidate must show it is better than the canonical model it would replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CanonicalTest {
    /// Sequential test ([`Sprt`]): games stop once it decides; it must accept H1.
    #[default]
    Sprt,
    /// The Wilson lower 95 % bound of a fixed number of games must reach
    /// `min_lower_vs_canonical`.
    Wilson,
}

impl std::str::FromStr for CanonicalTest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sprt" => Ok(CanonicalTest::Sprt),
            "wilson" => Ok(CanonicalTest::Wilson),
            _ => Err(format!("unknown canonical test {s:?} (sprt or wilson)")),
        }
    }
}

impl std::fmt::Display for CanonicalTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CanonicalTest::Sprt => "sprt",
            CanonicalTest::Wilson => "wilson",
        })
    }
}

/// Promotion thresholds. Random and heuristic are floors on the Wilson lower 95 % bound
/// of the candidate's score (wins + draws/2 over games); defaults are the seed's: ≥ 0.85
/// vs random and ≥ 0.60 vs heuristic. Against the current canonical model the candidate
/// must pass an SPRT (elo0 0, elo1 15, α = β = 0.05, [`Sprt::default`]) by default, or, with
/// `canonical_test = "wilson"`, reach a Wilson lower bound of 0.5 (better than what it
/// replaces with 95 % confidence). Bars are written for two players; a 3- or 4-player
/// config moves each to the same Elo margin over a seat's even share
/// ([`per_seat_bar`]), so a random seat's 1/3 or 1/4 is what 0.5 is in two-player games.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gate {
    pub min_lower_vs_random: f64,
    pub min_lower_vs_heuristic: f64,
    /// Minimum Wilson lower 95 % bound against the current canonical model under
    /// `canonical_test = "wilson"` (0.5: significantly better than it; 0 disables).
    pub min_lower_vs_canonical: f64,
    pub canonical_test: CanonicalTest,
    pub sprt_elo0: f64,
    pub sprt_elo1: f64,
    pub sprt_alpha: f64,
    pub sprt_beta: f64,
}

impl Default for Gate {
    fn default() -> Self {
        let t = Sprt::default();
        Gate {
            min_lower_vs_random: 0.85,
            min_lower_vs_heuristic: 0.60,
            min_lower_vs_canonical: 0.5,
            canonical_test: CanonicalTest::Sprt,
            sprt_elo0: t.elo0,
            sprt_elo1: t.elo1,
            sprt_alpha: t.alpha,
            sprt_beta: t.beta,
        }
    }
}

impl Gate {
    /// The sequential test against the canonical model.
    pub fn sprt(&self) -> Sprt {
        Sprt {
            elo0: self.sprt_elo0,
            elo1: self.sprt_elo1,
            alpha: self.sprt_alpha,
            beta: self.sprt_beta,
        }
    }

    /// Checks every setting; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        for (k, v) in [
            ("min_lower_vs_random", self.min_lower_vs_random),
            ("min_lower_vs_heuristic", self.min_lower_vs_heuristic),
            ("min_lower_vs_canonical", self.min_lower_vs_canonical),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{k} = {v}: must be within 0..=1"));
            }
        }
        self.sprt().validate()
    }

    /// One line for status pages.
    pub fn summary(&self) -> String {
        let canonical = match self.canonical_test {
            CanonicalTest::Sprt => format!(
                "canonical by SPRT (elo0 {}, elo1 {}, alpha {}, beta {})",
                self.sprt_elo0, self.sprt_elo1, self.sprt_alpha, self.sprt_beta
            ),
            CanonicalTest::Wilson => format!("canonical ≥ {:.2}", self.min_lower_vs_canonical),
        };
        format!(
            "random ≥ {:.2}, heuristic ≥ {:.2} (lower 95%, per seat); {canonical}",
            self.min_lower_vs_random, self.min_lower_vs_heuristic
        )
    }

    /// The Wilson bar against `opponent` in a `players` game (random, heuristic, or any
    /// other name: a canonical model, bounded only under the Wilson test).
    pub fn bar(&self, opponent: &str, players: u8) -> Option<f64> {
        let bar_2p = match opponent {
            RANDOM_ID => self.min_lower_vs_random,
            HEURISTIC_ID => self.min_lower_vs_heuristic,
            _ if self.canonical_test == CanonicalTest::Wilson => self.min_lower_vs_canonical,
            _ => return None,
        };
        Some(per_seat_bar(bar_2p, players))
    }
}

/// The gate's verdict, with a reason per failed condition, and the SPRT against the
/// canonical model when one was played.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateDecision {
    pub passed: bool,
    pub reasons: Vec<String>,
    #[serde(default)]
    pub sprt: Option<SprtState>,
}

/// What the gate reads of a result against one opponent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score<'a> {
    pub opponent: &'a str,
    pub games: u64,
    pub wins: u64,
    pub draws: u64,
    pub losses: u64,
    pub win_rate: f64,
    pub lower95: f64,
    /// See `OpponentResult::groups` (report.rs).
    pub groups: &'a [u64],
    /// See `OpponentResult::depth` (report.rs).
    pub depth: u32,
}

/// Checks gauntlet results of a `players` game against the gate. A missing anchor
/// opponent (random, heuristic) fails its condition; any other opponent is a canonical
/// model, held to the SPRT (recomputed here from the game counts, so the decision never
/// rests on a job's claim) or to the Wilson bar.
pub fn check_gate<'a>(
    results: impl IntoIterator<Item = Score<'a>>,
    gate: &Gate,
    players: u8,
) -> GateDecision {
    let results: Vec<Score<'a>> = results.into_iter().collect();
    let mut reasons = Vec::new();
    let mut sprt = None;
    for anchor in [RANDOM_ID, HEURISTIC_ID] {
        if !results.iter().any(|r| r.opponent == anchor) {
            reasons.push(format!("no games against {anchor}"));
        }
    }
    for r in &results {
        let is_anchor = [RANDOM_ID, HEURISTIC_ID].contains(&r.opponent);
        let what = match (is_anchor, r.depth) {
            (true, _) => format!("vs {}", r.opponent),
            (false, 0) => format!("vs canonical {}", r.opponent),
            (false, d) => format!("vs canonical {} at depth {d}", r.opponent),
        };
        match gate.bar(r.opponent, players) {
            Some(min) if r.lower95 < min => reasons.push(format!(
                "{what}: lower 95% bound {:.3} < {min:.2} (win rate {:.3} over {} games)",
                r.lower95, r.win_rate, r.games
            )),
            Some(_) => {}
            None => {
                let t = gate.sprt();
                let st = if r.groups.is_empty() {
                    t.state(r.wins, r.draws, r.losses, players)
                } else if let Some(st) = t.state_groups(r.groups, players) {
                    st
                } else {
                    reasons.push(format!(
                        "{what}: {} opening-group counts, a {players}-player game has {}",
                        r.groups.len(),
                        crate::sprt::group_counts(players)
                    ));
                    continue;
                };
                if st.verdict != Verdict::Accepted {
                    // First: the floors of a candidate the SPRT rejected may be unplayed.
                    reasons.insert(0, format!(
                        "{what}: SPRT (elo0 {}, elo1 {}{}) {} with LLR {:.2} after {} games (accept at {:.2})",
                        t.elo0,
                        t.elo1,
                        if r.groups.is_empty() { "" } else { ", by opening groups" },
                        if st.verdict == Verdict::Rejected { "rejected" } else { "undecided" },
                        st.llr,
                        st.games,
                        st.upper
                    ));
                }
                sprt = Some(st);
            }
        }
    }
    GateDecision {
        passed: reasons.is_empty(),
        reasons,
        sprt,
    }
}
