//! Selfplay: the current model (with search and exploration noise) plays itself; every
//! finished game goes into the config's game store with, per ply, the search's move
//! distribution (softmax of the root scores at `target_temperature`: the policy target)
//! and its root value for the seat to move (blended into the value target by export).

use crate::WorkloadError;
use crate::game::{Geometry, State};
use crate::model::Model;
use crate::players::{HeuristicPlayer, ModelPlayer, Player, SearchConfig};
use crate::progress::Progress;
use crate::rng::Rng;
pub use ringrift_contracts::SelfplayReport;
use ringrift_store::games::{GameRecord, GameStore};
use ringrift_store::{ConfigKey, paths};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Moves kept per ply in the stored policy (the most probable ones).
pub const POLICY_TOP_K: usize = 8;

/// Arguments of a selfplay job.
#[derive(Debug, Clone)]
pub struct SelfplayArgs {
    pub home: PathBuf,
    pub config: ConfigKey,
    pub games: usize,
    /// Model file; `None` plays the null model (search tactics only).
    pub model: Option<PathBuf>,
    pub search: SearchConfig,
    pub seed: u64,
    pub threads: usize,
    /// Game store to write; default `data/games/{config}.db` under `home`.
    pub db: Option<PathBuf>,
    pub source_node: String,
    /// Fraction of games in which one random seat is the heuristic (sparring games).
    pub sparring_fraction: f64,
    pub quiet: bool,
}

/// Loads `path` as a model for `config`, or the null model.
pub fn load_model(
    path: Option<&Path>,
    config: ConfigKey,
) -> Result<(Arc<Model>, Option<String>), WorkloadError> {
    let cells = Geometry::new(config).cells();
    match path {
        None => Ok((Arc::new(Model::null(config, cells)), None)),
        Some(p) => {
            crate::model_file::rrm_only(
                p,
                "ringrift-job plays selfplay with .rrm models only; an ONNX model is evaluated, gated and promoted, and its selfplay is the external trainer's ([jobs] selfplay)",
            )?;
            let (m, h) = Model::load(p)?;
            if m.config_key != config || m.cells != cells {
                return Err(WorkloadError::BadModel {
                    path: p.to_path_buf(),
                    reason: format!(
                        "model is for {} ({} cells), job is {config} ({cells} cells)",
                        m.config_key, m.cells
                    ),
                });
            }
            Ok((Arc::new(m), Some(h.payload_sha256)))
        }
    }
}

/// Plays one selfplay game and turns it into a record.
///
/// With `sparring_seat`, that seat is played by the heuristic instead (a sparring game:
/// the model learns to defend against and exploit a fixed, competent attacker). Its
/// plies still get the model's searched distribution as policy target.
pub fn play_selfplay_game(
    geo: &Arc<Geometry>,
    player: &mut ModelPlayer,
    rng: &mut Rng,
    source_node: &str,
    sparring_seat: Option<u8>,
) -> GameRecord {
    let mut s = State::new(geo.clone());
    let mut policy = Vec::new();
    let mut values = Vec::new();
    let mut confidence = 0.0;
    while !s.done {
        let a = player.analyse(&s);
        values.push(a.value().clamp(-1.0, 1.0));
        let target = a.distribution(player.config.target_temperature);
        let c = if sparring_seat == Some(s.to_move) {
            HeuristicPlayer.choose(&s, rng)
        } else {
            player.pick(&a, s.moves.len(), rng)
        };
        let mut sparse: Vec<(u16, f32)> = a
            .moves
            .iter()
            .copied()
            .zip(target.iter().map(|&p| p as f32))
            .collect();
        sparse.sort_by(|x, y| y.1.total_cmp(&x.1));
        sparse.truncate(POLICY_TOP_K);
        confidence += sparse
            .iter()
            .find(|(m, _)| usize::from(*m) == c)
            .map_or(0.0, |(_, p)| f64::from(*p));
        policy.push(sparse);
        s.play_unchecked(c);
    }
    let n = usize::from(geo.config.players());
    let mut players = vec![player_name(player); n];
    if let Some(seat) = sparring_seat.and_then(|seat| players.get_mut(usize::from(seat))) {
        *seat = ringrift_store::elo::HEURISTIC_ID.to_string();
    }
    GameRecord {
        game_id: uuid::Uuid::new_v4().to_string(),
        config_key: geo.config,
        players,
        winner: s.winner,
        // The quality score is how often the move played was one the search itself
        // preferred (mean target probability of the chosen move): low for noisy games.
        quality_score: confidence / s.moves.len().max(1) as f64,
        moves: s.moves,
        source_node: source_node.to_string(),
        created_at: ringrift_store::now_ms(),
        policy: Some(policy),
        search_values: Some(values),
    }
}

fn player_name(p: &ModelPlayer) -> String {
    p.name().to_string()
}

/// Runs selfplay and writes the games (in batches) to the game store.
pub fn selfplay(args: &SelfplayArgs) -> Result<SelfplayReport, WorkloadError> {
    if args.games == 0 {
        return Err(WorkloadError::Invalid("--games must be at least 1".into()));
    }
    if !(0.0..=1.0).contains(&args.sparring_fraction) {
        return Err(WorkloadError::Invalid(
            "--sparring must be between 0 and 1".into(),
        ));
    }
    args.search.validate()?;
    let geo = Geometry::new(args.config);
    let (model, sha) = load_model(args.model.as_deref(), args.config)?;
    // Each game records which model played it: the file's stem and the first 16 hex
    // digits of its payload SHA-256 (the cluster checks a promoted model reached a node
    // by the games played there).
    let name = match (&args.model, &sha) {
        (Some(p), Some(sha)) => format!(
            "{}@{}",
            p.file_stem().and_then(|s| s.to_str()).unwrap_or("model"),
            &sha[..16.min(sha.len())]
        ),
        _ => "null".to_string(),
    };
    let db_path = args
        .db
        .clone()
        .unwrap_or_else(|| paths::game_db(&args.home, args.config));
    let store = GameStore::open(&db_path)?;
    let threads = args.threads.clamp(1, args.games);
    let started = Instant::now();
    let progress = std::sync::Mutex::new(Progress::new("selfplay", args.games as u64, args.quiet));
    let next = AtomicU64::new(0);
    let results: Vec<Result<Vec<GameRecord>, WorkloadError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (geo, model, store, name) =
                    (geo.clone(), model.clone(), store.clone(), name.clone());
                let (next, progress) = (&next, &progress);
                scope.spawn(move || -> Result<Vec<GameRecord>, WorkloadError> {
                    let mut rng =
                        Rng::new(args.seed ^ (t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    let mut player = ModelPlayer::new(name, model, args.search.clone());
                    let mut all = Vec::new();
                    let mut batch = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < args.games as u64 {
                        let sparring = (rng.f64() < args.sparring_fraction)
                            .then(|| rng.below(geo.players()) as u8);
                        batch.push(play_selfplay_game(
                            &geo,
                            &mut player,
                            &mut rng,
                            &args.source_node,
                            sparring,
                        ));
                        if batch.len() >= 25 {
                            store.insert_games(&batch)?;
                            all.append(&mut batch);
                        }
                        progress.lock().unwrap_or_else(|p| p.into_inner()).inc(1);
                    }
                    store.insert_games(&batch)?;
                    all.append(&mut batch);
                    Ok(all)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(WorkloadError::Invalid("selfplay thread panicked".into()))
                })
            })
            .collect()
    });
    progress
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .finish();
    let mut games = Vec::new();
    for r in results {
        games.extend(r?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n = usize::from(args.config.players());
    let mut wins_by_seat = vec![0u64; n];
    let mut draws = 0;
    let mut moves = 0u64;
    for g in &games {
        moves += g.moves.len() as u64;
        match g.winner {
            Some(w) => wins_by_seat[usize::from(w)] += 1,
            None => draws += 1,
        }
    }
    Ok(SelfplayReport {
        config_key: args.config,
        games: games.len(),
        moves,
        wins_by_seat,
        draws,
        mean_length: moves as f64 / games.len().max(1) as f64,
        elapsed_s: elapsed,
        games_per_s: games.len() as f64 / elapsed.max(1e-9),
        moves_per_s: moves as f64 / elapsed.max(1e-9),
        threads,
        db: db_path,
        model: args.model.as_ref().map(|p| p.display().to_string()),
        model_sha256: sha,
        max_seq: store.max_seq()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn games_record_the_search_value_and_distribution_per_ply() {
        let key: ConfigKey = "hex8_2p".parse().expect("key");
        let geo = Geometry::new(key);
        let m = Arc::new(Model::null(key, geo.cells()));
        let mut p = ModelPlayer::new("m", m, SearchConfig::selfplay(2, key));
        let mut rng = Rng::new(3);
        for _ in 0..5 {
            let g = play_selfplay_game(&geo, &mut p, &mut rng, "n", None);
            g.validate().expect("valid record");
            let values = g.search_values.as_ref().expect("values");
            let policy = g.policy.as_ref().expect("policy");
            assert_eq!((values.len(), policy.len()), (g.moves.len(), g.moves.len()));
            if g.winner.is_some() {
                // The winner saw its winning cell: the last ply's search value is +1,
                // and the target puts (almost) all of its mass on winning cells.
                assert_eq!(values.last(), Some(&1.0), "{values:?}");
            }
            // Replayed, each ply's value is the analysis' best score.
            let mut s = State::new(geo.clone());
            for (ply, &c) in g.moves.iter().enumerate() {
                let a = p.analyse(&s);
                assert_eq!(a.value(), values[ply], "ply {ply}");
                s.play(usize::from(c)).expect("legal");
            }
        }
    }

    #[test]
    fn random_opening_plies_make_openings_differ_under_a_deterministic_search() {
        // A random network (no ties between scores) with a greedy search repeats its
        // game; the random plies still make openings differ.
        let key: ConfigKey = "hex8_2p".parse().expect("key");
        let geo = Geometry::new(key);
        let m = Arc::new(Model::new_random(key, geo.cells(), 8, 1));
        let mut cfg = SearchConfig::selfplay(1, key);
        let openings = |cfg: SearchConfig| {
            let mut p = ModelPlayer::new("m", m.clone(), cfg);
            let mut rng = Rng::new(5);
            let mut seen = std::collections::HashSet::new();
            for _ in 0..20 {
                let g = play_selfplay_game(&geo, &mut p, &mut rng, "n", None);
                seen.insert(g.moves[..4.min(g.moves.len())].to_vec());
            }
            seen.len()
        };
        cfg.noise_fraction = 0.0;
        cfg.temperature_plies = 0;
        let mut fixed = cfg.clone();
        fixed.random_plies = 0;
        assert_eq!(
            openings(fixed),
            1,
            "greedy play from the empty board repeats"
        );
        assert!(openings(cfg) >= 15, "random plies give distinct openings");
    }
}
