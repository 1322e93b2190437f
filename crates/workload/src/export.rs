//! Export: games since a watermark → one NPZ training file numpy can load (the arrays
//! are described in `ringrift_engine::dataset`).
//!
//! Value target per position: `blend · search value + (1 − blend) · final outcome` for
//! the seat to move, where the search value is the selfplay search's root value stored
//! with the game ([`DEFAULT_VALUE_BLEND`] unless `--value-blend`); games recorded without
//! search values use the outcome alone. The outcome alone is noisy (one random ply decides
//! it for every position of the game); the search value alone would only teach the net
//! its own search.

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

/// Default weight of the search value in the value target.
pub const DEFAULT_VALUE_BLEND: f32 = 0.5;

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
    /// Weight of the search value in the value target, 0..=1 (0 = outcome only).
    pub value_blend: f32,
    pub quiet: bool,
}

/// Builds the rows of stored games (replaying and validating every move); `value_blend`
/// weighs the stored search values into the value targets (see the module doc).
pub fn dataset_from_games(
    config: ConfigKey,
    games: &[ringrift_store::games::StoredGame],
    value_blend: f32,
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
            let target = match g.search_values.as_ref().and_then(|v| v.get(ply)) {
                Some(&v) if v.is_finite() => (value_blend * v.clamp(-1.0, 1.0)
                    + (1.0 - value_blend) * outcome)
                    .clamp(-1.0, 1.0),
                _ => outcome,
            };
            let played = [(m, 1.0f32)];
            let policy = g
                .policy
                .as_ref()
                .and_then(|p| p.get(ply))
                .map_or(&played[..], |p| &p[..]);
            ds.push_position(&s, target, policy);
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
    if !(0.0..=1.0).contains(&args.value_blend) {
        return Err(WorkloadError::Invalid(format!(
            "--value-blend must be between 0 and 1, not {}",
            args.value_blend
        )));
    }
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
    // A game stored unplayable (before games were checked, or by a producer that does not
    // check) is skipped and quarantined, not a failed export retried forever.
    let mut games = games;
    let bad = crate::game::Referee::default().quarantine_unplayable(&store, &mut games)?;
    for (id, why) in &bad {
        eprintln!("export: game {id} is unplayable ({why}); skipped and quarantined");
    }
    let skipped = bad.len();
    if games.is_empty() {
        return Err(WorkloadError::Invalid(format!(
            "no playable games in {} after watermark {} ({skipped} unplayable, quarantined)",
            db.display(),
            args.since
        )));
    }
    let mut progress = Progress::new("export", games.len() as u64, args.quiet);
    let mut ds = Dataset::default();
    for chunk in games.chunks(200) {
        ds.extend(dataset_from_games(args.config, chunk, args.value_blend)?)?;
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
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringrift_store::games::{GameRecord, StoredGame};

    /// hex8_2p: seat 0 plays 0, 1, 2, 3 along row 0 and wins at ply 6.
    fn won_game(values: Option<Vec<f32>>) -> StoredGame {
        StoredGame {
            seq: 1,
            game: GameRecord {
                game_id: "g".into(),
                config_key: "hex8_2p".parse().expect("key"),
                players: vec!["a".into(), "b".into()],
                winner: Some(0),
                moves: vec![0, 8, 1, 9, 2, 10, 3],
                source_node: "n".into(),
                quality_score: 1.0,
                created_at: 1,
                policy: None,
                search_values: values,
            },
        }
    }

    #[test]
    fn value_targets_blend_search_values_with_the_outcome() {
        let config = "hex8_2p".parse().expect("key");
        let sv = vec![0.2, -0.4, 0.0, 0.6, -1.0, 1.0, 1.0];
        let outcome = [1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0];
        let only_outcome =
            dataset_from_games(config, &[won_game(Some(sv.clone()))], 0.0).expect("rows");
        assert_eq!(only_outcome.values, outcome);
        let half = dataset_from_games(config, &[won_game(Some(sv.clone()))], 0.5).expect("rows");
        let want: Vec<f32> = sv
            .iter()
            .zip(outcome)
            .map(|(v, o)| 0.5 * v + 0.5 * o)
            .collect();
        assert_eq!(half.values, want);
        let search = dataset_from_games(config, &[won_game(Some(sv.clone()))], 1.0).expect("rows");
        assert_eq!(search.values, sv);
        // A game recorded without search values (older producers) uses the outcome.
        let old = dataset_from_games(config, &[won_game(None)], 0.5).expect("rows");
        assert_eq!(old.values, outcome);
    }

    /// An export of every hex8_2p game of `db` to `home/out.npz`.
    fn args(home: &std::path::Path, db: PathBuf, value_blend: f32) -> ExportArgs {
        ExportArgs {
            home: home.to_path_buf(),
            config: "hex8_2p".parse().expect("key"),
            since: 0,
            max_games: None,
            db: Some(db),
            output: Some(home.join("out.npz")),
            value_blend,
            quiet: true,
        }
    }

    #[test]
    fn a_blend_outside_zero_to_one_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("g.db");
        GameStore::open(&db)
            .expect("open")
            .insert_games(&[won_game(None).game])
            .expect("insert");
        let mut args = args(dir.path(), db, 1.5);
        let e = export(&args).expect_err("refused").to_string();
        assert!(e.contains("--value-blend") && e.contains("1.5"), "{e}");
        args.value_blend = 0.25;
        assert_eq!(export(&args).expect("export").rows, 7);
    }

    /// An unplayable stored game (an occupied cell played) is skipped with a count and
    /// quarantined, not the end of the export: training on the config goes on.
    #[test]
    fn an_unplayable_game_is_skipped_counted_and_quarantined() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("g.db");
        let store = GameStore::open(&db).expect("open");
        let mut bad = won_game(None).game;
        bad.game_id = "bad".into();
        bad.moves = vec![0, 8, 0];
        bad.winner = None;
        let mut other = won_game(None).game;
        other.game_id = "g2".into();
        store
            .insert_games(&[won_game(None).game, bad, other])
            .expect("insert");
        let args = args(dir.path(), db, 0.0);
        let r = export(&args).expect("export goes on");
        assert_eq!((r.games, r.rows, r.skipped, r.max_seq), (2, 14, 1, 3));
        assert_eq!(
            store.quarantined().expect("quarantined"),
            [("bad".to_string(), "ply 2: cell 0 is occupied".to_string())]
        );
        let again = export(&args).expect("again");
        assert_eq!(
            (again.games, again.skipped),
            (2, 0),
            "quarantined: not read again"
        );
    }
}
