//! In-process tests: a cycle pulls every peer's games once (watermarks; a restart
//! resumes), a peer's recreated store is read again from 0, the excluded node pulls
//! nothing and says so, one dead peer does not fail the cycle, config errors.

use super::*;
use ringrift_proto::EventType;
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
async fn a_cycle_pulls_every_peer_once_and_resumes_after_a_restart() {
    let (b, c) = (server("b").await, server("c").await);
    store(b.home.path(), key())
        .insert_games(
            &(0..12)
                .map(|i| game(&format!("b{i:02}"), "b", key()))
                .collect::<Vec<_>>(),
        )
        .expect("b");
    store(c.home.path(), key())
        .insert_games(&[game("c1", "c", key()), game("b00", "b", key())])
        .expect("c");
    let a = tempfile::tempdir().expect("a");
    std::fs::write(
        a.path().join("cluster.toml"),
        cluster(&[
            ("a", "\"coordinator\"", 1, false),
            ("b", "\"selfplay\"", b.port, false),
            ("c", "\"selfplay\"", c.port, true),
            ("dead", "\"selfplay\"", 1, false),
        ]),
    )
    .expect("cluster");
    let toml = "[cluster_data_sync]\nbatch = 5\ntimeout_s = 2\n";
    let (h, ctx, rec) = daemon(a.path(), "a", toml);
    h.run_cycle(&ctx)
        .await
        .expect("one dead peer does not fail the cycle");
    let mut want: Vec<String> = (0..12).map(|i| format!("b{i:02}")).collect();
    want.push("c1".into());
    assert_eq!(
        ids(a.path(), key()),
        want,
        "an excluded node is still a source"
    );
    assert!(h.health_check().details["peer.dead"].contains("last error"));
    assert!(
        rec.events()
            .iter()
            .any(|e| e.kind == EventType::DataSyncCompleted)
    );

    // A restart: nothing again; then only the new game.
    drop(h);
    let (h, ctx, _) = daemon(a.path(), "a", toml);
    store(b.home.path(), key())
        .insert_games(&[game("b99", "b", key())])
        .expect("b");
    h.run_cycle(&ctx).await.expect("cycle");
    let d = h.health_check().details;
    assert!(d["peer.b"].ends_with("received 1"), "{d:?}");
    assert_eq!(store(a.path(), key()).count().expect("count"), 14);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_store_recreated_below_the_watermark_is_read_again() {
    let b = server("b").await;
    store(b.home.path(), key())
        .insert_games(
            &(0..5)
                .map(|i| game(&format!("old{i}"), "b", key()))
                .collect::<Vec<_>>(),
        )
        .expect("b");
    let a = tempfile::tempdir().expect("a");
    std::fs::write(
        a.path().join("cluster.toml"),
        cluster(&[
            ("a", "\"coordinator\"", 1, false),
            ("b", "\"selfplay\"", b.port, false),
        ]),
    )
    .expect("cluster");
    let (h, ctx, _) = daemon(a.path(), "a", "");
    h.run_cycle(&ctx).await.expect("cycle");
    assert_eq!(store(a.path(), key()).count().expect("a"), 5);
    // b loses its store (the data server caches the open store, so restart it over the
    // same home with a new file), then makes 2 games: seq 1..2 < the watermark 5.
    drop(b);
    let bhome = tempfile::tempdir().expect("b home");
    store(bhome.path(), key())
        .insert_games(&[game("new1", "b", key()), game("new2", "b", key())])
        .expect("b new");
    let (_, bctx, url) = ringrift_test_support::data_server::start(bhome.path(), "b", "")
        .await
        .expect("b again");
    let new_port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    assert_ne!(new_port, 0);
    std::fs::write(
        a.path().join("cluster.toml"),
        cluster(&[
            ("a", "\"coordinator\"", 1, false),
            ("b", "\"selfplay\"", new_port, false),
        ]),
    )
    .expect("cluster");
    let (h, ctx, _) = daemon(a.path(), "a", "");
    h.run_cycle(&ctx).await.expect("cycle");
    assert_eq!(store(a.path(), key()).count().expect("a"), 7);
    bctx.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_excluded_node_pulls_nothing_and_says_so() {
    let b = server("b").await;
    store(b.home.path(), key())
        .insert_games(&[game("b1", "b", key())])
        .expect("b");
    let a = tempfile::tempdir().expect("a");
    std::fs::write(
        a.path().join("cluster.toml"),
        cluster(&[
            ("a", "\"selfplay\"", 1, true),
            ("b", "\"coordinator\"", b.port, false),
        ]),
    )
    .expect("cluster");
    let (h, ctx, _) = daemon(a.path(), "a", "");
    h.run_cycle(&ctx).await.expect("cycle");
    assert!(!ringrift_store::paths::game_db(a.path(), key()).exists());
    let hc = h.health_check();
    assert!(hc.message.contains("exclude_from_sync"), "{}", hc.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_config_errors_naming_the_key() {
    for (toml, key) in [
        (
            "[cluster_data_sync]\nbatch = 0\n",
            "cluster_data_sync.batch",
        ),
        (
            "[cluster_data_sync]\ntimeout_s = inf\n",
            "cluster_data_sync.timeout_s",
        ),
        ("[cluster_data_sync]\nfanout = 2\n", "fanout"),
    ] {
        let home = tempfile::tempdir().expect("home");
        let e = ringrift_test_support::refused("cluster_data_sync", build, home.path(), toml);
        assert!(format!("{e:#}").contains(key), "{toml}: {e:#}");
    }
    // A broken cluster.toml is a config error too.
    let home = tempfile::tempdir().expect("home");
    std::fs::write(home.path().join("cluster.toml"), "[[node]]\nname = 5\n").expect("bad");
    ringrift_test_support::refused("cluster_data_sync", build, home.path(), "");
}
