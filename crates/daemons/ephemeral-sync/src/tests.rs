//! In-process tests: pushes to the first durable node (never an ephemeral or excluded
//! one), failover to the next, the write-ahead watermark after a kill (a new instance
//! sends exactly what was not acknowledged), the bounded final push on stop, health's
//! unsynced count, and the config errors.

use super::*;
use ringrift_store::ConfigKey;
use ringrift_test_support::Daemon;
use ringrift_test_support::data_server::{cluster, game, server, store};

fn key() -> ConfigKey {
    "square8_2p".parse().expect("key")
}

fn daemon(home: &std::path::Path, node: &str, toml: &str) -> Daemon {
    ringrift_test_support::daemon(INFO.name, build, home, node, toml)
}

fn spot_cluster(b: u16, c: u16) -> String {
    cluster(&[
        ("spot", "\"selfplay\"", 1, false),
        ("other-spot", "\"ephemeral\"", 1, false),
        ("dead", "\"coordinator\"", 1, false),
        ("x", "\"selfplay\"", b, true),
        ("b", "\"training\"", b, false),
        ("c", "\"selfplay\"", c, false),
    ])
}

fn unsynced(h: &Arc<dyn Handler>) -> String {
    h.health_check()
        .details
        .get("unsynced_games")
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn games_reach_the_first_durable_node_that_answers_and_a_restart_resumes() {
    let (b, c) = (server("b").await, server("c").await);
    let spot = tempfile::tempdir().expect("spot");
    std::fs::write(
        spot.path().join("cluster.toml"),
        spot_cluster(b.port, c.port),
    )
    .expect("cluster");
    store(spot.path(), key())
        .insert_games(
            &(0..10)
                .map(|i| game(&format!("s{i}"), "spot", key()))
                .collect::<Vec<_>>(),
        )
        .expect("insert");
    let toml = "[ephemeral_sync]\ntimeout_s = 2\n";
    let (h, ctx, _) = daemon(spot.path(), "spot", toml);
    assert_eq!(
        h.health_check().details["durable_targets"],
        "dead,b,c",
        "ephemeral and excluded nodes are no durable targets"
    );
    // "dead" refuses connections: b takes the games; c is not needed (min_acks = 1).
    h.run_cycle(&ctx).await.expect("cycle");
    assert_eq!(store(b.home.path(), key()).count().expect("b"), 10);
    assert!(!ringrift_store::paths::game_db(c.home.path(), key()).exists());
    assert_eq!(unsynced(&h), "0");

    // New games, then the process dies (kill -9: no on_stop). The next instance pushes
    // exactly the 5 no durable node acknowledged.
    store(spot.path(), key())
        .insert_games(
            &(10..15)
                .map(|i| game(&format!("s{i}"), "spot", key()))
                .collect::<Vec<_>>(),
        )
        .expect("insert");
    drop(h);
    let (h, ctx, _) = daemon(spot.path(), "spot", toml);
    h.run_cycle(&ctx).await.expect("cycle");
    assert!(
        h.health_check().details["peer.b"].contains("sent 5,"),
        "{:?}",
        h.health_check().details
    );
    assert_eq!(store(b.home.path(), key()).count().expect("b"), 15);
    assert_eq!(unsynced(&h), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_final_push_on_stop_and_the_unsynced_count_when_no_durable_node_answers() {
    let b = server("b").await;
    let spot = tempfile::tempdir().expect("spot");
    std::fs::write(
        spot.path().join("cluster.toml"),
        cluster(&[
            ("spot", "\"selfplay\"", 1, false),
            ("b", "\"coordinator\"", b.port, false),
        ]),
    )
    .expect("cluster");
    let (h, ctx, _) = daemon(spot.path(), "spot", "");
    store(spot.path(), key())
        .insert_games(&[game("f1", "spot", key()), game("f2", "spot", key())])
        .expect("insert");
    h.on_stop(&ctx).await;
    assert_eq!(store(b.home.path(), key()).count().expect("b"), 2);

    // Only a dead durable node: the run fails and health counts what is at risk.
    let lonely = tempfile::tempdir().expect("lonely");
    std::fs::write(
        lonely.path().join("cluster.toml"),
        cluster(&[
            ("spot", "\"selfplay\"", 1, false),
            ("dead", "\"coordinator\"", 1, false),
        ]),
    )
    .expect("cluster");
    store(lonely.path(), key())
        .insert_games(&[
            game("l1", "spot", key()),
            game("l2", "spot", key()),
            game("l3", "spot", key()),
        ])
        .expect("insert");
    let (h, ctx, _) = daemon(lonely.path(), "spot", "[ephemeral_sync]\ntimeout_s = 2\n");
    let e = h.run_cycle(&ctx).await.expect_err("nobody acknowledged");
    assert!(format!("{e:#}").contains("0 of 1 durable"), "{e:#}");
    assert_eq!(unsynced(&h), "3");
    assert_ne!(h.health_check().details["oldest_unsynced_age_s"], "-");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_config_errors_naming_the_key() {
    for (toml, key) in [
        (
            "[ephemeral_sync]\nmin_acks = 0\n",
            "ephemeral_sync.min_acks",
        ),
        (
            "[ephemeral_sync]\nfinal_sync_s = 0\n",
            "ephemeral_sync.final_sync_s",
        ),
        (
            "[ephemeral_sync]\nfinal_sync_s = 60\n",
            "ephemeral_sync.final_sync_s",
        ),
        ("[ephemeral_sync]\nbatch = 0\n", "ephemeral_sync.batch"),
        (
            "[ephemeral_sync]\ntimeout_s = 0\n",
            "ephemeral_sync.timeout_s",
        ),
    ] {
        let home = tempfile::tempdir().expect("home");
        let e = ringrift_test_support::refused("ephemeral_sync", build, home.path(), toml);
        assert!(format!("{e:#}").contains(key), "{toml}: {e:#}");
    }
}
