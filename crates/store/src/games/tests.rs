//! Tests of the game store: insert, watermark counts, idempotent lossless merge.

use super::*;
use proptest::prelude::*;

fn game(id: &str, created_at: i64) -> GameRecord {
    GameRecord {
        game_id: id.to_string(),
        config_key: "hex8_2p".parse().expect("key"),
        players: vec!["a".into(), "b".into()],
        winner: Some(1),
        moves: vec![3, 4, 5],
        source_node: "node-a".into(),
        quality_score: 0.5,
        created_at,
        policy: Some(vec![
            vec![(3, 0.75), (9, 0.25)],
            vec![(4, 1.0)],
            vec![(5, 1.0)],
        ]),
        search_values: Some(vec![0.25, -0.5, 1.0]),
    }
}

#[test]
fn insert_read_and_watermark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = GameStore::open(&dir.path().join("hex8_2p.db")).expect("open");
    assert_eq!(
        store
            .insert_games(&[game("g1", 10), game("g2", 5)])
            .expect("insert"),
        2
    );
    assert_eq!(
        store.insert_games(&[game("g1", 10)]).expect("insert dup"),
        0
    );
    let wm = store.max_seq().expect("seq");
    assert_eq!(store.count_since(wm).expect("count"), 0);
    store.insert_games(&[game("g3", 1)]).expect("insert");
    assert_eq!(store.count_since(wm).expect("count"), 1);
    let since = store.games_since(wm, 10).expect("read");
    assert_eq!(since.len(), 1);
    assert_eq!(since[0].game, game("g3", 1));
    assert_eq!(store.get("g2").expect("get"), Some(game("g2", 5)));
    assert_eq!(store.get("nope").expect("get"), None);
}

#[test]
fn wrong_player_count_is_rejected_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = GameStore::open(&dir.path().join("hex8_2p.db")).expect("open");
    let mut bad = game("bad", 1);
    bad.players.push("c".into());
    assert!(store.insert_games(&[game("ok", 1), bad]).is_err());
    assert_eq!(store.count().expect("count"), 0, "nothing half-written");
}

#[test]
fn corrupt_row_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hex8_2p.db");
    let store = GameStore::open(&path).expect("open");
    store.insert_games(&[game("g1", 1)]).expect("insert");
    store
        .conn()
        .execute("UPDATE games SET moves = 'nonsense'", [])
        .expect("corrupt it");
    let err = store.games_since(0, 10).expect_err("corrupt moves");
    assert!(
        err.to_string().contains("g1") && err.to_string().contains("moves"),
        "{err}"
    );
}

#[test]
fn merge_while_source_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src_path = dir.path().join("hex8_2p_remote.db");
    let src = GameStore::open(&src_path).expect("open src");
    let dst = GameStore::open(&dir.path().join("hex8_2p.db")).expect("open dst");
    let writer = {
        let src = src.clone();
        std::thread::spawn(move || {
            for i in 0..200 {
                src.insert_games(&[game(&format!("w{i}"), i)])
                    .expect("write");
            }
        })
    };
    let mut merged = 0;
    while !writer.is_finished() {
        merged += dst.merge_from(&src_path).expect("merge during writes");
    }
    writer.join().expect("writer");
    merged += dst.merge_from(&src_path).expect("final merge");
    assert_eq!(merged, 200);
    assert_eq!(dst.count().expect("count"), 200);
}

#[tokio::test]
async fn async_wrappers_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = GameStore::open(&dir.path().join("hex8_2p.db")).expect("open");
    assert_eq!(
        store
            .insert_games_async(vec![game("a", 1)])
            .await
            .expect("insert"),
        1
    );
    assert_eq!(store.count_since_async(0).await.expect("count"), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Merging A into B twice loses nothing from either side and adds nothing twice.
    #[test]
    fn merge_is_idempotent_and_lossless(
        a in proptest::collection::btree_set(0u16..60, 0..30),
        b in proptest::collection::btree_set(0u16..60, 0..30),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let pa = dir.path().join("hex8_2p_a.db");
        let sa = GameStore::open(&pa).expect("open a");
        let sb = GameStore::open(&dir.path().join("hex8_2p_b.db")).expect("open b");
        let ga: Vec<_> = a.iter().map(|i| game(&format!("g{i}"), i64::from(*i))).collect();
        let gb: Vec<_> = b.iter().map(|i| game(&format!("g{i}"), i64::from(*i))).collect();
        sa.insert_games(&ga).expect("a");
        sb.insert_games(&gb).expect("b");
        let first = sb.merge_from(&pa).expect("merge");
        let second = sb.merge_from(&pa).expect("merge again");
        prop_assert_eq!(first, a.difference(&b).count());
        prop_assert_eq!(second, 0);
        let union: std::collections::BTreeSet<_> = a.union(&b).collect();
        prop_assert_eq!(sb.count().expect("count") as usize, union.len());
        for i in union {
            let id = format!("g{}", i);
            let found = sb.get(&id).expect("get").is_some();
            prop_assert!(found, "{} lost", id);
        }
    }
}

#[test]
fn merges_from_a_v1_source_without_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src_path = dir.path().join("hex8_2p_old.db");
    {
        let old = crate::db::open(&src_path, &MIGRATIONS[..1]).expect("v1 store");
        old.execute(
            "INSERT INTO games VALUES ('old1', 'hex8_2p', 2, '[\"a\",\"b\"]', NULL, '[1,2]', 2, 'n', 0.1, 5)",
            [],
        )
        .expect("insert v1 row");
    }
    let dst = GameStore::open(&dir.path().join("hex8_2p.db")).expect("open");
    assert_eq!(dst.merge_from(&src_path).expect("merge"), 1);
    let g = dst.get("old1").expect("get").expect("merged");
    assert_eq!((g.winner, g.policy, g.moves), (None, None, vec![1, 2]));
}

#[test]
fn a_v2_store_upgrades_and_v2_sources_merge_without_search_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old_path = dir.path().join("hex8_2p_v2.db");
    {
        let old = crate::db::open(&old_path, &MIGRATIONS[..2]).expect("v2 store");
        old.execute(
            "INSERT INTO games VALUES ('v2', 'hex8_2p', 2, '[\"a\",\"b\"]', 0, '[1,2]', 2, 'n', 0.1, 5,
                '[[[1,1.0]],[[2,1.0]]]')",
            [],
        )
        .expect("insert v2 row");
    }
    let dst = GameStore::open(&dir.path().join("hex8_2p.db")).expect("open");
    assert_eq!(dst.merge_from(&old_path).expect("merge"), 1);
    let g = dst.get("v2").expect("get").expect("merged");
    assert_eq!(
        (g.search_values, g.policy.map(|p| p.len())),
        (None, Some(2))
    );
    // The v2 file itself opens as a store (migrated to v3) and keeps its game.
    let upgraded = GameStore::open(&old_path).expect("upgrade");
    upgraded.insert_games(&[game("new", 1)]).expect("insert");
    let back = upgraded.games_since(0, 10).expect("read");
    assert_eq!(back.len(), 2);
    assert_eq!(back[0].game.search_values, None);
    assert_eq!(back[1].game, game("new", 1));
    // Merging a v3 source carries the values.
    let dst2 = GameStore::open(&dir.path().join("hex8_2p_b.db")).expect("open");
    dst2.merge_from(&old_path).expect("merge v3");
    assert_eq!(dst2.get("new").expect("get"), Some(game("new", 1)));
}

#[test]
fn search_values_are_validated_and_optional_in_json() {
    let mut g = game("sv", 1);
    g.search_values = Some(vec![0.0, 0.5]);
    let e = g.validate().expect_err("short").to_string();
    assert!(
        e.contains("search_values") && e.contains("2 entries for 3 moves"),
        "{e}"
    );
    g.search_values = Some(vec![0.0, 1.5, 0.0]);
    let e = g.validate().expect_err("range").to_string();
    assert!(e.contains("search_values") && e.contains("ply 1"), "{e}");
    g.search_values = Some(vec![0.0, f32::NAN, 0.0]);
    assert!(g.validate().is_err());
    let dir = tempfile::tempdir().expect("tempdir");
    let store = GameStore::open(&dir.path().join("hex8_2p.db")).expect("open");
    g.search_values = Some(vec![0.0]);
    let e = store.insert_games(&[g]).expect_err("refused").to_string();
    assert!(e.contains("search values"), "{e}");
    // A record without values (an older producer) has no key in its JSON and reads back.
    let mut old = game("old", 1);
    old.search_values = None;
    let v = serde_json::to_value(&old).expect("json");
    assert!(v.get("search_values").is_none(), "{v}");
    assert_eq!(serde_json::from_value::<GameRecord>(v).expect("parse"), old);
}

#[test]
fn page_filters_and_continues_from_next_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = GameStore::open(&dir.path().join("hex8_2p.db")).expect("open");
    let mut games = Vec::new();
    for i in 0..10i64 {
        let mut g = game(&format!("g{i}"), i * MS_PER_HOUR / 2);
        g.quality_score = i as f64 / 10.0;
        g.source_node = if i % 2 == 0 {
            "even".into()
        } else {
            "odd".into()
        };
        games.push(g);
    }
    store.insert_games(&games).expect("insert");

    // Unfiltered, pages of 4: 4 + 4 + 2, then nothing.
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let p = store.page(after, 4, &GameFilter::default()).expect("page");
        seen.extend(p.games.iter().map(|g| g.game.game_id.clone()));
        assert!(p.next_after >= after);
        after = p.next_after;
        if !p.more {
            assert_eq!((p.next_after, p.max_seq), (10, 10));
            break;
        }
    }
    assert_eq!(seen.len(), 10);
    let empty = store.page(10, 4, &GameFilter::default()).expect("page");
    assert_eq!(
        (empty.games.len(), empty.more, empty.next_after),
        (0, false, 10)
    );
    // A watermark above the store (a recreated store) is reported through max_seq.
    let reset = store.page(50, 4, &GameFilter::default()).expect("page");
    assert_eq!((reset.next_after, reset.max_seq), (50, 10));

    let f = GameFilter {
        min_quality: Some(0.5),
        source_node: Some("even".into()),
        hour: None,
    };
    let p = store.page(0, 100, &f).expect("page");
    let ids: Vec<_> = p.games.iter().map(|g| g.game.game_id.as_str()).collect();
    assert_eq!(ids, ["g6", "g8"]);
    assert!(!p.more);

    // Hour 1 = created_at in [1 h, 2 h): g2 and g3.
    let f = GameFilter {
        hour: Some(1),
        ..GameFilter::default()
    };
    let ids: Vec<_> = store
        .page(0, 100, &f)
        .expect("page")
        .games
        .into_iter()
        .map(|g| g.game.game_id)
        .collect();
    assert_eq!(ids, ["g2", "g3"]);

    let counts = store.batch_counts().expect("counts");
    let total: u64 = counts.iter().map(|c| c.count).sum();
    assert_eq!(total, 10);
    assert!(counts.contains(&BatchCount {
        source_node: "even".into(),
        hour: 1,
        count: 1
    }));
    assert!(counts.contains(&BatchCount {
        source_node: "odd".into(),
        hour: 1,
        count: 1
    }));
    assert_eq!(game("x", -1).hour(), -1);
}

#[test]
fn validate_names_the_bad_field_and_json_refuses_unknown_fields() {
    assert!(game("ok", 1).validate().is_ok());
    let mut g = game("", 1);
    assert!(
        g.validate()
            .expect_err("refused")
            .to_string()
            .contains("game_id")
    );
    g = game("w", 1);
    g.winner = Some(2);
    assert!(
        g.validate()
            .expect_err("refused")
            .to_string()
            .contains("winner")
    );
    g = game("p", 1);
    g.players.push("c".into());
    assert!(
        g.validate()
            .expect_err("refused")
            .to_string()
            .contains("players")
    );
    g = game("q", 1);
    g.quality_score = f64::NAN;
    assert!(
        g.validate()
            .expect_err("refused")
            .to_string()
            .contains("quality_score")
    );
    g = game("pol", 1);
    g.moves.push(7);
    assert!(
        g.validate()
            .expect_err("refused")
            .to_string()
            .contains("policy")
    );

    let mut v = serde_json::to_value(game("j", 1)).expect("json");
    assert!(serde_json::from_value::<GameRecord>(v.clone()).is_ok());
    v["extra"] = serde_json::json!(1);
    let e = serde_json::from_value::<GameRecord>(v)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("extra"), "{e}");
}

/// The per (source node, hour) counts as a full `GROUP BY` over `games` computes them.
fn grouped(store: &GameStore) -> Vec<BatchCount> {
    let conn = store.conn();
    let mut stmt = conn
        .prepare(
            "SELECT source_node, (created_at - ((created_at % ?1) + ?1) % ?1) / ?1 AS hour,
                    COUNT(*)
             FROM games WHERE quarantined IS NULL
             GROUP BY source_node, hour ORDER BY source_node, hour",
        )
        .expect("prepare");
    stmt.query_map([MS_PER_HOUR], |r| {
        Ok(BatchCount {
            source_node: r.get(0)?,
            hour: r.get(1)?,
            count: r.get::<_, i64>(2)? as u64,
        })
    })
    .expect("query")
    .map(|r| r.expect("row"))
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// The counts kept on insert equal a full `GROUP BY` after inserts with repeated ids,
    /// negative and hour-boundary times, several source nodes, games quarantined here and
    /// in a file merged in, and good copies of quarantined games received again.
    #[test]
    fn batch_counts_kept_on_insert_equal_a_full_group_by(
        rows in proptest::collection::vec((0u16..40, 0u8..3, -3i64..4, -2i64..3), 0..60),
        merged in proptest::collection::vec((0u16..60, 0u8..3, -3i64..4), 0..30),
        bad in proptest::collection::vec(0u16..60, 0..10),
        again in proptest::collection::vec((0u16..60, 0u8..3, -3i64..4), 0..10),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = GameStore::open(&dir.path().join("hex8_2p.db")).expect("open");
        let other = GameStore::open(&dir.path().join("hex8_2p_other.db")).expect("open other");
        let mk = |id: u16, node: u8, hour: i64, off: i64| {
            let mut g = game(&format!("g{id}"), hour * MS_PER_HOUR + off);
            g.source_node = format!("n{node}");
            g
        };
        for chunk in rows.chunks(7) {
            let games: Vec<_> = chunk.iter().map(|&(id, n, h, off)| mk(id, n, h, off)).collect();
            store.insert_games(&games).expect("insert");
        }
        let games: Vec<_> = merged.iter().map(|&(id, n, h)| mk(id, n, h, 0)).collect();
        other.insert_games(&games).expect("insert other");
        let bad: Vec<(String, String)> =
            bad.iter().map(|id| (format!("g{id}"), "unplayable".to_string())).collect();
        store.quarantine(&bad[..bad.len() / 2]).expect("quarantine");
        other.quarantine(&bad[bad.len() / 2..]).expect("quarantine other");
        store.merge_from(&dir.path().join("hex8_2p_other.db")).expect("merge");
        prop_assert_eq!(store.batch_counts().expect("counts"), grouped(&store));
        let games: Vec<_> = again.iter().map(|&(id, n, h)| mk(id, n, h, 1)).collect();
        store.insert_games(&games).expect("insert again");
        prop_assert_eq!(store.batch_counts().expect("counts"), grouped(&store));
    }
}

#[test]
fn the_summary_reads_the_counts_not_the_games() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = GameStore::open(&dir.path().join("hex8_2p.db")).expect("open");
    let conn = store.conn();
    let plan: Vec<String> = conn
        .prepare(
            "EXPLAIN QUERY PLAN \
             SELECT source_node, hour, count FROM game_batches ORDER BY source_node, hour",
        )
        .expect("prepare")
        .query_map([], |r| r.get::<_, String>(3))
        .expect("plan")
        .map(|r| r.expect("row"))
        .collect();
    assert!(
        plan.iter()
            .all(|l| !l.contains("games ") && !l.contains("TEMP B-TREE")),
        "{plan:?}"
    );
    assert!(plan.iter().any(|l| l.contains("game_batches")), "{plan:?}");
}

/// A store written before the counts existed (schema v3) gets them from its rows when
/// opened, and keeps them from then on.
#[test]
fn a_v3_store_gets_its_counts_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hex8_2p.db");
    {
        let c = rusqlite::Connection::open(&path).expect("open v3");
        for m in &MIGRATIONS[..3] {
            c.execute_batch(m).expect("v1-v3");
        }
        c.pragma_update(None, "user_version", 3).expect("version");
        for (i, t) in [0, 1, MS_PER_HOUR, -1].into_iter().enumerate() {
            c.execute(
                "INSERT INTO games (game_id, config_key, num_players, players, winner, moves,
                    length, source_node, quality_score, created_at)
                 VALUES (?1, 'hex8_2p', 2, '[\"a\",\"b\"]', 1, '[3]', 1, 'old', 0.5, ?2)",
                rusqlite::params![format!("v3-{i}"), t],
            )
            .expect("v3 row");
        }
    }
    let store = GameStore::open(&path).expect("migrate");
    let hours = |s: &GameStore| {
        s.batch_counts()
            .expect("counts")
            .into_iter()
            .map(|b| (b.hour, b.count))
            .collect::<Vec<_>>()
    };
    assert_eq!(hours(&store), [(-1, 1), (0, 2), (1, 1)]);
    let mut g = game("new", 5);
    g.source_node = "old".into();
    store.insert_games(&[g]).expect("insert");
    assert_eq!(hours(&store), [(-1, 1), (0, 3), (1, 1)]);
    assert_eq!(store.batch_counts().expect("counts"), grouped(&store));
}

/// Commits are synced before they are acknowledged (issue 30 pt 5: a push is acked after
/// its commit; at `NORMAL` a power loss could drop games a peer was told are stored).
#[test]
fn commits_are_synchronous_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = GameStore::open(&dir.path().join("hex8_2p.db")).expect("open");
    let level: i64 = store
        .conn()
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .expect("pragma");
    assert_eq!(level, 2, "synchronous=FULL is 2");
}

/// A quarantined game is read, counted and summarised by nothing; its row keeps its
/// sequence (no rowid reused under a watermark); a copy received later replaces it as a
/// new game; a copy with other moves of a stored game is kept out and named.
#[test]
fn quarantined_games_leave_every_read_and_a_good_copy_replaces_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = GameStore::open(&dir.path().join("hex8_2p.db")).expect("open");
    store
        .insert_games(&[game("g1", 1), game("g2", 2), game("g3", 3)])
        .expect("insert");
    let top = store.max_seq().expect("seq");
    let why = "ply 2: cell 5 is occupied".to_string();
    let marked = store
        .quarantine(&[("g3".into(), why.clone()), ("nope".into(), "x".into())])
        .expect("quarantine");
    assert_eq!(marked, 1);
    assert_eq!(
        store
            .quarantine(&[("g3".into(), why.clone())])
            .expect("again"),
        0
    );
    assert_eq!(store.count().expect("count"), 2);
    assert_eq!(store.get("g3").expect("get"), None);
    let ids: Vec<String> = store
        .games_since(0, 10)
        .expect("read")
        .into_iter()
        .map(|g| g.game.game_id)
        .collect();
    assert_eq!(ids, ["g1", "g2"]);
    assert_eq!(store.batch_counts().expect("counts")[0].count, 2);
    assert_eq!(
        store.max_seq().expect("seq"),
        top,
        "the marked row keeps its sequence"
    );
    assert_eq!(
        store.quarantined().expect("list"),
        [("g3".to_string(), why)]
    );

    // A correct copy of g3 arrives: a new game after the watermark, counted again.
    let ins = store
        .insert_games_reporting(&[game("g3", 3)])
        .expect("insert");
    assert_eq!(
        ins,
        Inserted {
            new: 1,
            conflicts: vec![]
        }
    );
    assert_eq!(store.count_since(top).expect("count"), 1);
    assert_eq!(store.get("g3").expect("get"), Some(game("g3", 3)));
    assert_eq!(store.batch_counts().expect("counts")[0].count, 3);
    assert_eq!(
        store.quarantined().expect("list").len(),
        1,
        "the marked row stays"
    );

    // The same id with other moves or another winner: kept out, named.
    let mut other = game("g1", 1);
    other.moves = vec![3, 4, 6];
    let mut winner = game("g2", 2);
    winner.winner = Some(0);
    let ins = store
        .insert_games_reporting(&[other, winner, game("g1", 1), game("g4", 4)])
        .expect("insert");
    assert_eq!(
        ins,
        Inserted {
            new: 1,
            conflicts: vec!["g1".into(), "g2".into()]
        }
    );
    assert_eq!(store.get("g1").expect("get"), Some(game("g1", 1)));
}
