//! Game store `data/games/{board}_{n}p*.db`: one row per finished game, keyed by UUID.
//!
//! Rows are never updated or deleted by this module. The watermark of "new games" is the
//! local `rowid` (ingest order), not `created_at`: games merged from another node arrive
//! with old timestamps but still count as new here.

use crate::error::SqlContext;
use crate::{ConfigKey, OffRuntime, StoreError, db};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::MutexGuard;

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE games (
        game_id TEXT PRIMARY KEY NOT NULL,
        config_key TEXT NOT NULL,
        num_players INTEGER NOT NULL,
        players TEXT NOT NULL,
        winner INTEGER,
        moves TEXT NOT NULL,
        length INTEGER NOT NULL,
        source_node TEXT NOT NULL,
        quality_score REAL NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX games_config ON games(config_key);",
    // v2: the search's move distribution per ply (training policy targets).
    "ALTER TABLE games ADD COLUMN policy TEXT;",
];

/// One finished game. `winner` is the seat index (0-based) or `None` for a draw;
/// `moves` are cell indices in play order; `players` names who sat in each seat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GameRecord {
    pub game_id: String,
    pub config_key: ConfigKey,
    pub players: Vec<String>,
    pub winner: Option<u8>,
    pub moves: Vec<u16>,
    pub source_node: String,
    pub quality_score: f64,
    pub created_at: i64,
    /// Per ply, the searched move distribution as sparse `(cell, probability)` pairs;
    /// `None` when the producer recorded none (export then uses the move played).
    #[serde(default)]
    pub policy: Option<Vec<Vec<(u16, f32)>>>,
}

impl GameRecord {
    pub fn length(&self) -> usize {
        self.moves.len()
    }
}

/// A game read back with its local ingest sequence (the watermark unit).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredGame {
    pub seq: i64,
    pub game: GameRecord,
}

/// A SQLite game store. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct GameStore {
    db: db::SharedDb,
}

impl std::fmt::Debug for GameStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GameStore")
            .field("path", &self.db.path())
            .finish()
    }
}

impl OffRuntime for GameStore {}

impl GameStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(GameStore {
            db: db::SharedDb::open(path, MIGRATIONS)?,
        })
    }

    pub fn path(&self) -> &Path {
        self.db.path()
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.db.lock()
    }

    /// Inserts games, ignoring ones whose `game_id` already exists. Returns how many
    /// were new. All-or-nothing: one transaction.
    pub fn insert_games(&self, games: &[GameRecord]) -> Result<usize, StoreError> {
        let path = self.path();
        let mut conn = self.conn();
        let tx = conn.transaction().ctx(path)?;
        let mut inserted = 0;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO games (game_id, config_key, num_players, players, winner,
                        moves, length, source_node, quality_score, created_at, policy)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .ctx(path)?;
            for g in games {
                if g.players.len() != usize::from(g.config_key.players()) {
                    return Err(StoreError::Invalid(format!(
                        "game {} has {} players but config {} needs {}",
                        g.game_id,
                        g.players.len(),
                        g.config_key,
                        g.config_key.players()
                    )));
                }
                let players = serde_json::to_string(&g.players)
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                let moves = serde_json::to_string(&g.moves)
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                if let Some(p) = &g.policy
                    && p.len() != g.moves.len()
                {
                    return Err(StoreError::Invalid(format!(
                        "game {} has {} moves but {} policy entries",
                        g.game_id,
                        g.moves.len(),
                        p.len()
                    )));
                }
                let policy = g
                    .policy
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                inserted += stmt
                    .execute(params![
                        g.game_id,
                        g.config_key.to_string(),
                        g.config_key.players(),
                        players,
                        g.winner,
                        moves,
                        g.moves.len() as i64,
                        g.source_node,
                        g.quality_score,
                        g.created_at,
                        policy
                    ])
                    .ctx(path)?;
            }
        }
        tx.commit().ctx(path)?;
        Ok(inserted)
    }

    /// Number of games ingested after `watermark` (a `seq` from an earlier read; 0 = all).
    pub fn count_since(&self, watermark: i64) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM games WHERE rowid > ?1",
                [watermark],
                |r| r.get(0),
            )
            .ctx(self.path())?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The highest ingest sequence so far (0 when empty): the next watermark.
    pub fn max_seq(&self) -> Result<i64, StoreError> {
        let n: Option<i64> = self
            .conn()
            .query_row("SELECT MAX(rowid) FROM games", [], |r| r.get(0))
            .ctx(self.path())?;
        Ok(n.unwrap_or(0))
    }

    pub fn count(&self) -> Result<u64, StoreError> {
        self.count_since(0)
    }

    /// Games ingested after `watermark`, in ingest order, at most `limit`.
    pub fn games_since(&self, watermark: i64, limit: usize) -> Result<Vec<StoredGame>, StoreError> {
        let path = self.path();
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT rowid, game_id, config_key, players, winner, moves, source_node,
                        quality_score, created_at, policy
                 FROM games WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
            )
            .ctx(path)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![watermark, limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, f64>(7)?,
                    r.get::<_, i64>(8)?,
                    r.get::<_, Option<String>>(9)?,
                ))
            })
            .ctx(path)?;
        let mut out = Vec::new();
        for row in rows {
            let (
                seq,
                game_id,
                config,
                players,
                winner,
                moves,
                source_node,
                quality_score,
                created_at,
                policy,
            ) = row.ctx(path)?;
            let corrupt = |reason: String| StoreError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("game {game_id}: {reason}"),
            };
            let config_key: ConfigKey = config
                .parse()
                .map_err(|e: crate::InvalidConfigKey| corrupt(e.to_string()))?;
            let players: Vec<String> =
                serde_json::from_str(&players).map_err(|e| corrupt(format!("players: {e}")))?;
            let moves: Vec<u16> =
                serde_json::from_str(&moves).map_err(|e| corrupt(format!("moves: {e}")))?;
            let policy: Option<Vec<Vec<(u16, f32)>>> = policy
                .map(|p| serde_json::from_str(&p))
                .transpose()
                .map_err(|e| corrupt(format!("policy: {e}")))?;
            let winner = match winner {
                None => None,
                Some(w) => Some(
                    u8::try_from(w)
                        .ok()
                        .filter(|&w| w < config_key.players())
                        .ok_or_else(|| corrupt(format!("winner seat {w} out of range")))?,
                ),
            };
            out.push(StoredGame {
                seq,
                game: GameRecord {
                    game_id,
                    config_key,
                    players,
                    winner,
                    moves,
                    source_node,
                    quality_score,
                    created_at,
                    policy,
                },
            });
        }
        Ok(out)
    }

    pub fn get(&self, game_id: &str) -> Result<Option<GameRecord>, StoreError> {
        let seq: Option<i64> = self
            .conn()
            .query_row(
                "SELECT rowid FROM games WHERE game_id = ?1",
                [game_id],
                |r| r.get(0),
            )
            .optional()
            .ctx(self.path())?;
        match seq {
            None => Ok(None),
            Some(seq) => Ok(self
                .games_since(seq - 1, 1)?
                .into_iter()
                .next()
                .map(|g| g.game)),
        }
    }

    /// Merges every game of another store file into this one by `INSERT OR IGNORE` on
    /// `game_id`. Idempotent. The source is attached and only read, in one
    /// transaction, so a writer appending to it concurrently is seen as a consistent
    /// snapshot (its later rows arrive on the next merge). Returns how many were new.
    pub fn merge_from(&self, source: &Path) -> Result<usize, StoreError> {
        self.merge_where(source, None)
    }

    /// [`GameStore::merge_from`] restricted to the games of `config` (a file holding
    /// games of several configs, e.g. an orphan, is merged into each config's store).
    pub fn merge_config_from(&self, source: &Path, config: ConfigKey) -> Result<usize, StoreError> {
        self.merge_where(source, Some(config))
    }

    fn merge_where(&self, source: &Path, config: Option<ConfigKey>) -> Result<usize, StoreError> {
        if !source.exists() {
            return Err(StoreError::NotFound(format!(
                "source game store {}",
                source.display()
            )));
        }
        let path = self.path();
        let mut conn = self.conn();
        let source_str = source
            .to_str()
            .ok_or_else(|| StoreError::Invalid(format!("non-UTF-8 path {}", source.display())))?;
        conn.execute("ATTACH DATABASE ?1 AS src", [source_str])
            .ctx(source)?;
        let result = (|| -> Result<usize, StoreError> {
            let tx = conn.transaction().ctx(path)?;
            // A source still on schema v1 has no policy column.
            let has_policy: bool = tx
                .query_row(
                    "SELECT COUNT(*) > 0 FROM pragma_table_info('games', 'src') WHERE name = 'policy'",
                    [],
                    |r| r.get(0),
                )
                .ctx(source)?;
            let policy = if has_policy { "policy" } else { "NULL" };
            let filter = if config.is_some() {
                "WHERE config_key = ?1"
            } else {
                ""
            };
            let sql = format!(
                "INSERT OR IGNORE INTO main.games (game_id, config_key, num_players, players,
                    winner, moves, length, source_node, quality_score, created_at, policy)
                 SELECT game_id, config_key, num_players, players, winner, moves, length,
                    source_node, quality_score, created_at, {policy}
                 FROM src.games {filter} ORDER BY rowid"
            );
            let n = match config {
                Some(c) => tx.execute(&sql, [c.to_string()]),
                None => tx.execute(&sql, []),
            }
            .ctx(source)?;
            tx.commit().ctx(path)?;
            Ok(n)
        })();
        let detach = conn.execute("DETACH DATABASE src", []).ctx(path);
        let n = result?;
        detach?;
        Ok(n)
    }

    pub async fn insert_games_async(&self, games: Vec<GameRecord>) -> Result<usize, StoreError> {
        self.off_runtime(move |s| s.insert_games(&games)).await
    }

    pub async fn count_since_async(&self, watermark: i64) -> Result<u64, StoreError> {
        self.off_runtime(move |s| s.count_since(watermark)).await
    }

    pub async fn merge_from_async(&self, source: PathBuf) -> Result<usize, StoreError> {
        self.off_runtime(move |s| s.merge_from(&source)).await
    }
}

pub mod foreign;

#[cfg(test)]
mod tests;
