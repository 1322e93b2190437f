//! Conversions between the contract types (`ringrift-contracts`: job reports) and the
//! event payloads of `ringrift-proto`, in one place so each field is mapped once.
//! (JSON to and from contract types is `ringrift_contracts::wire`.)

use ringrift_contracts::gate::Score;
use ringrift_contracts::{EvaluateReport, OpponentResult};
use ringrift_proto::wire;

/// Game counts beyond `u32` (the event's width) saturate.
fn count(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One opponent's result as the event carries it.
pub fn opponent_to_wire(r: &OpponentResult) -> wire::OpponentResult {
    wire::OpponentResult {
        opponent: r.opponent.clone(),
        games: count(r.games),
        wins: count(r.wins),
        draws: count(r.draws),
        losses: count(r.losses),
        win_rate: r.win_rate,
        lower_95: r.lower95,
        upper_95: r.upper95,
        groups: r.groups.clone(),
        depth: r.depth,
    }
}

/// What the promotion gate reads of an event's opponent result.
pub fn score_of_wire(r: &wire::OpponentResult) -> Score<'_> {
    Score {
        opponent: &r.opponent,
        games: u64::from(r.games),
        wins: u64::from(r.wins),
        draws: u64::from(r.draws),
        losses: u64::from(r.losses),
        win_rate: r.win_rate,
        lower95: r.lower_95,
        groups: &r.groups,
        depth: r.depth,
    }
}

/// EVALUATION_COMPLETED for a gauntlet report of the model `model_path` trained in
/// `run_id`. The event's `elo` is 0 when the job did not record Elo.
pub fn evaluation_completed(
    r: &EvaluateReport,
    model_path: &str,
    run_id: &str,
) -> wire::EvaluationCompleted {
    wire::EvaluationCompleted {
        model_path: model_path.to_owned(),
        model_sha256: r.model_sha256.clone(),
        results: r.results.iter().map(opponent_to_wire).collect(),
        elo: r.elo.unwrap_or(0.0),
        run_id: run_id.to_owned(),
        canonical_sha256: r.canonical_sha256.clone().unwrap_or_default(),
    }
}
