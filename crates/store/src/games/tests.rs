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
