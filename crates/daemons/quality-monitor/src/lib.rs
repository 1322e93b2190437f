//! `quality_monitor`: how healthy selfplay is, per config, over the latest `window` games
//! of `data/games/{config}.db`: mean game length, the first seat's share of wins, draws,
//! opening diversity (distinct sequences of the first `opening_plies` moves per game),
//! policy agreement (share of plies whose played move is the top of the recorded search
//! distribution) and value agreement (share of plies of decided games whose recorded
//! root search value has the sign of the final outcome for the seat to move). A
//! collapsing selfplay (one seat winning most games, every game opening the same way)
//! is what stalls a learning loop, so it is what this watches:
//! health is DEGRADED while the first seat's share is above `max_first_player_share`
//! (two-player; moved to a seat's share for 3–4 players) or diversity is below
//! `min_opening_diversity`. Each cycle whose window holds new games publishes
//! QUALITY_SCORE_UPDATED (training_trigger reads its score against `min_quality`).

use handler_base::scope::Scope;
use handler_base::{Context, DaemonInfo, Handler, HealthCheckResult};
use handler_base::{Publish, event};
use ringrift_contracts::sprt::per_seat_bar;
use ringrift_proto::wire;
use ringrift_store::games::{GameRecord, GameStore};
use ringrift_store::{ConfigKey, paths};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub const INFO: DaemonInfo = DaemonInfo {
    name: "quality_monitor",
    about: "Selfplay quality: game length, first-player share, opening diversity",
    cycle_interval_s: Some(60.0),
    scope: Some(Scope::Node),
};

/// `[quality_monitor]` in ringrift.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualityConfig {
    /// Latest games per config the figures are over.
    pub window: usize,
    /// Fewer games than this in the window: figures are shown but nothing is judged.
    pub min_games: usize,
    /// Plies that make an opening.
    pub opening_plies: usize,
    /// Two-player bar on the first seat's share of decided games.
    pub max_first_player_share: f64,
    pub min_opening_diversity: f64,
}

impl Default for QualityConfig {
    fn default() -> Self {
        QualityConfig {
            window: 500,
            min_games: 50,
            opening_plies: 4,
            max_first_player_share: 0.75,
            min_opening_diversity: 0.3,
        }
    }
}

impl QualityConfig {
    fn validate(&self) -> anyhow::Result<()> {
        handler_base::ensure_config!(
            self.window > 0 && self.min_games <= self.window && self.opening_plies > 0,
            "quality_monitor: window > 0, min_games <= window, opening_plies > 0 (got {}, {}, {})",
            self.window,
            self.min_games,
            self.opening_plies
        );
        for (k, v) in [
            ("max_first_player_share", self.max_first_player_share),
            ("min_opening_diversity", self.min_opening_diversity),
        ] {
            handler_base::ensure_config!(
                (0.0..=1.0).contains(&v),
                "quality_monitor.{k} = {v}: must be within 0..=1"
            );
        }
        Ok(())
    }
}

/// The figures of one config's window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub games: usize,
    pub mean_length: f64,
    /// Wins of the first seat over decided games.
    pub first_player_share: f64,
    pub draw_share: f64,
    /// Distinct openings over games.
    pub opening_diversity: f64,
    /// Plies whose move was the top of the recorded distribution, over plies with one
    /// (None: no game recorded a distribution).
    pub policy_agreement: Option<f64>,
    /// Plies whose search value's sign is the outcome's, over plies of decided games
    /// with a nonzero value (None: no such ply).
    pub value_agreement: Option<f64>,
    /// 0..1: the mean of seat balance (1 when the first seat wins its even share, 0 when
    /// it wins every game) and opening diversity.
    pub quality_score: f64,
}

/// Figures of `games` (any order) of a `players` game.
pub fn figures(games: &[GameRecord], players: u8, opening_plies: usize) -> Figures {
    let n = games.len();
    if n == 0 {
        return Figures::default();
    }
    let even = 1.0 / f64::from(players.max(2));
    let decided: Vec<&GameRecord> = games.iter().filter(|g| g.winner.is_some()).collect();
    let first = decided.iter().filter(|g| g.winner == Some(0)).count();
    let first_player_share = if decided.is_empty() {
        even
    } else {
        first as f64 / decided.len() as f64
    };
    let openings: HashSet<&[u16]> = games
        .iter()
        .map(|g| &g.moves[..g.moves.len().min(opening_plies)])
        .collect();
    let (mut agree, mut plies) = (0usize, 0usize);
    for g in games {
        let Some(policy) = &g.policy else { continue };
        for (dist, &m) in policy.iter().zip(&g.moves) {
            let top = dist.iter().max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some(&(cell, _)) = top {
                plies += 1;
                agree += usize::from(cell == m);
            }
        }
    }
    let (mut right, mut valued) = (0usize, 0usize);
    for g in games {
        let (Some(w), Some(values)) = (g.winner, &g.search_values) else {
            continue;
        };
        for (ply, &v) in values.iter().enumerate().filter(|(_, v)| **v != 0.0) {
            let mover_won = ply % usize::from(players.max(2)) == usize::from(w);
            valued += 1;
            right += usize::from((v > 0.0) == mover_won);
        }
    }
    let balance = (1.0 - (first_player_share - even).abs() / (1.0 - even)).clamp(0.0, 1.0);
    let opening_diversity = openings.len() as f64 / n as f64;
    Figures {
        games: n,
        mean_length: games.iter().map(|g| g.moves.len()).sum::<usize>() as f64 / n as f64,
        first_player_share,
        draw_share: (n - decided.len()) as f64 / n as f64,
        opening_diversity,
        policy_agreement: (plies > 0).then(|| agree as f64 / plies as f64),
        value_agreement: (valued > 0).then(|| right as f64 / valued as f64),
        quality_score: (balance + opening_diversity) / 2.0,
    }
}

/// What is wrong with a window's figures (empty: healthy, or too few games to judge).
pub fn problems(cfg: &QualityConfig, f: &Figures, players: u8) -> Vec<String> {
    let mut out = Vec::new();
    if f.games < cfg.min_games {
        return out;
    }
    let bar = per_seat_bar(cfg.max_first_player_share, players);
    if f.first_player_share > bar {
        out.push(format!(
            "first seat wins {:.2} of decided games > {bar:.2}",
            f.first_player_share
        ));
    }
    if f.opening_diversity < cfg.min_opening_diversity {
        out.push(format!(
            "{:.2} distinct openings per game < {:.2}",
            f.opening_diversity, cfg.min_opening_diversity
        ));
    }
    out
}

#[derive(Debug, Clone, Default)]
struct Seen {
    /// Highest game seq already reported.
    max_seq: i64,
    figures: Figures,
    problems: Vec<String>,
}

pub struct Monitor {
    pub cfg: QualityConfig,
    pub home: PathBuf,
    pub configs: Vec<ConfigKey>,
    seen: Mutex<BTreeMap<ConfigKey, Seen>>,
}

impl Monitor {
    pub fn new(cfg: QualityConfig, home: PathBuf, configs: Vec<ConfigKey>) -> Self {
        Monitor {
            cfg,
            home,
            configs,
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, BTreeMap<ConfigKey, Seen>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads each config's window and publishes the figures of a window with new games;
    /// returns the configs reported.
    pub async fn check(&self, emit: &dyn Publish) -> anyhow::Result<Vec<ConfigKey>> {
        let mut reported = Vec::new();
        for &config in &self.configs {
            let db = paths::game_db(&self.home, config);
            let window = self.cfg.window;
            let read = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                if !db.exists() {
                    return Ok(None);
                }
                let store = GameStore::open(&db)?;
                let max = store.max_seq()?;
                let games = store.games_since((max - window as i64).max(0), window)?;
                Ok(Some((max, games)))
            })
            .await??;
            let Some((max_seq, games)) = read else {
                continue;
            };
            if self
                .seen()
                .get(&config)
                .is_some_and(|s| s.max_seq >= max_seq)
            {
                continue;
            }
            let records: Vec<GameRecord> = games.into_iter().map(|g| g.game).collect();
            let players = config.players();
            let f = figures(&records, players, self.cfg.opening_plies);
            let problems = problems(&self.cfg, &f, players);
            let p = wire::QualityScoreUpdated {
                quality_score: f.quality_score,
                avg_game_length: f.mean_length,
                policy_accuracy: f.policy_agreement.unwrap_or(0.0),
                value_accuracy: f.value_agreement.unwrap_or(0.0),
            };
            emit.publish_acked(event(
                wire::event::Payload::QualityScoreUpdated(p),
                format!("quality:{config}:{max_seq}"),
                &config.to_string(),
            ))
            .await?;
            if problems.is_empty() {
                tracing::info!(%config, games = f.games, length = f.mean_length, first_player = f.first_player_share, diversity = f.opening_diversity, quality = f.quality_score, "QUALITY_SCORE_UPDATED");
            } else {
                tracing::warn!(%config, problems = %problems.join("; "), quality = f.quality_score, "QUALITY_SCORE_UPDATED: selfplay is collapsing");
            }
            self.seen().insert(
                config,
                Seen {
                    max_seq,
                    figures: f,
                    problems,
                },
            );
            reported.push(config);
        }
        Ok(reported)
    }

    pub fn health(&self) -> HealthCheckResult {
        let seen = self.seen().clone();
        let line = |c: &ConfigKey, s: &Seen| {
            let f = &s.figures;
            format!(
                "{c}: {} games, length {:.1}, first seat {:.2}, draws {:.2}, openings {:.2}, policy agreement {}, quality {:.2}",
                f.games,
                f.mean_length,
                f.first_player_share,
                f.draw_share,
                f.opening_diversity,
                f.policy_agreement
                    .map_or("-".to_owned(), |a| format!("{a:.2}")),
                f.quality_score
            )
        };
        let problems: Vec<String> = seen
            .iter()
            .flat_map(|(c, s)| s.problems.iter().map(move |p| format!("{c}: {p}")))
            .collect();
        let summary = if seen.is_empty() {
            "no games yet".to_owned()
        } else {
            seen.iter()
                .map(|(c, s)| line(c, s))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let mut h = if problems.is_empty() {
            HealthCheckResult::running(summary)
        } else {
            HealthCheckResult::degraded(format!("{}; {summary}", problems.join("; ")))
        };
        for (c, s) in &seen {
            h = h.detail(
                format!("{c}.quality"),
                format!("{:.3}", s.figures.quality_score),
            );
        }
        h
    }
}

pub fn build(ctx: &Context) -> anyhow::Result<Arc<dyn Handler>> {
    let cfg: QualityConfig = ctx.settings.section("quality_monitor")?;
    cfg.validate()?;
    let configs = ringrift_loop::configs(ctx)?;
    Ok(Arc::new(Monitor::new(cfg, ctx.home.clone(), configs)))
}

#[async_trait::async_trait]
impl Handler for Monitor {
    async fn run_cycle(&self, ctx: &Context) -> anyhow::Result<()> {
        self.check(&*ctx.publisher).await.map(|_| ())
    }
    fn health_check(&self) -> HealthCheckResult {
        self.health()
    }
}

#[cfg(test)]
mod tests;
