//! Job reports: the JSON object a job writes to its `--result` file, one type per job
//! kind. The embedded workload (`ringrift-job`) produces them; an external trainer must
//! write the same fields (see `docs/jobs.md`). Every field is required (an `Option` may
//! be `null`) and unknown fields are refused, so a renamed field is an error on both
//! sides instead of a silent zero. [`crate::wire`] adds and checks the envelope
//! (`job`, `version`).

use crate::config_key::ConfigKey;
use crate::gate::{GateDecision, Score};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The anchor opponents' Elo participant names, defined by the gate.
pub use crate::gate::{HEURISTIC_ID, RANDOM_ID};

/// The kinds of job the loop runs (the `[jobs]` templates, the `job` field of a report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Selfplay,
    Export,
    Train,
    Evaluate,
    Distill,
    Tournament,
}

impl JobKind {
    pub const ALL: [JobKind; 6] = [
        JobKind::Selfplay,
        JobKind::Export,
        JobKind::Train,
        JobKind::Evaluate,
        JobKind::Distill,
        JobKind::Tournament,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Selfplay => "selfplay",
            JobKind::Export => "export",
            JobKind::Train => "train",
            JobKind::Evaluate => "evaluate",
            JobKind::Distill => "distill",
            JobKind::Tournament => "tournament",
        }
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A report type and the job kinds that write it.
pub trait Report: Serialize + DeserializeOwned {
    const KINDS: &'static [JobKind];
}

/// `selfplay`: games played into the game store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfplayReport {
    pub config_key: ConfigKey,
    pub games: usize,
    pub moves: u64,
    pub wins_by_seat: Vec<u64>,
    pub draws: u64,
    pub mean_length: f64,
    pub elapsed_s: f64,
    pub games_per_s: f64,
    pub moves_per_s: f64,
    pub threads: usize,
    pub db: PathBuf,
    pub model: Option<String>,
    pub model_sha256: Option<String>,
    /// Ingest watermark after this job's games (pass to `export --since` later).
    pub max_seq: i64,
}

impl Report for SelfplayReport {
    const KINDS: &'static [JobKind] = &[JobKind::Selfplay];
}

/// `export`: games since a watermark written as one NPZ file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportReport {
    pub config_key: ConfigKey,
    pub games: usize,
    pub rows: usize,
    pub output: PathBuf,
    pub sha256: String,
    pub bytes: u64,
    /// Watermark to pass as `--since` next time.
    pub max_seq: i64,
    pub elapsed_s: f64,
    pub rows_per_s: f64,
    /// Games after the watermark left out as unplayable (the referee's replay failed;
    /// quarantined in the store). Absent in reports of older jobs: 0.
    #[serde(default)]
    pub skipped: usize,
}

impl Report for ExportReport {
    const KINDS: &'static [JobKind] = &[JobKind::Export];
}

/// `train` and `distill`: a model file written from NPZ data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainReport {
    pub config_key: ConfigKey,
    pub samples: usize,
    pub train_rows: usize,
    pub val_rows: usize,
    pub epochs: usize,
    pub hidden: usize,
    pub params: usize,
    pub generation: u32,
    pub train_loss: f64,
    pub val_value_mse: f64,
    pub val_policy_ce: f64,
    pub val_policy_top1: f64,
    /// Value MSE of always predicting 0 on the validation rows, for comparison.
    pub val_value_mse_baseline: f64,
    pub elapsed_s: f64,
    pub samples_per_s: f64,
    pub output: PathBuf,
    pub sha256: String,
}

impl Report for TrainReport {
    const KINDS: &'static [JobKind] = &[JobKind::Train, JobKind::Distill];
}

/// The score of the model against one opponent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpponentResult {
    pub opponent: String,
    pub games: u64,
    pub wins: u64,
    pub draws: u64,
    pub losses: u64,
    /// (wins + draws / 2) / games.
    pub win_rate: f64,
    pub lower95: f64,
    pub upper95: f64,
    /// Per seat of the model: `[games, score]` (seat 0 moves first).
    pub by_seat: Vec<[f64; 2]>,
    /// Fewer games than scheduled were played: the upper bound fell below the gate.
    pub stopped_early: bool,
    /// Opening groups (one random opening played once in each seat) by the model's
    /// score in the group in half-points: `groups[k]` groups scored `k / 2`; `2 · players
    /// + 1` counts, empty when the games were not played in groups. The SPRT against
    /// the canonical model is tested on these ([`crate::sprt::Sprt::llr_groups`]).
    #[serde(default)]
    pub groups: Vec<u64>,
    /// Search depth of the model (and of a model opponent) in these games; 0: not
    /// reported. Against the canonical model it is `[evaluation] canonical_depth`.
    #[serde(default)]
    pub depth: u32,
}

impl OpponentResult {
    /// What the gate reads of this result ([`crate::gate::check_gate`]).
    pub fn score(&self) -> Score<'_> {
        Score {
            opponent: &self.opponent,
            games: self.games,
            wins: self.wins,
            draws: self.draws,
            losses: self.losses,
            win_rate: self.win_rate,
            lower95: self.lower95,
            groups: &self.groups,
            depth: self.depth,
        }
    }
}

/// What a promotion did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromotionReport {
    pub promoted: bool,
    pub decision: GateDecision,
    pub canonical: Option<PathBuf>,
    pub backup: Option<PathBuf>,
    pub link: Option<PathBuf>,
}

/// `evaluate`: the gauntlet of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateReport {
    pub config_key: ConfigKey,
    pub model: PathBuf,
    /// A label for people; the model's identity (and its Elo participant id) is
    /// `model_sha256`.
    pub model_name: String,
    /// SHA-256 of the model's payload (the weights, as the `.rrm` header records it):
    /// what promotion verifies the file against.
    pub model_sha256: String,
    pub generation: u32,
    /// Payload SHA-256 of the canonical model when the gauntlet ran (null: there was
    /// none). Promotion refuses a candidate compared with a canonical model that has
    /// changed since.
    pub canonical_sha256: Option<String>,
    pub results: Vec<OpponentResult>,
    /// The model's Elo in this config after the gauntlet (None if not recorded), kept
    /// under `model_sha256`.
    pub elo: Option<f64>,
    pub elapsed_s: f64,
    pub games_per_s: f64,
    /// Set by `evaluate --promote`.
    pub promotion: Option<PromotionReport>,
}

impl EvaluateReport {
    pub fn against(&self, opponent: &str) -> Option<&OpponentResult> {
        self.results.iter().find(|r| r.opponent == opponent)
    }
}

impl Report for EvaluateReport {
    const KINDS: &'static [JobKind] = &[JobKind::Evaluate];
}

/// The games of one pair in a tournament.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairResult {
    pub a: String,
    pub b: String,
    pub games: usize,
    /// Points of `a` (1 per win, ½ per draw).
    pub score_a: f64,
}

/// A participant's Elo after a tournament.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Standing {
    /// A label for people (the file stem).
    pub name: String,
    /// Payload SHA-256 of the model: its Elo participant id.
    pub sha256: String,
    pub model: PathBuf,
    /// The tournament's rating: the maximum-likelihood fit to its pair scores (mean
    /// 1500), which does not depend on the order the games were played in.
    pub elo: f64,
    pub games: u64,
    /// The Elo store's running rating after the tournament's games (K = 32 updates in
    /// recording order, over every game the store has of this model); absent from
    /// reports that do not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_elo: Option<f64>,
}

/// `tournament`: a round robin of models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TournamentReport {
    pub config_key: ConfigKey,
    pub pairs: Vec<PairResult>,
    pub standings: Vec<Standing>,
    pub matches: usize,
    pub elapsed_s: f64,
}

impl Report for TournamentReport {
    const KINDS: &'static [JobKind] = &[JobKind::Tournament];
}
