//! In-process tests: TRAINING_STARTED from another node pushes that config's games to it
//! at once (not other configs, not other nodes), cycles keep it fed, COMPLETED ends the
//! watch, job keys name the trained configs, events from this node or an excluded node
//! are ignored, config errors.

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

fn other() -> ConfigKey {
    "hex8_2p".parse().expect("key")
}

fn training(kind: &str, source: &str, config: ConfigKey) -> Event {
    use ringrift_proto::wire;
    let p = match kind {
        "started" => Payload::TrainingStarted(wire::TrainingStarted::default()),
        "completed" => Payload::TrainingCompleted(wire::TrainingCompleted::default()),
        _ => Payload::TrainingFailed(wire::TrainingFailed::default()),
    };
    let mut e = Event::new(p).with_config(config.to_string());
    e.source = source.to_owned();
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_started_elsewhere_pulls_that_configs_games_there_first() {
    let (t, s, x) = (server("t").await, server("s").await, server("x").await);
    let a = tempfile::tempdir().expect("a");
    std::fs::write(
        a.path().join("cluster.toml"),
        cluster(&[
            ("a", "\"selfplay\"", 1, false),
            ("coord", "\"coordinator\"", 1, false),
            ("t", "\"training\"", t.port, false),
            ("s", "\"selfplay\"", s.port, false),
            ("x", "\"training\"", x.port, true),
        ]),
    )
    .expect("cluster");
    store(a.path(), key())
        .insert_games(&[game("k1", "a", key()), game("k2", "a", key())])
        .expect("insert");
    store(a.path(), other())
        .insert_games(&[game("o1", "a", other())])
        .expect("insert other");
    let (h, ctx, _) = daemon(
        a.path(),
        "a",
        "[training_node_watcher]\nprobe_p2p = false\n",
    );

    // This node's own training and an excluded node's: nothing.
    h.handle_event(
        &ctx,
        &training("started", "continuous_training_loop@a", key()),
    )
    .await
    .expect("own");
    h.handle_event(
        &ctx,
        &training("started", "continuous_training_loop@x", key()),
    )
    .await
    .expect("excluded");
    assert!(!ringrift_store::paths::game_db(x.home.path(), key()).exists());
    assert_eq!(h.health_check().details["watched"], "");

    h.handle_event(
        &ctx,
        &training("started", "continuous_training_loop@t", key()),
    )
    .await
    .expect("started");
    assert_eq!(ids(t.home.path(), key()), ["k1", "k2"]);
    assert!(!ringrift_store::paths::game_db(t.home.path(), other()).exists());
    assert!(!ringrift_store::paths::game_db(s.home.path(), key()).exists());
    assert_eq!(h.health_check().details["watched"], "t:square8_2p(event)");

    // Each cycle keeps it fed; COMPLETED ends the watch.
    store(a.path(), key())
        .insert_games(&[game("k3", "a", key())])
        .expect("insert");
    h.run_cycle(&ctx).await.expect("cycle");
    assert_eq!(ids(t.home.path(), key()), ["k1", "k2", "k3"]);
    h.handle_event(
        &ctx,
        &training("completed", "continuous_training_loop@t", key()),
    )
    .await
    .expect("completed");
    store(a.path(), key())
        .insert_games(&[game("k4", "a", key())])
        .expect("insert");
    h.run_cycle(&ctx).await.expect("cycle");
    assert_eq!(ids(t.home.path(), key()), ["k1", "k2", "k3"]);
    assert_eq!(h.health_check().message, "no node is training");
}

#[test]
fn job_keys_name_the_configs_in_training() {
    let job = |k: &str| ringrift_cluster::view::JobView {
        job_id: "j".into(),
        job_key: k.into(),
        pid: 1,
        deadline_unix_ms: 0,
    };
    let jobs = [
        job("train:hex8_2p"),
        job("selfplay:hex8_2p"),
        job("train:square8_2p"),
        job("train:hex8_2p"),
        job("train:bogus"),
    ];
    let got = training_configs(&jobs);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.contains(&key()) && got.contains(&other()), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_config_errors_naming_the_key() {
    for (toml, key) in [
        (
            "[training_node_watcher]\nwatch_s = 0\n",
            "training_node_watcher.watch_s",
        ),
        (
            "[training_node_watcher]\nbatch = 9999\n",
            "training_node_watcher.batch",
        ),
        ("[training_node_watcher]\nprobe = true\n", "probe"),
    ] {
        let home = tempfile::tempdir().expect("home");
        let e = ringrift_test_support::refused("training_node_watcher", build, home.path(), toml);
        assert!(format!("{e:#}").contains(key), "{toml}: {e:#}");
    }
}
