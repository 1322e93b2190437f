//! Export: games since a watermark → one NPZ training file numpy can load (the arrays
//! are described in `ringrift_engine::dataset`).

use crate::WorkloadError;
use crate::game::{Geometry, State};
use crate::progress::Progress;
use crate::selfplay::POLICY_TOP_K;
pub use ringrift_contracts::ExportReport;
pub use ringrift_engine::dataset::Dataset;
use ringrift_store::games::GameStore;
use ringrift_store::{ConfigKey, paths};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct ExportArgs {
    pub home: PathBuf,
    pub config: ConfigKey,
    /// Only games ingested after this watermark (0 = all).
    pub since: i64,
    pub max_games: Option<usize>,
    /// Game store to read; default `data/games/{config}.db`.
    pub db: Option<PathBuf>,
    /// Output; default `data/training/{config}.npz`.
    pub output: Option<PathBuf>,
    pub quiet: bool,
}

/// Builds the rows of stored games (replaying and validating every move).
pub fn dataset_from_games(
    config: ConfigKey,
    games: &[ringrift_store::games::StoredGame],
) -> Result<Dataset, WorkloadError> {
    let geo = Geometry::new(config);
    let mut ds = Dataset {
        planes: geo.players(),
        cells: geo.cells(),
        k: POLICY_TOP_K,
        ..Dataset::default()
    };
    for sg in games {
        let g = &sg.game;
        if g.config_key != config {
            return Err(WorkloadError::Invalid(format!(
                "game {} is {}, not {config}",
                g.game_id, g.config_key
            )));
        }
        let mut s = State::new(geo.clone());
        ds.start_game();
        for (ply, &m) in g.moves.iter().enumerate() {
            let outcome = match g.winner {
                Some(w) if w == s.to_move => 1.0,
                Some(_) => -1.0,
                None => 0.0,
            };
            let played = [(m, 1.0f32)];
            let policy = g
                .policy
                .as_ref()
                .and_then(|p| p.get(ply))
                .map_or(&played[..], |p| &p[..]);
            ds.push_position(&s, outcome, policy);
            s.play(usize::from(m)).map_err(|e| {
                WorkloadError::Invalid(format!("game {} ply {ply}: {e}", g.game_id))
            })?;
        }
        if s.winner != g.winner {
            return Err(WorkloadError::Invalid(format!(
                "game {}: stored winner {:?} but replay gives {:?}",
                g.game_id, g.winner, s.winner
            )));
        }
    }
    Ok(ds)
}

/// Exports games after `since` to an NPZ.
pub fn export(args: &ExportArgs) -> Result<ExportReport, WorkloadError> {
    let started = Instant::now();
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| paths::game_db(&args.home, args.config));
    if !db.exists() {
        return Err(WorkloadError::Invalid(format!(
            "no game store at {}",
            db.display()
        )));
    }
    let store = GameStore::open(&db)?;
    let limit = args.max_games.unwrap_or(usize::MAX);
    let games = store.games_since(args.since, limit)?;
    if games.is_empty() {
        return Err(WorkloadError::Invalid(format!(
            "no games in {} after watermark {}",
            db.display(),
            args.since
        )));
    }
    let max_seq = games.iter().map(|g| g.seq).max().unwrap_or(args.since);
    let mut progress = Progress::new("export", games.len() as u64, args.quiet);
    let mut ds = Dataset::default();
    for chunk in games.chunks(200) {
        ds.extend(dataset_from_games(args.config, chunk)?)?;
        progress.inc(chunk.len() as u64);
    }
    progress.finish();
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| paths::training_dir(&args.home).join(format!("{}.npz", args.config)));
    ds.write_npz(&output)?;
    let (sha256, bytes) = ringrift_store::manifest::hash_file(&output)?;
    let elapsed = started.elapsed().as_secs_f64();
    Ok(ExportReport {
        config_key: args.config,
        games: games.len(),
        rows: ds.rows(),
        output,
        sha256,
        bytes,
        max_seq,
        elapsed_s: elapsed,
        rows_per_s: ds.rows() as f64 / elapsed.max(1e-9),
    })
}
