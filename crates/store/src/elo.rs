//! Elo store `data/unified_elo.db`: participants, per-config ratings, match history.
//!
//! K = 32, new participants start at 1500, `random` is pinned at 400 and `heuristic` at
//! 1200 (pinned ratings never move; they anchor the scale). Recording a match is
//! idempotent on its `match_id`, which is also what makes merging another node's
//! database safe to repeat: jobs derive match ids from their job id and game index, so a
//! replayed job records nothing twice.
//!
//! A game of 3 or 4 players is recorded as one seat against the field (the other seats,
//! copies of one opponent): the seat's expected score is its even share 1/n moved by the
//! rating difference ([`expected_score`]), so equal players drift nowhere and a rating
//! gap means the same odds in every config.
//!
//! A model participates under one identity, the SHA-256 of its payload (the weights as
//! the `.rrm` header records them), whatever file it is read from; `label` (schema v2)
//! is a name for people (the file stem). Participants of databases written before v2
//! keep their ids, labelled with them.
//!
//! A leader-only writer (the tournament job) records with its fencing token
//! ([`EloStore::record_matches_fenced`], schema v3 table `fence`): a token lower than the
//! highest accepted is refused with [`StoreError::Fenced`] in the same transaction as the
//! matches, so a deposed leader's tournament records nothing.

use crate::error::SqlContext;
use crate::{ConfigKey, OffRuntime, StoreError, db};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::MutexGuard;

pub const K_FACTOR: f64 = 32.0;
pub const START_RATING: f64 = 1500.0;
pub use ringrift_contracts::report::{HEURISTIC_ID, RANDOM_ID};
pub const RANDOM_RATING: f64 = 400.0;
pub const HEURISTIC_RATING: f64 = 1200.0;

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE participants (
        participant_id TEXT PRIMARY KEY NOT NULL,
        kind TEXT NOT NULL,
        pinned_rating REAL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE elo_ratings (
        participant_id TEXT NOT NULL REFERENCES participants(participant_id),
        config_key TEXT NOT NULL,
        rating REAL NOT NULL,
        games INTEGER NOT NULL DEFAULT 0,
        wins INTEGER NOT NULL DEFAULT 0,
        losses INTEGER NOT NULL DEFAULT 0,
        draws INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (participant_id, config_key)
    );
    CREATE TABLE match_history (
        match_id TEXT PRIMARY KEY NOT NULL,
        config_key TEXT NOT NULL,
        participant_a TEXT NOT NULL,
        participant_b TEXT NOT NULL,
        score_a REAL NOT NULL,
        played_at INTEGER NOT NULL,
        source_node TEXT NOT NULL,
        rating_a_after REAL NOT NULL,
        rating_b_after REAL NOT NULL
    );
    CREATE INDEX match_history_config ON match_history(config_key, played_at);",
    "ALTER TABLE participants ADD COLUMN label TEXT;
    UPDATE participants SET label = participant_id;",
    "CREATE TABLE fence (
        name TEXT PRIMARY KEY NOT NULL,
        token INTEGER NOT NULL
    );",
];

/// The fence of leader-only writers ([`EloStore::record_matches_fenced`]).

/// The pinned rating of a built-in anchor participant, if it is one.
pub fn pinned_rating(participant: &str) -> Option<f64> {
    match participant {
        RANDOM_ID => Some(RANDOM_RATING),
        HEURISTIC_ID => Some(HEURISTIC_RATING),
        _ => None,
    }
}

/// Expected score of A (one seat) against B (every other seat) in a `players` game: the
/// logistic curve for two players, the even share 1/n at equal ratings otherwise.
pub fn expected_score(rating_a: f64, rating_b: f64, players: u8) -> f64 {
    ringrift_contracts::sprt::expected_score(rating_a - rating_b, players)
}

/// `a` scored `score_a` points (1 per win, ½ per draw) over `games` games against `b`
/// (every other seat); `a` and `b` index the participants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairScore {
    pub a: usize,
    pub b: usize,
    pub score_a: f64,
    pub games: f64,
}

/// Maximum-likelihood ratings of `n` participants from their pair scores in a game of
/// `players` (mean [`START_RATING`]). The model is [`expected_score`]'s: with
/// `g = 10^(rating / 400)`, one seat of `a` against `players − 1` seats of `b` scores
/// `g_a / (g_a + (players − 1) g_b)`, a Bradley–Terry (for more seats, Luce) model,
/// fitted by its minorise–maximise iteration. Unlike the store's running K = 32 updates
/// the result does not depend on the order the games were played in. A participant
/// with no points is held at a thousandth of one, so it gets a low finite rating; one
/// in no pair keeps the mean.
pub fn fit_ratings(n: usize, pairs: &[PairScore], players: u8) -> Vec<f64> {
    let copies = f64::from(players.max(2) - 1);
    let mut points = vec![0.0; n];
    for p in pairs {
        points[p.a] += p.score_a;
        points[p.b] += p.games - p.score_a;
    }
    let mut g = vec![1.0f64; n];
    for _ in 0..2000 {
        let mut denom = vec![0.0; n];
        for p in pairs {
            let d = g[p.a] + copies * g[p.b];
            denom[p.a] += p.games / d;
            denom[p.b] += p.games * copies / d;
        }
        for i in 0..n {
            if denom[i] > 0.0 {
                g[i] = f64::max(points[i], 1e-3) / denom[i];
            }
        }
        let mean = g.iter().map(|x| x.ln()).sum::<f64>() / n.max(1) as f64;
        g.iter_mut().for_each(|x| *x /= mean.exp());
    }
    g.iter().map(|x| START_RATING + 400.0 * x.log10()).collect()
}

/// New ratings after one game of `players` where A scored `score_a` (1 win, 0.5 draw, 0
/// loss). A pinned side keeps its rating.
pub fn update(
    rating_a: f64,
    rating_b: f64,
    score_a: f64,
    players: u8,
    pinned_a: bool,
    pinned_b: bool,
) -> (f64, f64) {
    let ea = expected_score(rating_a, rating_b, players);
    let delta = K_FACTOR * (score_a - ea);
    let a = if pinned_a { rating_a } else { rating_a + delta };
    let b = if pinned_b { rating_b } else { rating_b - delta };
    (a, b)
}

/// One game between two participants. `score_a`: 1.0 A won, 0.5 draw, 0.0 B won.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchResult {
    pub match_id: String,
    pub config_key: ConfigKey,
    pub participant_a: String,
    pub participant_b: String,
    pub score_a: f64,
    pub played_at: i64,
    pub source_node: String,
}

/// A participant's rating in one config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rating {
    pub participant_id: String,
    /// The participant's name for people, if one was given.
    pub label: Option<String>,
    pub config_key: ConfigKey,
    pub rating: f64,
    pub games: u64,
    pub wins: u64,
    pub losses: u64,
    pub draws: u64,
}

/// The Elo database. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct EloStore {
    db: db::SharedDb,
}

impl std::fmt::Debug for EloStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EloStore")
            .field("path", &self.db.path())
            .finish()
    }
}

impl OffRuntime for EloStore {}

impl EloStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(EloStore {
            db: db::SharedDb::open(path, MIGRATIONS)?,
        })
    }

    pub fn path(&self) -> &Path {
        self.db.path()
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.db.lock()
    }

    /// Records a match and updates both ratings. Returns `false` (and changes nothing)
    /// when a match with this id was already recorded.
    pub fn record_match(&self, m: &MatchResult) -> Result<bool, StoreError> {
        let path = self.path();
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .ctx(path)?;
        let new = record_in(&tx, path, m)?;
        tx.commit().ctx(path)?;
        Ok(new)
    }

    /// Records many matches in one transaction; returns how many were new.
    pub fn record_matches(&self, ms: &[MatchResult]) -> Result<usize, StoreError> {
        let path = self.path();
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .ctx(path)?;
        let mut n = 0;
        for m in ms {
            n += usize::from(record_in(&tx, path, m)?);
        }
        tx.commit().ctx(path)?;
        Ok(n)
    }

    /// Records many matches in one transaction as the leader holding fencing `token`;
    /// returns how many were new. [`StoreError::Fenced`] (nothing recorded) when a
    /// higher token was accepted before; otherwise the token is the highest accepted.
    pub fn record_matches_fenced(
        &self,
        ms: &[MatchResult],
        token: u64,
    ) -> Result<usize, StoreError> {
        let path = self.path();
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .ctx(path)?;
        if let Err(seen) = crate::fence::raise(&tx, path, token)? {
            return Err(StoreError::Fenced { token, seen });
        }
        let mut n = 0;
        for m in ms {
            n += usize::from(record_in(&tx, path, m)?);
        }
        tx.commit().ctx(path)?;
        Ok(n)
    }

    /// The highest fencing token accepted ([`EloStore::record_matches_fenced`]), if any.
    pub fn fence_token(&self) -> Result<Option<u64>, StoreError> {
        crate::fence::read(&self.conn(), self.path())
    }

    /// Names participants for people: `(participant id, label)`; a later label replaces
    /// an earlier one.
    pub fn set_labels(&self, labels: &[(String, String)]) -> Result<(), StoreError> {
        let path = self.path();
        let mut conn = self.conn();
        let tx = conn.transaction().ctx(path)?;
        for (id, label) in labels {
            label_in(&tx, path, id, label, true)?;
        }
        tx.commit().ctx(path)
    }

    /// The rating of a participant in a config: the pinned value for anchors, the start
    /// rating for one never seen.
    pub fn rating(&self, participant: &str, config: ConfigKey) -> Result<Rating, StoreError> {
        let conn = self.conn();
        rating_in(&conn, self.path(), participant, config)
    }

    /// All ratings in a config, best first.
    pub fn leaderboard(&self, config: ConfigKey) -> Result<Vec<Rating>, StoreError> {
        let path = self.path();
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT e.participant_id, e.rating, e.games, e.wins, e.losses, e.draws, p.label
                 FROM elo_ratings e LEFT JOIN participants p USING (participant_id)
                 WHERE e.config_key = ?1 ORDER BY e.rating DESC, e.participant_id",
            )
            .ctx(path)?;
        let rows = stmt
            .query_map([config.to_string()], |r| {
                Ok(Rating {
                    participant_id: r.get(0)?,
                    label: r.get(6)?,
                    config_key: config,
                    rating: r.get(1)?,
                    games: r.get::<_, i64>(2)?.try_into().unwrap_or(0),
                    wins: r.get::<_, i64>(3)?.try_into().unwrap_or(0),
                    losses: r.get::<_, i64>(4)?.try_into().unwrap_or(0),
                    draws: r.get::<_, i64>(5)?.try_into().unwrap_or(0),
                })
            })
            .ctx(path)?;
        rows.collect::<Result<Vec<_>, _>>().ctx(path)
    }

    pub fn match_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn()
            .query_row("SELECT COUNT(*) FROM match_history", [], |r| r.get(0))
            .ctx(self.path())?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Merges another node's Elo database: every match not yet known here is recorded
    /// (in the order it was played), updating local ratings; its labels name
    /// participants that have none here. Idempotent.
    pub fn merge_from(&self, source: &Path) -> Result<usize, StoreError> {
        if !source.exists() {
            return Err(StoreError::NotFound(format!(
                "source Elo store {}",
                source.display()
            )));
        }
        let src = EloStore::open(source)?;
        let matches = src.all_matches()?;
        let labels = src.labels()?;
        drop(src);
        let n = self.record_matches(&matches)?;
        let path = self.path();
        let mut conn = self.conn();
        let tx = conn.transaction().ctx(path)?;
        for (id, label) in &labels {
            label_in(&tx, path, id, label, false)?;
        }
        tx.commit().ctx(path)?;
        Ok(n)
    }

    fn labels(&self) -> Result<Vec<(String, String)>, StoreError> {
        let path = self.path();
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT participant_id, label FROM participants WHERE label IS NOT NULL")
            .ctx(path)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .ctx(path)?;
        rows.collect::<Result<Vec<_>, _>>().ctx(path)
    }

    fn all_matches(&self) -> Result<Vec<MatchResult>, StoreError> {
        let path = self.path();
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT match_id, config_key, participant_a, participant_b, score_a, played_at,
                        source_node FROM match_history ORDER BY played_at, match_id",
            )
            .ctx(path)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, f64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, String>(6)?,
                ))
            })
            .ctx(path)?;
        let mut out = Vec::new();
        for row in rows {
            let (match_id, config, participant_a, participant_b, score_a, played_at, source_node) =
                row.ctx(path)?;
            let config_key =
                config
                    .parse()
                    .map_err(|e: crate::InvalidConfigKey| StoreError::Corrupt {
                        path: path.to_path_buf(),
                        reason: format!("match {match_id}: {e}"),
                    })?;
            out.push(MatchResult {
                match_id,
                config_key,
                participant_a,
                participant_b,
                score_a,
                played_at,
                source_node,
            });
        }
        Ok(out)
    }

    pub async fn record_matches_async(&self, ms: Vec<MatchResult>) -> Result<usize, StoreError> {
        self.off_runtime(move |s| s.record_matches(&ms)).await
    }

    pub async fn rating_async(
        &self,
        participant: String,
        config: ConfigKey,
    ) -> Result<Rating, StoreError> {
        self.off_runtime(move |s| s.rating(&participant, config))
            .await
    }

    pub async fn merge_from_async(&self, source: PathBuf) -> Result<usize, StoreError> {
        self.off_runtime(move |s| s.merge_from(&source)).await
    }
}

/// Labels `id` (creating the participant); `replace` overwrites an existing label.
fn label_in(
    tx: &Transaction<'_>,
    path: &Path,
    id: &str,
    label: &str,
    replace: bool,
) -> Result<(), StoreError> {
    let kind = if pinned_rating(id).is_some() {
        "baseline"
    } else {
        "model"
    };
    let on_conflict = if replace {
        "label = excluded.label"
    } else {
        "label = COALESCE(participants.label, excluded.label)"
    };
    tx.execute(
        &format!(
            "INSERT INTO participants (participant_id, kind, pinned_rating, created_at, label)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (participant_id) DO UPDATE SET {on_conflict}"
        ),
        params![id, kind, pinned_rating(id), crate::now_ms(), label],
    )
    .ctx(path)?;
    Ok(())
}

fn rating_in(
    conn: &Connection,
    path: &Path,
    participant: &str,
    config: ConfigKey,
) -> Result<Rating, StoreError> {
    let row = conn
        .query_row(
            "SELECT rating, games, wins, losses, draws FROM elo_ratings
             WHERE participant_id = ?1 AND config_key = ?2",
            params![participant, config.to_string()],
            |r| {
                Ok((
                    r.get::<_, f64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            },
        )
        .optional()
        .ctx(path)?;
    let (rating, games, wins, losses, draws) = row.unwrap_or((START_RATING, 0, 0, 0, 0));
    let label = conn
        .query_row(
            "SELECT label FROM participants WHERE participant_id = ?1",
            [participant],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()
        .ctx(path)?
        .flatten();
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(Rating {
        participant_id: participant.to_string(),
        label,
        config_key: config,
        rating: pinned_rating(participant).unwrap_or(rating),
        games: n(games),
        wins: n(wins),
        losses: n(losses),
        draws: n(draws),
    })
}

fn record_in(tx: &Transaction<'_>, path: &Path, m: &MatchResult) -> Result<bool, StoreError> {
    if !(m.score_a == 0.0 || m.score_a == 0.5 || m.score_a == 1.0) {
        return Err(StoreError::Invalid(format!(
            "match {}: score_a must be 0, 0.5 or 1, got {}",
            m.match_id, m.score_a
        )));
    }
    if m.participant_a == m.participant_b {
        return Err(StoreError::Invalid(format!(
            "match {}: {} cannot play itself",
            m.match_id, m.participant_a
        )));
    }
    let exists: bool = tx
        .query_row(
            "SELECT 1 FROM match_history WHERE match_id = ?1",
            [&m.match_id],
            |_| Ok(true),
        )
        .optional()
        .ctx(path)?
        .unwrap_or(false);
    if exists {
        return Ok(false);
    }
    let ra = rating_in(tx, path, &m.participant_a, m.config_key)?;
    let rb = rating_in(tx, path, &m.participant_b, m.config_key)?;
    let (na, nb) = update(
        ra.rating,
        rb.rating,
        m.score_a,
        m.config_key.players(),
        pinned_rating(&m.participant_a).is_some(),
        pinned_rating(&m.participant_b).is_some(),
    );
    tx.execute(
        "INSERT INTO match_history (match_id, config_key, participant_a, participant_b, score_a,
            played_at, source_node, rating_a_after, rating_b_after)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            m.match_id,
            m.config_key.to_string(),
            m.participant_a,
            m.participant_b,
            m.score_a,
            m.played_at,
            m.source_node,
            na,
            nb
        ],
    )
    .ctx(path)?;
    let now = crate::now_ms();
    for (who, rating, score) in [
        (&m.participant_a, na, m.score_a),
        (&m.participant_b, nb, 1.0 - m.score_a),
    ] {
        let kind = if pinned_rating(who).is_some() {
            "baseline"
        } else {
            "model"
        };
        tx.execute(
            "INSERT OR IGNORE INTO participants (participant_id, kind, pinned_rating, created_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![who, kind, pinned_rating(who), now],
        )
        .ctx(path)?;
        let (w, l, d) = match score {
            1.0 => (1, 0, 0),
            0.0 => (0, 1, 0),
            _ => (0, 0, 1),
        };
        tx.execute(
            "INSERT INTO elo_ratings (participant_id, config_key, rating, games, wins, losses, draws, updated_at)
             VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7)
             ON CONFLICT (participant_id, config_key) DO UPDATE SET
                rating = excluded.rating, games = games + 1, wins = wins + excluded.wins,
                losses = losses + excluded.losses, draws = draws + excluded.draws,
                updated_at = excluded.updated_at",
            params![who, m.config_key.to_string(), rating, w, l, d, now],
        )
        .ctx(path)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests;
