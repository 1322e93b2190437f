//! Game databases this node's stores did not write (orphans found on disk, copies from
//! elsewhere): inspected without trusting them, before their games are merged per config
//! ([`super::GameStore::merge_config_from`]).
//!
//! [`inspect`] tells apart a usable game database (integrity check passes, the `games`
//! table has the store's columns, every row is one the store could read back), a valid
//! SQLite file that holds no games (another program's database), and a file to reject
//! (not SQLite, corrupt, wrong schema, bad rows), naming the reason.

use crate::{ConfigKey, StoreError};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// What a file is, as a game database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspection {
    /// A game database: how many games it holds per config key.
    Games(BTreeMap<ConfigKey, u64>),
    /// A valid SQLite database without a `games` table.
    NotGames,
    /// Not usable as a game database; the reason names what is wrong.
    Rejected(String),
}

impl Inspection {
    /// Games in a [`Inspection::Games`] (0 otherwise).
    pub fn total(&self) -> u64 {
        match self {
            Inspection::Games(m) => m.values().sum(),
            _ => 0,
        }
    }
}

/// Columns a game database's `games` table must have (`policy` and `search_values` are
/// optional: schemas v1 and v2).
pub const REQUIRED_COLUMNS: &[&str] = &[
    "game_id",
    "config_key",
    "num_players",
    "players",
    "winner",
    "moves",
    "length",
    "source_node",
    "quality_score",
    "created_at",
];

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// Inspects the database file at `path` (blocking: integrity check and a pass over every
/// row; call it off the async runtime). `Err` is an environment failure (cannot read the
/// file, database busy) that may pass; everything the file itself gets wrong is
/// [`Inspection::Rejected`].
///
/// The file is opened read-write without creating anything, so a leftover `-wal` is
/// recovered into it and checkpointed when the connection closes (the file is then
/// self-contained and can be moved alone).
pub fn inspect(path: &Path) -> Result<Inspection, StoreError> {
    let mut head = Vec::with_capacity(16);
    std::fs::File::open(path)
        .and_then(|f| f.take(16).read_to_end(&mut head))
        .map_err(|e| StoreError::io("read header of", path, e))?;
    if head.is_empty() {
        return Ok(Inspection::NotGames);
    }
    if head.as_slice() != SQLITE_MAGIC {
        return Ok(Inspection::Rejected(
            "not an SQLite database (bad header)".into(),
        ));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    })?;
    conn.busy_timeout(crate::db::BUSY_TIMEOUT)
        .map_err(|source| StoreError::Sqlite {
            path: path.to_owned(),
            source,
        })?;
    match inspect_conn(&conn) {
        Ok(i) => Ok(i),
        Err(e) if is_corruption(&e) => Ok(Inspection::Rejected(format!("corrupt: {e}"))),
        Err(source) => Err(StoreError::Sqlite {
            path: path.to_owned(),
            source,
        }),
    }
}

fn inspect_conn(conn: &Connection) -> rusqlite::Result<Inspection> {
    let mut problems = Vec::new();
    {
        let mut stmt = conn.prepare("PRAGMA integrity_check(5)")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        for row in rows {
            let row = row?;
            if row != "ok" {
                problems.push(row);
            }
        }
    }
    if !problems.is_empty() {
        return Ok(Inspection::Rejected(format!(
            "integrity_check failed: {}",
            problems.join("; ")
        )));
    }
    let has_games: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'games'",
        [],
        |r| r.get(0),
    )?;
    if !has_games {
        return Ok(Inspection::NotGames);
    }
    let mut columns = Vec::new();
    {
        let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('games')")?;
        for c in stmt.query_map([], |r| r.get::<_, String>(0))? {
            columns.push(c?);
        }
    }
    let missing: Vec<&str> = REQUIRED_COLUMNS
        .iter()
        .copied()
        .filter(|c| !columns.iter().any(|have| have == c))
        .collect();
    if !missing.is_empty() {
        return Ok(Inspection::Rejected(format!(
            "not a game database: table `games` lacks column(s) {}",
            missing.join(", ")
        )));
    }
    let has_policy = columns.iter().any(|c| c == "policy");
    // Rows the store could not read back (`GameStore::games_since` would fail on them).
    let policy_ok = if has_policy {
        "(policy IS NULL OR (json_valid(policy) AND json_type(policy) = 'array'
            AND json_array_length(policy) = json_array_length(moves)))"
    } else {
        "1"
    };
    let values_ok = if columns.iter().any(|c| c == "search_values") {
        "(search_values IS NULL OR (json_valid(search_values)
            AND json_type(search_values) = 'array'
            AND json_array_length(search_values) = json_array_length(moves)
            AND NOT EXISTS (SELECT 1 FROM json_each(search_values)
                WHERE type NOT IN ('integer', 'real'))))"
    } else {
        "1"
    };
    let bad: Option<String> = conn
        .query_row(
            &format!(
                "SELECT CAST(game_id AS TEXT) FROM games WHERE NOT (
                    typeof(game_id) = 'text' AND length(game_id) > 0
                    AND typeof(config_key) = 'text'
                    AND typeof(num_players) = 'integer'
                    AND typeof(created_at) = 'integer'
                    AND typeof(source_node) = 'text'
                    AND typeof(quality_score) IN ('real', 'integer')
                    AND json_valid(players) AND json_type(players) = 'array'
                    AND json_array_length(players) = num_players
                    AND NOT EXISTS (SELECT 1 FROM json_each(players) WHERE type != 'text')
                    AND json_valid(moves) AND json_type(moves) = 'array'
                    AND json_array_length(moves) = length
                    AND NOT EXISTS (SELECT 1 FROM json_each(moves)
                        WHERE type != 'integer' OR value < 0 OR value > 65535)
                    AND (winner IS NULL OR (typeof(winner) = 'integer'
                        AND winner >= 0 AND winner < num_players))
                    AND {policy_ok}
                    AND {values_ok}
                 ) LIMIT 1"
            ),
            [],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()?
        .map(|id| id.unwrap_or_default());
    if let Some(id) = bad {
        return Ok(Inspection::Rejected(format!(
            "game {id:?} is not a valid game record (players, moves, winner, policy, search values or types)"
        )));
    }
    let mut per_config = BTreeMap::new();
    let mut stmt = conn.prepare(
        "SELECT config_key, num_players, COUNT(*) FROM games GROUP BY config_key, num_players",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (key, players, n) = row?;
        let Ok(config) = key.parse::<ConfigKey>() else {
            return Ok(Inspection::Rejected(format!("unknown config key {key:?}")));
        };
        if players != i64::from(config.players()) {
            return Ok(Inspection::Rejected(format!(
                "games of {config} with num_players {players}"
            )));
        }
        *per_config.entry(config).or_insert(0) += u64::try_from(n).unwrap_or(0);
    }
    Ok(Inspection::Games(per_config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::games::{GameRecord, GameStore};

    fn game(id: &str, config: &str) -> GameRecord {
        let config_key: ConfigKey = config.parse().expect("key");
        GameRecord {
            game_id: id.into(),
            config_key,
            players: (0..config_key.players()).map(|i| format!("p{i}")).collect(),
            winner: Some(0),
            moves: vec![1, 2],
            source_node: "n".into(),
            quality_score: 0.5,
            created_at: 1,
            policy: None,
            search_values: None,
        }
    }

    #[test]
    fn inspects_and_merges_per_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let orphan = dir.path().join("orphan.db");
        let s = GameStore::open(&orphan).expect("open");
        s.insert_games(&[
            game("a", "hex8_2p"),
            game("b", "hex8_2p"),
            game("c", "square8_3p"),
        ])
        .expect("insert");
        drop(s);
        let i = inspect(&orphan).expect("inspect");
        let hex: ConfigKey = "hex8_2p".parse().expect("key");
        let sq: ConfigKey = "square8_3p".parse().expect("key");
        assert_eq!(i, Inspection::Games(BTreeMap::from([(hex, 2), (sq, 1)])));
        assert_eq!(i.total(), 3);
        let target = GameStore::open(&dir.path().join("hex8_2p.db")).expect("open");
        assert_eq!(target.merge_config_from(&orphan, hex).expect("merge"), 2);
        assert_eq!(target.merge_config_from(&orphan, hex).expect("again"), 0);
        assert_eq!(target.count().expect("count"), 2);
    }

    #[test]
    fn rejects_garbage_bad_schema_and_bad_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, b"definitely not sqlite, just some bytes here").expect("write");
        assert!(
            matches!(inspect(&junk).expect("inspect"), Inspection::Rejected(r) if r.contains("not an SQLite"))
        );

        let other = dir.path().join("other.db");
        let c = Connection::open(&other).expect("open");
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .expect("sql");
        drop(c);
        assert_eq!(inspect(&other).expect("inspect"), Inspection::NotGames);

        let schema = dir.path().join("schema.db");
        let c = Connection::open(&schema).expect("open");
        c.execute_batch("CREATE TABLE games(game_id TEXT, moves TEXT);")
            .expect("sql");
        drop(c);
        assert!(
            matches!(inspect(&schema).expect("inspect"), Inspection::Rejected(r) if r.contains("lacks column(s) config_key"))
        );

        let rows = dir.path().join("rows.db");
        let s = GameStore::open(&rows).expect("open");
        s.insert_games(&[game("ok", "hex8_2p")]).expect("insert");
        drop(s);
        let c = Connection::open(&rows).expect("open");
        c.execute(
            "INSERT INTO games (game_id, config_key, num_players, players, winner, moves, length,
                source_node, quality_score, created_at) VALUES ('bad', 'hex8_2p', 2, '[\"a\",\"b\"]',
                5, '[1]', 1, 'n', 0.1, 1)",
            [],
        )
        .expect("insert bad row");
        drop(c);
        assert!(
            matches!(inspect(&rows).expect("inspect"), Inspection::Rejected(r) if r.contains("\"bad\""))
        );

        // Search values must be one number per move.
        let values = dir.path().join("values.db");
        let s = GameStore::open(&values).expect("open");
        s.insert_games(&[game("ok", "hex8_2p")]).expect("insert");
        drop(s);
        let c = Connection::open(&values).expect("open");
        c.execute(
            "INSERT INTO games (game_id, config_key, num_players, players, winner, moves, length,
                source_node, quality_score, created_at, search_values) VALUES ('sv', 'hex8_2p', 2,
                '[\"a\",\"b\"]', 0, '[1,2]', 2, 'n', 0.1, 1, '[0.5,\"x\"]')",
            [],
        )
        .expect("insert bad values");
        drop(c);
        assert!(
            matches!(inspect(&values).expect("inspect"), Inspection::Rejected(r) if r.contains("\"sv\""))
        );
    }

    #[test]
    fn truncated_database_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("t.db");
        let s = GameStore::open(&p).expect("open");
        let many: Vec<_> = (0..400)
            .map(|i| game(&format!("g{i}"), "hex8_2p"))
            .collect();
        s.insert_games(&many).expect("insert");
        drop(s);
        let len = std::fs::metadata(&p).expect("stat").len();
        assert!(len > 8192, "{len}");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .expect("open");
        f.set_len(len / 2).expect("truncate");
        drop(f);
        match inspect(&p) {
            Ok(Inspection::Rejected(_)) => {}
            other => panic!("truncated database must be rejected, got {other:?}"),
        }
    }
}
