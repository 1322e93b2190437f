//! In-process tests: `build` and its config errors, cycles pushing to real data servers
//! (port 0, other temp homes), round-robin fanout, the excluded node and the pure
//! coordinator never chosen, the event trigger, and gossip forwarding A → B → C.

use super::*;
use ringrift_store::ConfigKey;
use ringrift_test_support::Daemon;
use ringrift_test_support::data_server::{cluster, game, ids, server, store};

fn key() -> ConfigKey {
    "square8_2p".parse().expect("key")
}

fn daemon(home: &std::path::Path, node: &str, toml: &str) -> Daemon {
    ringrift_test_support::daemon(INFO.name, build, home, node, toml)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_pushes_to_the_fanout_once_and_never_to_excluded_or_pure_coordinators() {
    let (b, c) = (server("b").await, server("c").await);
    let x = server("x").await; // excluded: must get nothing
    let coord = server("coord").await; // coordinator without training: nothing
    let a = tempfile::tempdir().expect("a");
    std::fs::write(
        a.path().join("cluster.toml"),
        cluster(&[
            ("a", "\"selfplay\"", 1, false),
            ("coord", "\"coordinator\"", coord.port, false),
            ("x", "\"selfplay\"", x.port, true),
            ("b", "\"training\"", b.port, false),
            ("c", "\"selfplay\"", c.port, false),
        ]),
    )
    .expect("cluster");
    store(a.path(), key())
        .insert_games(
            &(0..40)
                .map(|i| game(&format!("g{i:02}"), "a", key()))
                .collect::<Vec<_>>(),
        )
        .expect("insert");
    let (h, ctx, rec) = daemon(a.path(), "a", "[auto_sync]\nbatch = 7\n");

    h.run_cycle(&ctx).await.expect("cycle");
    let want: Vec<String> = (0..40).map(|i| format!("g{i:02}")).collect();
    assert_eq!(ids(b.home.path(), key()), want);
    assert_eq!(ids(c.home.path(), key()), want);
    assert!(!ringrift_store::paths::game_db(x.home.path(), key()).exists());
    assert!(!ringrift_store::paths::game_db(coord.home.path(), key()).exists());
    let completed = rec
        .events()
        .iter()
        .filter(|e| e.kind == EventType::DataSyncCompleted)
        .count();
    assert_eq!(completed, 2);

    // Nothing new: a second cycle sends nothing.
    h.run_cycle(&ctx).await.expect("cycle");
    let stats: Vec<u64> = ["b", "c"]
        .iter()
        .map(|p| {
            h.health_check()
                .details
                .get(&format!("peer.{p}"))
                .map(|d| d.contains("sent 40"))
                .expect("detail") as u64
        })
        .collect();
    assert_eq!(stats, [1, 1]);
    assert_eq!(store(b.home.path(), key()).count().expect("count"), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_one_alternates_and_the_event_from_this_node_pushes_at_once() {
    let (b, c) = (server("b").await, server("c").await);
    let a = tempfile::tempdir().expect("a");
    std::fs::write(
        a.path().join("cluster.toml"),
        cluster(&[
            ("a", "\"coordinator\"", 1, false),
            ("b", "\"selfplay\"", b.port, false),
            ("c", "\"selfplay\"", c.port, false),
        ]),
    )
    .expect("cluster");
    let (h, ctx, _) = daemon(a.path(), "a", "[auto_sync]\nfanout = 1\n");
    store(a.path(), key())
        .insert_games(&[game("e1", "a", key())])
        .expect("insert");

    let ev = |node: &str| {
        Event::new(Payload::NewGamesAvailable(
            ringrift_proto::wire::NewGamesAvailable {
                new_games: 1,
                total_games: 1,
                db_path: String::new(),
                node: node.to_owned(),
            },
        ))
    };
    // Another node's games: not ours to push.
    h.handle_event(&ctx, &ev("job_scheduler@b"))
        .await
        .expect("event");
    assert!(!ringrift_store::paths::game_db(b.home.path(), key()).exists());
    // Ours: pushed at once to the first target, then the next run goes to the other.
    h.handle_event(&ctx, &ev("job_scheduler@a"))
        .await
        .expect("event");
    assert_eq!(ids(b.home.path(), key()), ["e1"]);
    assert!(!ringrift_store::paths::game_db(c.home.path(), key()).exists());
    h.run_cycle(&ctx).await.expect("cycle");
    assert_eq!(ids(c.home.path(), key()), ["e1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn games_received_are_forwarded_gossip_style_exactly_once() {
    // a pushes only to b; b pushes only to c: a's games reach c through b.
    let b = server("b").await;
    let c = server("c").await;
    let a = tempfile::tempdir().expect("a");
    std::fs::write(
        a.path().join("cluster.toml"),
        cluster(&[
            ("a", "\"coordinator\",\"training\"", 1, false),
            ("b", "\"selfplay\"", b.port, false),
        ]),
    )
    .expect("cluster a");
    std::fs::write(
        b.home.path().join("cluster.toml"),
        cluster(&[
            ("b", "\"coordinator\",\"training\"", b.port, false),
            ("c", "\"selfplay\"", c.port, false),
        ]),
    )
    .expect("cluster b");
    store(a.path(), key())
        .insert_games(&[game("a1", "a", key()), game("a2", "a", key())])
        .expect("insert a");
    store(b.home.path(), key())
        .insert_games(&[game("b1", "b", key())])
        .expect("insert b");
    let (ha, ctx_a, _) = daemon(a.path(), "a", "");
    let (hb, ctx_b, _) = daemon(b.home.path(), "b", "");
    ha.run_cycle(&ctx_a).await.expect("a cycle");
    hb.run_cycle(&ctx_b).await.expect("b cycle");
    assert_eq!(ids(c.home.path(), key()), ["a1", "a2", "b1"]);
    // Again: nothing doubles (game_id is the key; watermarks skip what went).
    ha.run_cycle(&ctx_a).await.expect("a cycle");
    hb.run_cycle(&ctx_b).await.expect("b cycle");
    assert_eq!(store(c.home.path(), key()).count().expect("count"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_config_errors_naming_the_key_and_a_dead_target_fails_the_cycle() {
    for (toml, key) in [
        ("[auto_sync]\nfanout = 0\n", "auto_sync.fanout"),
        ("[auto_sync]\nbatch = 0\n", "auto_sync.batch"),
        ("[auto_sync]\nbatch = 5000\n", "auto_sync.batch"),
        ("[auto_sync]\ntimeout_s = -1.0\n", "auto_sync.timeout_s"),
        ("[auto_sync]\nfanout_typo = 1\n", "fanout_typo"),
    ] {
        let home = tempfile::tempdir().expect("home");
        let e = ringrift_test_support::refused("auto_sync", build, home.path(), toml);
        assert!(format!("{e:#}").contains(key), "{toml}: {e:#}");
    }
    let a = tempfile::tempdir().expect("a");
    std::fs::write(
        a.path().join("cluster.toml"),
        cluster(&[
            ("a", "\"coordinator\"", 1, false),
            ("dead", "\"selfplay\"", 1, false),
        ]),
    )
    .expect("cluster");
    store(a.path(), key())
        .insert_games(&[game("d1", "a", key())])
        .expect("insert");
    let (h, ctx, rec) = daemon(a.path(), "a", "[auto_sync]\ntimeout_s = 2\n");
    let e = h.run_cycle(&ctx).await.expect_err("dead target");
    assert!(e.to_string().contains("dead"), "{e}");
    assert!(
        rec.events()
            .iter()
            .any(|e| e.kind == EventType::DataSyncFailed)
    );
    let d = h.health_check().details;
    assert!(d["peer.dead"].contains("last error"), "{d:?}");
}
