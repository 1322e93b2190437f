//! Example reports with plausible values: the examples of `docs/jobs.md` and the
//! answers of fake jobs in daemon tests (which set the fields their case is about).

use crate::config_key::ConfigKey;
use crate::report::{EvaluateReport, OpponentResult, Standing, TournamentReport, TrainReport};
use std::path::PathBuf;

/// A `train` (or `distill`) report for a model written to `output`.
pub fn train(config_key: ConfigKey, output: impl Into<PathBuf>) -> TrainReport {
    TrainReport {
        config_key,
        samples: 12000,
        train_rows: 10800,
        val_rows: 1200,
        epochs: 6,
        hidden: 64,
        params: 9000,
        generation: 1,
        train_loss: 2.1,
        val_value_mse: 0.41,
        val_policy_ce: 1.9,
        val_policy_top1: 0.38,
        val_value_mse_baseline: 0.52,
        elapsed_s: 30.0,
        samples_per_s: 2400.0,
        output: output.into(),
        sha256: "9f2c".into(),
    }
}

/// `wins` of `games` against `opponent`, no draws, with the given 95 % bounds.
pub fn opponent(
    opponent: &str,
    games: u64,
    wins: u64,
    lower95: f64,
    upper95: f64,
) -> OpponentResult {
    OpponentResult {
        opponent: opponent.into(),
        games,
        wins,
        draws: 0,
        losses: games - wins.min(games),
        win_rate: wins as f64 / games.max(1) as f64,
        lower95,
        upper95,
        by_seat: Vec::new(),
        stopped_early: false,
        groups: Vec::new(),
        depth: 0,
    }
}

/// An `evaluate` report of `model` with `results` and Elo `elo`.
pub fn evaluate(
    config_key: ConfigKey,
    model: impl Into<PathBuf>,
    results: Vec<OpponentResult>,
    elo: Option<f64>,
) -> EvaluateReport {
    let model = model.into();
    EvaluateReport {
        config_key,
        model_name: model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        model,
        model_sha256: "9f2c".into(),
        generation: 1,
        canonical_sha256: None,
        results,
        elo,
        elapsed_s: 12.0,
        games_per_s: 16.0,
        promotion: None,
    }
}

/// A `tournament` report with one standing per `(name, elo)`, 20 games per pair.
pub fn tournament(config_key: ConfigKey, standings: &[(&str, f64)]) -> TournamentReport {
    let n = standings.len();
    TournamentReport {
        config_key,
        pairs: Vec::new(),
        standings: standings
            .iter()
            .map(|(name, elo)| Standing {
                name: (*name).to_owned(),
                sha256: format!("sha-of-{name}"),
                model: PathBuf::from(format!("models/{name}.rrm")),
                elo: *elo,
                games: 20 * (n as u64).saturating_sub(1),
                store_elo: None,
            })
            .collect(),
        matches: n * n.saturating_sub(1) / 2 * 20,
        elapsed_s: 5.0,
    }
}
