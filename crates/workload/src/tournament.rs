//! Round-robin tournament among models of one config: every pair plays `games_per_pair`
//! games with alternating seats; every game is a match in the Elo store, models under
//! their payload SHA-256 (files with the same weights are one participant), match ids
//! `<job id>/<game index>`. The standings are the maximum-likelihood fit to this
//! tournament's pair scores (`elo::fit_ratings`), with the store's running rating beside
//! them: the store's K = 32 updates depend on the order games were recorded in, and in
//! one round robin ranked a model below two models it had beaten.

use crate::WorkloadError;
use crate::evaluate::{Openings, play_one};
use crate::game::Geometry;
use crate::model_file::AnyModel;
use crate::players::{Player, SearchConfig};
use crate::rng::Rng;
pub use ringrift_contracts::{PairResult, Standing, TournamentReport};
use ringrift_store::elo::{EloStore, MatchResult, PairScore, fit_ratings};
use ringrift_store::{ConfigKey, paths};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct TournamentArgs {
    pub home: PathBuf,
    pub config: ConfigKey,
    pub models: Vec<PathBuf>,
    pub games_per_pair: usize,
    pub depth: u32,
    pub opening_plies: usize,
    pub seed: u64,
    pub source_node: String,
    /// Match ids are `<job_id>/<game index>`: the same job run again records nothing twice.
    pub job_id: String,
    /// The leader's fencing token: the Elo store refuses the matches of a deposed leader.
    pub fence_token: u64,
}

pub fn tournament(args: &TournamentArgs) -> Result<TournamentReport, WorkloadError> {
    let started = Instant::now();
    if args.models.len() < 2 {
        return Err(WorkloadError::Invalid(format!(
            "a tournament needs at least 2 models, got {}",
            args.models.len()
        )));
    }
    // Files of one payload (the canonical model and the generation it was copied from)
    // are one participant; with a single one left there is nothing to play.
    let geo = Geometry::new(args.config);
    let mut players: Vec<(String, String, PathBuf, AnyModel)> = Vec::new();
    for path in &args.models {
        let (model, header) = AnyModel::load(path, args.config)?;
        if players.iter().any(|p| p.1 == header.payload_sha256) {
            continue;
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("model")
            .to_string();
        players.push((name, header.payload_sha256, path.clone(), model));
    }
    let mut rng = Rng::new(args.seed);
    let openings = Openings {
        plies: args.opening_plies,
        seed: args.seed,
    };
    let search = SearchConfig::greedy(args.depth);
    let mut pairs = Vec::new();
    let mut fit_pairs = Vec::new();
    let mut matches = Vec::new();
    let now = ringrift_store::now_ms();
    for i in 0..players.len() {
        for j in (i + 1)..players.len() {
            let mut score = 0.0;
            for g in 0..args.games_per_pair {
                let label = |p: &(String, String, PathBuf, AnyModel)| p.2.display().to_string();
                let mut me = players[i].3.player(&label(&players[i]), search.clone());
                let others: Vec<Box<dyn Player>> = (1..geo.players())
                    .map(|_| players[j].3.player(&label(&players[j]), search.clone()))
                    .collect();
                let s = play_one(&geo, me.as_mut(), others, g, openings, &mut rng);
                score += s;
                matches.push(MatchResult {
                    match_id: format!("{}/{}", args.job_id, matches.len()),
                    config_key: args.config,
                    participant_a: players[i].1.clone(),
                    participant_b: players[j].1.clone(),
                    score_a: s,
                    played_at: now,
                    source_node: args.source_node.clone(),
                });
            }
            fit_pairs.push(PairScore {
                a: i,
                b: j,
                score_a: score,
                games: args.games_per_pair as f64,
            });
            pairs.push(PairResult {
                a: players[i].0.clone(),
                b: players[j].0.clone(),
                games: args.games_per_pair,
                score_a: score,
            });
        }
    }
    for p in &players {
        p.3.failure()?;
    }
    let store = EloStore::open(&paths::elo_db(&args.home))?;
    let labels: Vec<(String, String)> = players
        .iter()
        .map(|(name, sha, ..)| (sha.clone(), name.clone()))
        .collect();
    // The fenced write first: a deposed leader's tournament writes nothing at all.
    store.record_matches_fenced(&matches, args.fence_token)?;
    store.set_labels(&labels)?;
    let fitted = fit_ratings(players.len(), &fit_pairs, args.config.players());
    let mut standings = Vec::new();
    for ((name, sha, path, _), elo) in players.iter().zip(fitted) {
        let r = store.rating(sha, args.config)?;
        standings.push(Standing {
            name: name.clone(),
            sha256: sha.clone(),
            model: path.clone(),
            elo,
            games: r.games,
            store_elo: Some(r.rating),
        });
    }
    standings.sort_by(|a, b| b.elo.total_cmp(&a.elo));
    Ok(TournamentReport {
        config_key: args.config,
        pairs,
        standings,
        matches: matches.len(),
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}
