//! In-process tests: two nodes, each with a real data_server in its temp home and an
//! elo_sync following the other; their match histories converge.

use super::*;
use ringrift_store::elo::MatchResult;
use ringrift_test_support::data_server as testing;
use std::path::Path;

/// `home` sees itself as `test` (coordinator) and `other` as a selfplay node.
fn cluster(home: &Path, other: &testing::Server) {
    std::fs::write(
        home.join("cluster.toml"),
        testing::cluster(&[
            ("test", "\"coordinator\"", 1, false),
            (&other.name, "\"selfplay\"", other.port, false),
        ]),
    )
    .unwrap();
}

fn play(home: &Path, node: &str, ids: std::ops::Range<u32>) {
    let elo = EloStore::open(&ringrift_store::paths::elo_db(home)).unwrap();
    for i in ids {
        elo.record_match(&MatchResult {
            match_id: format!("{node}-{i}"),
            config_key: "hex8_2p".parse().unwrap(),
            participant_a: format!("model-{i}"),
            participant_b: "random".into(),
            score_a: 1.0,
            played_at: i64::from(i),
            source_node: node.into(),
        })
        .unwrap();
    }
}

fn count(home: &Path) -> u64 {
    EloStore::open(&ringrift_store::paths::elo_db(home))
        .unwrap()
        .match_count()
        .unwrap()
}

#[tokio::test]
async fn match_histories_converge_and_merging_again_changes_nothing() {
    let (x, y) = (testing::server("x").await, testing::server("y").await);
    cluster(x.home.path(), &y);
    cluster(y.home.path(), &x);
    play(x.home.path(), "x", 0..3);
    play(y.home.path(), "y", 0..2);
    let (cx, rx) = Context::for_test("elo_sync", x.home.path(), "").unwrap();
    let (cy, _) = Context::for_test("elo_sync", y.home.path(), "").unwrap();
    let (sx, sy) = (build(&cx).unwrap(), build(&cy).unwrap());
    sx.run_cycle(&cx).await.unwrap();
    assert_eq!(count(x.home.path()), 5);
    sy.run_cycle(&cy).await.unwrap();
    assert_eq!(count(y.home.path()), 5);
    // x pulls y's snapshot again: y now holds x's matches too, but nothing is new.
    sx.run_cycle(&cx).await.unwrap();
    assert_eq!(count(x.home.path()), 5);
    let transfers = rx
        .events()
        .iter()
        .filter(|e| e.kind == ringrift_proto::wire::EventType::DataSyncCompleted)
        .count();
    // Unchanged since: no transfer at all.
    sx.run_cycle(&cx).await.unwrap();
    let after = rx
        .events()
        .iter()
        .filter(|e| e.kind == ringrift_proto::wire::EventType::DataSyncCompleted)
        .count();
    assert_eq!(after, transfers);
    play(y.home.path(), "y", 2..4);
    sx.run_cycle(&cx).await.unwrap();
    assert_eq!(count(x.home.path()), 7);
    assert_eq!(
        sx.health_check()
            .details
            .get("matches_merged")
            .map(String::as_str),
        Some("4")
    );
}

#[tokio::test]
async fn an_unreachable_peer_degrades_health_and_fails_the_cycle() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("cluster.toml"),
        "[[node]]\nname = \"test\"\nroles = [\"coordinator\"]\naddress = \"127.0.0.1\"\nports = { p2p = 2 }\n\
         [[node]]\nname = \"gone\"\nroles = [\"selfplay\"]\naddress = \"127.0.0.1\"\nports = { p2p = 1, data = 1 }\n",
    )
    .unwrap();
    let (s, ctx, _) = ringrift_test_support::daemon(
        "elo_sync",
        build,
        home.path(),
        "test",
        "[elo_sync]\ntimeout_s = 2\n",
    );
    let err = s.run_cycle(&ctx).await.unwrap_err();
    assert!(err.to_string().contains("every peer"), "{err}");
    assert!(s.health_check().message.contains("gone"));
}
