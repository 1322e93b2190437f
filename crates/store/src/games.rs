//! Game store `data/games/{board}_{n}p*.db`: one row per finished game, keyed by UUID.
//!
//! Rows are never deleted by this module. The watermark of "new games" is the local
//! `rowid` (ingest order), not `created_at`: games merged from another node arrive with
//! old timestamps but still count as new here.
//!
//! Quarantine: a stored game found unplayable (the engine's referee, run by whoever serves,
//! pushes or exports it) is marked with the reason ([`GameStore::quarantine`]) and from
//! then on is read, counted and sent by nothing here; its row stays, so no `rowid` is
//! reused under a watermark. A correct copy of it received later takes its id: the marked
//! row is renamed and the copy is inserted as a new game. A received game whose id is
//! stored with other moves or winner is kept out and reported ([`Inserted::conflicts`]).

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
    // v3: the search's root value per ply (training value targets).
    "ALTER TABLE games ADD COLUMN search_values TEXT;",
    // v4: the games per (source node, hour) counted as they are inserted (a trigger), so
    // `/games/summary` reads a few rows instead of grouping the whole table. The hour is
    // `created_at` floor-divided by MS_PER_HOUR (negative times included).
    "CREATE TABLE game_batches (
        source_node TEXT NOT NULL,
        hour INTEGER NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (source_node, hour)
    ) WITHOUT ROWID;
    INSERT INTO game_batches (source_node, hour, count)
        SELECT source_node,
               (created_at - ((created_at % 3600000) + 3600000) % 3600000) / 3600000 AS hour,
               COUNT(*)
        FROM games GROUP BY source_node, hour;
    CREATE TRIGGER games_count_batch AFTER INSERT ON games BEGIN
        INSERT INTO game_batches (source_node, hour, count)
        VALUES (NEW.source_node,
                (NEW.created_at - ((NEW.created_at % 3600000) + 3600000) % 3600000) / 3600000,
                1)
        ON CONFLICT (source_node, hour) DO UPDATE SET count = count + 1;
    END;",
    // v5: quarantine. `quarantined` holds why a stored game is unplayable (NULL: a game);
    // a game marked (or merged in marked) leaves, or never enters, its batch's count.
    "ALTER TABLE games ADD COLUMN quarantined TEXT;
    DROP TRIGGER games_count_batch;
    CREATE TRIGGER games_count_batch AFTER INSERT ON games WHEN NEW.quarantined IS NULL BEGIN
        INSERT INTO game_batches (source_node, hour, count)
        VALUES (NEW.source_node,
                (NEW.created_at - ((NEW.created_at % 3600000) + 3600000) % 3600000) / 3600000,
                1)
        ON CONFLICT (source_node, hour) DO UPDATE SET count = count + 1;
    END;
    CREATE TRIGGER games_uncount_quarantined AFTER UPDATE OF quarantined ON games
    WHEN OLD.quarantined IS NULL AND NEW.quarantined IS NOT NULL BEGIN
        UPDATE game_batches SET count = count - 1
        WHERE source_node = OLD.source_node
          AND hour = (OLD.created_at - ((OLD.created_at % 3600000) + 3600000) % 3600000) / 3600000;
    END;",
    // v6: the store's identity, made with the file: a node wiped (or this file recreated)
    // has a new one, so the nodes pushing to it start again from 0.
    "CREATE TABLE store_identity (id TEXT NOT NULL);
    INSERT INTO store_identity (id) VALUES (lower(hex(randomblob(16))));",
];

/// What [`GameStore::insert_games_reporting`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inserted {
    /// Games new here (a correct copy replacing a quarantined one counts).
    pub new: usize,
    /// Ids stored here with other moves or another winner than the copy received (the
    /// stored one is kept).
    pub conflicts: Vec<String>,
}

/// One finished game. `winner` is the seat index (0-based) or `None` for a draw;
/// `moves` are cell indices in play order; `players` names who sat in each seat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Per ply, the search's value of the position for the seat to move, in [-1, 1];
    /// `None` when the producer recorded none (export then uses the outcome alone).
    /// Left out of the JSON when `None`, so a record without it reads as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_values: Option<Vec<f32>>,
}

impl GameRecord {
    pub fn length(&self) -> usize {
        self.moves.len()
    }

    /// Checks a record received from outside (another node) before it is stored: an id
    /// of 1-128 printable ASCII characters, one player name per seat of its config, the
    /// winner a seat, at most [`MAX_MOVES`] moves, a policy entry and a search value in
    /// [-1, 1] per move (when present), a finite
    /// quality score, a source node. The error names the game and the field.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |field: &str, why: String| {
            Err(StoreError::Invalid(format!(
                "game {:?}: {field}: {why}",
                self.game_id.chars().take(64).collect::<String>()
            )))
        };
        if self.game_id.is_empty()
            || self.game_id.len() > 128
            || !self.game_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return bad("game_id", "must be 1-128 printable ASCII characters".into());
        }
        let seats = usize::from(self.config_key.players());
        if self.players.len() != seats {
            return bad(
                "players",
                format!(
                    "{} names but config {} has {seats} seats",
                    self.players.len(),
                    self.config_key
                ),
            );
        }
        if let Some(w) = self.winner
            && usize::from(w) >= seats
        {
            return bad("winner", format!("seat {w} of {seats}"));
        }
        if self.moves.len() > MAX_MOVES {
            return bad(
                "moves",
                format!("{} moves (at most {MAX_MOVES})", self.moves.len()),
            );
        }
        if let Some(p) = &self.policy
            && p.len() != self.moves.len()
        {
            return bad(
                "policy",
                format!("{} entries for {} moves", p.len(), self.moves.len()),
            );
        }
        if let Some(v) = &self.search_values {
            if v.len() != self.moves.len() {
                return bad(
                    "search_values",
                    format!("{} entries for {} moves", v.len(), self.moves.len()),
                );
            }
            if let Some((ply, x)) = v
                .iter()
                .enumerate()
                .find(|(_, x)| !(-1.0..=1.0).contains(*x))
            {
                return bad(
                    "search_values",
                    format!("ply {ply}: {x} is outside [-1, 1]"),
                );
            }
        }
        if !self.quality_score.is_finite() {
            return bad(
                "quality_score",
                format!("{} is not finite", self.quality_score),
            );
        }
        if self.source_node.is_empty() || self.source_node.len() > 128 {
            return bad("source_node", "must be 1-128 characters".into());
        }
        Ok(())
    }

    /// The hour the game was made in (`created_at` ms / 3 600 000, rounded down): with
    /// config and source node it names the game's batch.
    pub fn hour(&self) -> i64 {
        self.created_at.div_euclid(MS_PER_HOUR)
    }
}

/// Most moves a received game may have.
pub const MAX_MOVES: usize = 100_000;

/// Milliseconds per hour: a batch is the games of one config made on one node in one hour.
pub const MS_PER_HOUR: i64 = 3_600_000;

/// Which games a [`GameStore::page`] returns (all fields optional; all must hold).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GameFilter {
    /// Only games with `quality_score` strictly above this.
    pub min_quality: Option<f64>,
    /// Only games made on this node.
    pub source_node: Option<String>,
    /// Only games made in this hour (`created_at` ms / 3 600 000).
    pub hour: Option<i64>,
}

/// One page of games after a watermark, read in one snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct GamePage {
    pub games: Vec<StoredGame>,
    /// The watermark to ask from next: the last game returned when `more`, else the
    /// highest sequence of the store when it was read (never below the `after` asked).
    pub next_after: i64,
    /// Whether games matching the filter may follow `next_after`.
    pub more: bool,
    /// The highest sequence of the store (lower than a caller's watermark: the store was
    /// recreated and the caller should start again from 0).
    pub max_seq: i64,
}

/// The number of games of one (source node, hour) batch in a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchCount {
    pub source_node: String,
    pub hour: i64,
    pub count: u64,
}

/// A game read back with its local ingest sequence (the watermark unit). Also the
/// element of a `GET /games` answer of the data server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Opens (creating and migrating) a game store. Its commits are `synchronous=FULL`
    /// (the WAL synced at each commit, not only at checkpoints): a push is acknowledged
    /// after its commit, and a game a peer was told is stored must survive a power loss.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = db::SharedDb::open(path, MIGRATIONS)?;
        db.lock()
            .pragma_update(None, "synchronous", "FULL")
            .ctx(path)?;
        Ok(GameStore { db })
    }

    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// This store's identity (32 hex digits), made when the file was created (or first
    /// opened by a version with identities): what a pusher's watermark to it is keyed by.
    pub fn store_id(&self) -> Result<String, StoreError> {
        self.conn()
            .query_row("SELECT id FROM store_identity", [], |r| r.get(0))
            .ctx(self.path())
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.db.lock()
    }

    /// Inserts games, ignoring ones whose `game_id` already exists. Returns how many
    /// were new. All-or-nothing: one transaction.
    pub fn insert_games(&self, games: &[GameRecord]) -> Result<usize, StoreError> {
        Ok(self.insert_games_reporting(games)?.new)
    }

    /// [`GameStore::insert_games`], also naming the ids stored here with other content,
    /// and replacing a quarantined game by the copy received (see the module doc).
    pub fn insert_games_reporting(&self, games: &[GameRecord]) -> Result<Inserted, StoreError> {
        let path = self.path();
        let mut conn = self.conn();
        let tx = conn.transaction().ctx(path)?;
        let mut out = Inserted::default();
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO games (game_id, config_key, num_players, players, winner,
                        moves, length, source_node, quality_score, created_at, policy, search_values)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
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
                if let Some(v) = &g.search_values
                    && v.len() != g.moves.len()
                {
                    return Err(StoreError::Invalid(format!(
                        "game {} has {} moves but {} search values",
                        g.game_id,
                        g.moves.len(),
                        v.len()
                    )));
                }
                let policy = g
                    .policy
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                let search_values = g
                    .search_values
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                let row = params![
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
                    policy,
                    search_values
                ];
                if stmt.execute(row).ctx(path)? == 1 {
                    out.new += 1;
                    continue;
                }
                let (stored_moves, stored_winner, quarantined): (
                    String,
                    Option<u8>,
                    Option<String>,
                ) = tx
                    .query_row(
                        "SELECT moves, winner, quarantined FROM games WHERE game_id = ?1",
                        [&g.game_id],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .ctx(path)?;
                if quarantined.is_some() {
                    tx.execute(
                        "UPDATE games SET game_id = game_id || '#quarantined-' || rowid
                         WHERE game_id = ?1",
                        [&g.game_id],
                    )
                    .ctx(path)?;
                    out.new += stmt.execute(row).ctx(path)?;
                } else if stored_moves != moves || stored_winner != g.winner {
                    out.conflicts.push(g.game_id.clone());
                }
            }
        }
        tx.commit().ctx(path)?;
        Ok(out)
    }

    /// Marks stored games unplayable, each with why (`(game_id, reason)`); returns how
    /// many were marked now (a game marked before, or not here, is left as it is).
    pub fn quarantine(&self, bad: &[(String, String)]) -> Result<usize, StoreError> {
        let path = self.path();
        let mut conn = self.conn();
        let tx = conn.transaction().ctx(path)?;
        let mut n = 0;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE games SET quarantined = ?2 WHERE game_id = ?1 AND quarantined IS NULL",
                )
                .ctx(path)?;
            for (id, why) in bad {
                n += stmt.execute(params![id, why]).ctx(path)?;
            }
        }
        tx.commit().ctx(path)?;
        Ok(n)
    }

    /// The quarantined games, `(game_id, reason)`, in ingest order.
    pub fn quarantined(&self) -> Result<Vec<(String, String)>, StoreError> {
        let path = self.path();
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT game_id, quarantined FROM games WHERE quarantined IS NOT NULL ORDER BY rowid",
            )
            .ctx(path)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .ctx(path)?;
        rows.map(|r| r.ctx(path)).collect()
    }

    /// Number of games ingested after `watermark` (a `seq` from an earlier read; 0 = all).
    pub fn count_since(&self, watermark: i64) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM games WHERE rowid > ?1 AND quarantined IS NULL",
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
        let conn = self.conn();
        read_games(&conn, self.path(), watermark, limit, &GameFilter::default())
    }

    /// At most `limit` games after `after` that pass `filter`, in ingest order, with the
    /// watermark to continue from; read in one transaction, so a game committed while
    /// this runs is either in the page or after `next_after`.
    pub fn page(
        &self,
        after: i64,
        limit: usize,
        filter: &GameFilter,
    ) -> Result<GamePage, StoreError> {
        let path = self.path();
        let mut conn = self.conn();
        let tx = conn.transaction().ctx(path)?;
        let games = read_games(&tx, path, after, limit, filter)?;
        let max_seq: Option<i64> = tx
            .query_row("SELECT MAX(rowid) FROM games", [], |r| r.get(0))
            .ctx(path)?;
        let max_seq = max_seq.unwrap_or(0);
        tx.commit().ctx(path)?;
        let more = limit > 0 && games.len() >= limit;
        let next_after = match games.last() {
            Some(g) if more => g.seq,
            _ => max_seq.max(after),
        };
        Ok(GamePage {
            games,
            next_after,
            more,
            max_seq,
        })
    }

    /// The number of games per (source node, hour) batch, sorted: read from the counts
    /// kept on insert (`game_batches`), a few rows whatever the number of games.
    pub fn batch_counts(&self) -> Result<Vec<BatchCount>, StoreError> {
        let path = self.path();
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT source_node, hour, count FROM game_batches WHERE count > 0
                 ORDER BY source_node, hour",
            )
            .ctx(path)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(BatchCount {
                    source_node: r.get(0)?,
                    hour: r.get(1)?,
                    count: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                })
            })
            .ctx(path)?;
        rows.map(|r| r.ctx(path)).collect()
    }

    pub fn get(&self, game_id: &str) -> Result<Option<GameRecord>, StoreError> {
        let seq: Option<i64> = self
            .conn()
            .query_row(
                "SELECT rowid FROM games WHERE game_id = ?1 AND quarantined IS NULL",
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
            // A source on an older schema lacks the later columns (v1: policy, v2:
            // search_values); they merge as NULL.
            let column_or_null = |name: &'static str| -> Result<&'static str, StoreError> {
                let has: bool = tx
                    .query_row(
                        "SELECT COUNT(*) > 0 FROM pragma_table_info('games', 'src') WHERE name = ?1",
                        [name],
                        |r| r.get(0),
                    )
                    .ctx(source)?;
                Ok(if has { name } else { "NULL" })
            };
            let policy = column_or_null("policy")?;
            let search_values = column_or_null("search_values")?;
            let quarantined = column_or_null("quarantined")?;
            let filter = if config.is_some() {
                "WHERE config_key = ?1"
            } else {
                ""
            };
            let sql = format!(
                "INSERT OR IGNORE INTO main.games (game_id, config_key, num_players, players,
                    winner, moves, length, source_node, quality_score, created_at, policy,
                    search_values, quarantined)
                 SELECT game_id, config_key, num_players, players, winner, moves, length,
                    source_node, quality_score, created_at, {policy}, {search_values},
                    {quarantined}
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

    pub async fn insert_games_reporting_async(
        &self,
        games: Vec<GameRecord>,
    ) -> Result<Inserted, StoreError> {
        self.off_runtime(move |s| s.insert_games_reporting(&games))
            .await
    }

    pub async fn count_since_async(&self, watermark: i64) -> Result<u64, StoreError> {
        self.off_runtime(move |s| s.count_since(watermark)).await
    }

    pub async fn merge_from_async(&self, source: PathBuf) -> Result<usize, StoreError> {
        self.off_runtime(move |s| s.merge_from(&source)).await
    }
}

/// Reads at most `limit` games after `watermark` that pass `filter` (one statement).
fn read_games(
    conn: &Connection,
    path: &Path,
    watermark: i64,
    limit: usize,
    filter: &GameFilter,
) -> Result<Vec<StoredGame>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT rowid, game_id, config_key, players, winner, moves, source_node,
                    quality_score, created_at, policy, search_values
             FROM games
             WHERE rowid > ?1
               AND quarantined IS NULL
               AND (?3 IS NULL OR quality_score > ?3)
               AND (?4 IS NULL OR source_node = ?4)
               AND (?5 IS NULL OR (created_at >= ?5 AND created_at < ?5 + ?6))
             ORDER BY rowid LIMIT ?2",
        )
        .ctx(path)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let hour_start = filter.hour.map(|h| h.saturating_mul(MS_PER_HOUR));
    let rows = stmt
        .query_map(
            params![
                watermark,
                limit,
                filter.min_quality,
                filter.source_node,
                hour_start,
                MS_PER_HOUR
            ],
            |r| {
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
                    r.get::<_, Option<String>>(10)?,
                ))
            },
        )
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
            search_values,
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
        let search_values: Option<Vec<f32>> = search_values
            .map(|p| serde_json::from_str(&p))
            .transpose()
            .map_err(|e| corrupt(format!("search_values: {e}")))?;
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
                search_values,
            },
        });
    }
    Ok(out)
}

pub mod foreign;

#[cfg(test)]
mod tests;
