//! In-process tests: only games above min_quality move, training targets come first and
//! the excluded node never, the own watermark (a second run sends nothing, a new good
//! game goes alone), the event trigger, config errors.

use super::*;
use ringrift_store::ConfigKey;
use ringrift_store::games::GameRecord;
use ringrift_test_support::Daemon;
use ringrift_test_support::data_server::{self as testing, cluster, ids, server, store};

fn key() -> ConfigKey {
    "square8_2p".parse().expect("key")
}

fn game(id: &str, node: &str, quality: f64) -> GameRecord {
    GameRecord {
        quality_score: quality,
        ..testing::game(id, node, key())
    }
}

fn daemon(home: &std::path::Path, node: &str, toml: &str) -> Daemon {
    ringrift_test_support::daemon(INFO.name, build, home, node, toml)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_good_games_move_training_targets_first_on_their_own_watermark() {
    let (t, s, x) = (server("t").await, server("s").await, server("x").await);
    let a = tempfile::tempdir().expect("a");
    std::fs::write(
        a.path().join("cluster.toml"),
        cluster(&[
            ("a", "\"coordinator\"", 1, false),
            ("s", "\"selfplay\"", s.port, false),
            ("x", "\"training\"", x.port, true),
            ("t", "\"training\"", t.port, false),
        ]),
    )
    .expect("cluster");
    store(a.path(), key())
        .insert_games(&[
            game("lo1", "a", 0.1),
            game("hi1", "a", 0.9),
            game("edge", "a", 0.7),
            game("hi2", "a", 0.95),
            game("lo2", "a", 0.3),
        ])
        .expect("insert");
    let (h, ctx, _) = daemon(a.path(), "a", "[high_quality_sync]\nbatch = 1\n");
    assert_eq!(h.health_check().details["targets"], "t,s");
    h.run_cycle(&ctx).await.expect("cycle");
    assert_eq!(ids(t.home.path(), key()), ["hi1", "hi2"]);
    assert_eq!(ids(s.home.path(), key()), ["hi1", "hi2"]);
    assert!(!ringrift_store::paths::game_db(x.home.path(), key()).exists());

    // Own watermark: nothing again; a new good game goes alone, a bad one never.
    h.run_cycle(&ctx).await.expect("cycle");
    store(a.path(), key())
        .insert_games(&[game("lo3", "a", 0.2), game("hi3", "a", 0.8)])
        .expect("insert");
    let ev = Event::new(Payload::NewGamesAvailable(
        ringrift_proto::wire::NewGamesAvailable {
            new_games: 2,
            total_games: 7,
            db_path: String::new(),
            node: "job_scheduler@a".into(),
        },
    ));
    h.handle_event(&ctx, &ev).await.expect("event");
    assert_eq!(ids(t.home.path(), key()), ["hi1", "hi2", "hi3"]);
    assert_eq!(h.health_check().details["games_sent"], "6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_only_and_bad_settings() {
    let (t, s) = (server("t").await, server("s").await);
    let a = tempfile::tempdir().expect("a");
    std::fs::write(
        a.path().join("cluster.toml"),
        cluster(&[
            ("a", "\"coordinator\"", 1, false),
            ("s", "\"selfplay\"", s.port, false),
            ("t", "\"training\"", t.port, false),
        ]),
    )
    .expect("cluster");
    store(a.path(), key())
        .insert_games(&[game("hi", "a", 0.99)])
        .expect("insert");
    let (h, ctx, _) = daemon(
        a.path(),
        "a",
        "[high_quality_sync]\nall_targets = false\nmin_quality = 0.5\n",
    );
    h.run_cycle(&ctx).await.expect("cycle");
    assert_eq!(ids(t.home.path(), key()), ["hi"]);
    assert!(!ringrift_store::paths::game_db(s.home.path(), key()).exists());

    for (toml, key) in [
        (
            "[high_quality_sync]\nmin_quality = nan\n",
            "high_quality_sync.min_quality",
        ),
        (
            "[high_quality_sync]\nmin_quality = \"high\"\n",
            "min_quality",
        ),
        (
            "[high_quality_sync]\nbatch = 0\n",
            "high_quality_sync.batch",
        ),
    ] {
        let home = tempfile::tempdir().expect("home");
        let e = ringrift_test_support::refused("high_quality_sync", build, home.path(), toml);
        assert!(format!("{e:#}").contains(key), "{toml}: {e:#}");
    }
}
