//! The `ringrift-job` command line: one subcommand per job, each writing its report as a
//! JSON object to `--result FILE` (atomically) for the job runner.

use crate::evaluate::{EvaluateArgs, evaluate};
use crate::export::{ExportArgs, export};
use crate::players::SearchConfig;
use crate::promote::{Gate, promote_if_passed};
use crate::rng::Rng;
use crate::selfplay::{SelfplayArgs, selfplay};
use crate::train::{TrainArgs, distill, train};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ringrift_contracts::wire::report_json;
use ringrift_contracts::{CanonicalTest, JobKind};
use ringrift_store::ConfigKey;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "ringrift-job",
    version,
    about = "RingRift embedded workload: selfplay, export, train, evaluate, distill"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Common {
    /// RingRift home directory.
    #[arg(long, global = true, env = "RINGRIFT_HOME", default_value_os_t = default_home())]
    pub home: PathBuf,
    /// Write the job's report here as a JSON object.
    #[arg(long, global = true)]
    pub result: Option<PathBuf>,
    /// Random seed (default: from the clock).
    #[arg(long, global = true)]
    pub seed: Option<u64>,
    /// No progress output.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// Worker threads for selfplay and evaluation.
    #[arg(long, global = true, default_value_t = 1)]
    pub threads: usize,
    /// This job's id (the job runner sets RINGRIFT_JOB_ID): Elo match ids are
    /// `<job id>/<game index>`, so a replayed job records no game twice. Default: a fresh
    /// UUID, i.e. every run by hand is a new job.
    #[arg(long, global = true, env = "RINGRIFT_JOB_ID")]
    pub job_id: Option<String>,
    /// The leader's fencing token for the leader-only writes: the canonical model swap
    /// of `evaluate --promote` and the Elo records of `tournament`. A token lower than
    /// one the store has accepted is refused and nothing is written. Default 1, the
    /// static leader's token.
    #[arg(long, global = true, env = "RINGRIFT_FENCE_TOKEN", default_value_t = 1)]
    pub fence_token: u64,
}

/// A path that may be empty (a template's way to say "none"; clap's path parser refuses
/// an empty value).
fn maybe_path() -> impl clap::builder::TypedValueParser<Value = PathBuf> {
    use clap::builder::TypedValueParser;
    clap::builder::OsStringValueParser::new().map(PathBuf::from)
}

/// Refuses an ONNX model for `what` (`train --init`, `distill --teacher`).
fn rrm_only(what: &str, path: &Path) -> Result<(), crate::WorkloadError> {
    crate::model_file::rrm_only(
        path,
        &format!(
            "{what}: an ONNX model; ringrift-job trains and distils from .rrm models only (an external trainer's template can start from it)"
        ),
    )
}

fn default_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".local/state/ringrift"))
        .unwrap_or_else(|| PathBuf::from("/var/lib/ringrift"))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Play games with the model (search + exploration noise) into the game store.
    Selfplay(SelfplayCmd),
    /// Export games after a watermark to an NPZ training file.
    Export(ExportCmd),
    /// Train a policy/value model from NPZ files.
    Train(TrainCmd),
    /// Gauntlet vs random, heuristic and canonical; record Elo; optionally promote.
    Evaluate(EvaluateCmd),
    /// Distil a model into a smaller one on the positions of NPZ files.
    Distill(DistillCmd),
    /// Round-robin among models of one config; every game recorded in the Elo store.
    Tournament(TournamentCmd),
}

#[derive(Debug, Args)]
pub struct TournamentCmd {
    #[arg(long)]
    pub config: ConfigKey,
    /// Model files (`--model a b` or repeated; at least 2).
    #[arg(long = "model", required = true, num_args = 1..)]
    pub models: Vec<PathBuf>,
    #[arg(long, default_value_t = 20)]
    pub games_per_pair: usize,
    #[arg(long, default_value_t = 2)]
    pub depth: u32,
    /// Random plies opening every game [default: the config's selfplay opening: one
    /// per seat plus one, two per seat on boards over 100 cells]
    #[arg(long)]
    pub opening_plies: Option<usize>,
}

#[derive(Debug, Args)]
pub struct SelfplayCmd {
    #[arg(long)]
    pub config: ConfigKey,
    #[arg(long, default_value_t = 100)]
    pub games: usize,
    /// Model file (default, or empty: the null model, which plays search tactics only).
    #[arg(long, value_parser = maybe_path())]
    pub model: Option<PathBuf>,
    #[arg(long, default_value_t = 2)]
    pub depth: u32,
    /// Plies played uniformly at random at the start of each game (default per config:
    /// one per seat, two on boards of more than 100 cells, plus one).
    #[arg(long)]
    pub random_plies: Option<usize>,
    /// Sampling temperature at the first ply after the random ones (default 0.5)...
    #[arg(long)]
    pub temperature: Option<f64>,
    /// ...decaying geometrically to this (default 0.05)...
    #[arg(long)]
    pub temperature_end: Option<f64>,
    /// ...over this many plies (default 3 per seat); later plies take the best move.
    #[arg(long)]
    pub temperature_plies: Option<usize>,
    /// Dirichlet noise mixed into the sampled plies' distribution, 0..1.
    #[arg(long, default_value_t = 0.25)]
    pub noise: f64,
    /// Fraction of games where one seat is the heuristic (sparring), 0..1.
    #[arg(long, default_value_t = 0.0)]
    pub sparring: f64,
    /// Game store to write (default data/games/{config}.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExportCmd {
    #[arg(long)]
    pub config: ConfigKey,
    /// Only games ingested after this watermark (from a selfplay or export result).
    #[arg(long, default_value_t = 0)]
    pub since: i64,
    #[arg(long)]
    pub max_games: Option<usize>,
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Output NPZ (default data/training/{config}.npz).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Weight of the stored search value in the value target (the rest is the final
    /// outcome), 0..1; games without search values use the outcome.
    #[arg(long, default_value_t = crate::export::DEFAULT_VALUE_BLEND)]
    pub value_blend: f32,
}

#[derive(Debug, Args)]
pub struct TrainCmd {
    #[arg(long)]
    pub config: ConfigKey,
    /// NPZ files (`--data a b` or repeated).
    #[arg(long = "data", required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// Fine-tune from this model instead of a fresh network (empty: a fresh one).
    #[arg(long, value_parser = maybe_path())]
    pub init: Option<PathBuf>,
    /// The model format to write: only `rrm` (an `onnx` train format is an external
    /// trainer's, `examples/python-trainer`).
    #[arg(long, default_value = "rrm")]
    pub format: String,
    #[arg(long)]
    pub output: PathBuf,
    #[arg(long, default_value_t = 64)]
    pub hidden: usize,
    #[arg(long, default_value_t = 6)]
    pub epochs: usize,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f32,
    #[arg(long)]
    pub generation: Option<u32>,
    /// Disable symmetry augmentation.
    #[arg(long)]
    pub no_augment: bool,
    /// Fresh networks without the n-tuple (window pattern) value term.
    #[arg(long)]
    pub no_ntuple: bool,
}

#[derive(Debug, Args)]
pub struct EvaluateCmd {
    #[arg(long)]
    pub config: ConfigKey,
    #[arg(long)]
    pub model: PathBuf,
    /// The model's label in the Elo store, whose id is its payload SHA-256 (default: the
    /// model file's stem).
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub games_random: usize,
    #[arg(long, default_value_t = 100)]
    pub games_heuristic: usize,
    #[arg(long, default_value_t = 50)]
    pub games_canonical: usize,
    #[arg(long, default_value_t = 2)]
    pub depth: u32,
    /// Search depth of both models in the games against the canonical model [default:
    /// --depth]
    #[arg(long)]
    pub canonical_depth: Option<u32>,
    /// Random plies opening every game [default: the config's selfplay opening: one
    /// per seat plus one, two per seat on boards over 100 cells]
    #[arg(long)]
    pub opening_plies: Option<usize>,
    /// Plies after the opening that both players sample at selfplay's temperature
    /// schedule (for measurements between copies of one model; 0 = best moves).
    #[arg(long, default_value_t = 0)]
    pub explore_plies: usize,
    /// Do not record the games in the Elo store.
    #[arg(long)]
    pub no_elo: bool,
    /// Promote the model if it passes the gate.
    #[arg(long)]
    pub promote: bool,
    /// Stop playing an opponent once the upper 95% bound against it is below its gate
    /// (--gate-random, --gate-heuristic, --gate-canonical): the model cannot pass any more.
    /// `--early-reject` alone or `--early-reject true|false`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false", action = clap::ArgAction::Set)]
    pub early_reject: bool,
    /// Stop playing random or heuristic at a look (every 100 games) where the model's
    /// lower bound at z 3.09 already clears its gate: the rest would only confirm a pass.
    /// `--early-accept` alone or `--early-accept true|false`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false", action = clap::ArgAction::Set)]
    pub early_accept: bool,
    #[arg(long, default_value_t = 0.85)]
    pub gate_random: f64,
    #[arg(long, default_value_t = 0.60)]
    pub gate_heuristic: f64,
    /// Minimum Wilson lower 95% bound of the score against the canonical model (with
    /// --canonical-test wilson).
    #[arg(long, default_value_t = 0.5)]
    pub gate_canonical: f64,
    /// How the model must beat the canonical one: `sprt` (games stop when the test
    /// decides; --games-canonical is the cap) or `wilson` (--gate-canonical).
    #[arg(long, default_value = "sprt")]
    pub canonical_test: CanonicalTest,
    #[arg(long, default_value_t = 0.0)]
    pub sprt_elo0: f64,
    #[arg(long, default_value_t = ringrift_contracts::Sprt::default().elo1)]
    pub sprt_elo1: f64,
    #[arg(long, default_value_t = 0.05)]
    pub sprt_alpha: f64,
    #[arg(long, default_value_t = 0.05)]
    pub sprt_beta: f64,
}

#[derive(Debug, Args)]
pub struct DistillCmd {
    #[arg(long)]
    pub config: ConfigKey,
    #[arg(long)]
    pub teacher: PathBuf,
    #[arg(long = "data", required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    #[arg(long)]
    pub output: PathBuf,
    #[arg(long, default_value_t = 16)]
    pub hidden: usize,
    #[arg(long, default_value_t = 6)]
    pub epochs: usize,
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f32,
}

fn write_result(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).context("serialise report")?;
    ringrift_store::manifest::atomic_write(path, &bytes)
        .with_context(|| format!("write result file {}", path.display()))
}

pub fn run(cli: Cli) -> anyhow::Result<(String, serde_json::Value)> {
    let c = &cli.common;
    let seed = c.seed.unwrap_or_else(Rng::seed_from_entropy);
    let node = crate::node_name();
    let job_id = c
        .job_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let (job, value) = match cli.command {
        Command::Selfplay(a) => {
            let mut search = SearchConfig::selfplay(a.depth, a.config);
            search.random_plies = a.random_plies.unwrap_or(search.random_plies);
            search.temperature = a.temperature.unwrap_or(search.temperature);
            search.temperature_end = a.temperature_end.unwrap_or(search.temperature_end);
            search.temperature_plies = a.temperature_plies.unwrap_or(search.temperature_plies);
            search.noise_fraction = a.noise;
            let r = selfplay(&SelfplayArgs {
                home: c.home.clone(),
                config: a.config,
                games: a.games,
                model: a.model.filter(|m| !m.as_os_str().is_empty()),
                search,
                seed,
                threads: c.threads,
                db: a.db,
                source_node: node,
                sparring_fraction: a.sparring,
                quiet: c.quiet,
            })
            .context("selfplay")?;
            (JobKind::Selfplay, report_json(JobKind::Selfplay, &r)?)
        }
        Command::Export(a) => {
            let r = export(&ExportArgs {
                home: c.home.clone(),
                config: a.config,
                since: a.since,
                max_games: a.max_games,
                db: a.db,
                output: a.output,
                value_blend: a.value_blend,
                quiet: c.quiet,
            })
            .context("export")?;
            (JobKind::Export, report_json(JobKind::Export, &r)?)
        }
        Command::Train(a) => {
            if a.format != "rrm" {
                anyhow::bail!(
                    "train --format {:?}: ringrift-job writes rrm models; another format is an external trainer's ([jobs] train, see examples/python-trainer)",
                    a.format
                );
            }
            let mut t = TrainArgs::new(a.config, a.data, a.output);
            t.init = a.init.filter(|m| !m.as_os_str().is_empty());
            if let Some(init) = &t.init {
                rrm_only("train --init", init)?;
            }
            t.hidden = a.hidden;
            t.epochs = a.epochs;
            t.batch = a.batch;
            t.lr = a.lr;
            t.generation = a.generation;
            t.augment = !a.no_augment;
            t.ntuple = !a.no_ntuple;
            t.seed = seed;
            t.quiet = c.quiet;
            (
                JobKind::Train,
                report_json(JobKind::Train, &train(&t).context("train")?)?,
            )
        }
        Command::Evaluate(a) => {
            let gate = Gate {
                min_lower_vs_random: a.gate_random,
                min_lower_vs_heuristic: a.gate_heuristic,
                min_lower_vs_canonical: a.gate_canonical,
                canonical_test: a.canonical_test,
                sprt_elo0: a.sprt_elo0,
                sprt_elo1: a.sprt_elo1,
                sprt_alpha: a.sprt_alpha,
                sprt_beta: a.sprt_beta,
            };
            gate.validate()
                .map_err(|e| anyhow::anyhow!("evaluate: bad gate: {e}"))?;
            let mut r = evaluate(&EvaluateArgs {
                home: c.home.clone(),
                config: a.config,
                model: a.model,
                name: a.name,
                job_id: job_id.clone(),
                games_vs_random: a.games_random,
                games_vs_heuristic: a.games_heuristic,
                games_vs_canonical: a.games_canonical,
                depth: a.depth,
                canonical_depth: a.canonical_depth.unwrap_or(a.depth),
                opening_plies: a
                    .opening_plies
                    .unwrap_or_else(|| crate::players::opening_plies(a.config)),
                explore_plies: a.explore_plies,
                threads: c.threads,
                seed,
                record_elo: !a.no_elo,
                source_node: node,
                quiet: c.quiet,
                gate: gate.clone(),
                early_reject: a.early_reject,
                early_accept: a.early_accept,
            })
            .context("evaluate")?;
            if a.promote {
                r.promotion = Some(
                    promote_if_passed(
                        &c.home,
                        &r,
                        &gate,
                        crate::promote::Fence::Leader(c.fence_token),
                    )
                    .context("promote")?,
                );
            }
            (JobKind::Evaluate, report_json(JobKind::Evaluate, &r)?)
        }
        Command::Tournament(a) => {
            let t = crate::tournament::TournamentArgs {
                home: c.home.clone(),
                config: a.config,
                models: a.models,
                games_per_pair: a.games_per_pair,
                depth: a.depth,
                opening_plies: a
                    .opening_plies
                    .unwrap_or_else(|| crate::players::opening_plies(a.config)),
                seed,
                source_node: node.clone(),
                job_id: job_id.clone(),
                fence_token: c.fence_token,
            };
            (
                JobKind::Tournament,
                report_json(
                    JobKind::Tournament,
                    &crate::tournament::tournament(&t).context("tournament")?,
                )?,
            )
        }
        Command::Distill(a) => {
            rrm_only("distill --teacher", &a.teacher)?;
            let mut t = TrainArgs::new(a.config, a.data, a.output);
            t.hidden = a.hidden;
            t.epochs = a.epochs;
            t.lr = a.lr;
            t.seed = seed;
            t.quiet = c.quiet;
            (
                JobKind::Distill,
                report_json(
                    JobKind::Distill,
                    &distill(&a.teacher, &t).context("distill")?,
                )?,
            )
        }
    };
    if let Some(path) = &c.result {
        write_result(path, &value)?;
    }
    Ok((job.as_str().to_owned(), value))
}

/// Entry point of the binary: parse, run, print the report, map errors to exit codes
/// (64 = bad usage, 1 = the job failed).
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(64)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok((_, value)) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringrift-job: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
