//! In-process tests: TRAINING_STARTED from another node pushes that config's games to it
//! at once (not other configs, not other nodes), cycles keep it fed, COMPLETED ends the
//! watch, job keys name the trained configs, events from this node or an excluded node
//! are ignored, config errors.

use super::*;
use ringrift_store::ConfigKey;
use ringrift_store::games::{GameRecord, GameStore};

fn key() -> ConfigKey {
    "square8_2p".parse().expect("key")
}

fn game_of(config: ConfigKey, id: &str, node: &str) -> GameRecord {
    GameRecord {
        game_id: id.to_owned(),
        config_key: config,
        players: vec!["a".into(), "b".into()],
        winner: None,
        moves: vec![0, 9, 18],
        source_node: node.to_owned(),
        quality_score: 0.5,
        created_at: 1_700_000_000_000,
        policy: None,
    }
}

fn store(home: &std::path::Path) -> GameStore {
    store_of(home, key())
}

fn store_of(home: &std::path::Path, config: ConfigKey) -> GameStore {
    let p = ringrift_store::paths::game_db(home, config);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
    GameStore::open(&p).expect("store")
}

fn ids(home: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = store(home)
        .games_since(0, 10_000)
        .expect("read")
        .into_iter()
        .map(|g| g.game.game_id)
        .collect();
    v.sort();
    v
}

/// A cluster.toml: (name, roles, data port, exclude_from_sync).
fn cluster(nodes: &[(&str, &str, u16, bool)]) -> String {
    let mut s = String::new();
    for (i, (name, roles, data, excl)) in nodes.iter().enumerate() {
        s.push_str(&format!(
            "[[node]]\nname = \"{name}\"\nroles = [{roles}]\naddress = \"127.0.0.1\"\n\
             ports = {{ p2p = {}, data = {data} }}\nexclude_from_sync = {excl}\n\n",
            17100 + i
        ));
    }
    s
}

struct Server {
    home: tempfile::TempDir,
    ctx: Context,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.ctx.shutdown.cancel();
    }
}

async fn server(name: &str) -> Server {
    let home = tempfile::tempdir().expect("home");
    let (_, ctx, url) = ringrift_data_server::start_in_process(home.path(), name, "")
        .await
        .expect("data server");
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    Server { home, ctx, port }
}

fn daemon(
    home: &std::path::Path,
    node: &str,
    toml: &str,
) -> (Arc<dyn Handler>, Context, handler_base::Recorded) {
    let (mut ctx, rec) = Context::for_test("training_node_watcher", home, toml).expect("ctx");
    ctx.node = node.to_owned();
    let h = build(&ctx).expect("build");
    (h, ctx, rec)
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
    store(a.path())
        .insert_games(&[game_of(key(), "k1", "a"), game_of(key(), "k2", "a")])
        .expect("insert");
    store_of(a.path(), other())
        .insert_games(&[game_of(other(), "o1", "a")])
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
    assert_eq!(ids(t.home.path()), ["k1", "k2"]);
    assert!(!ringrift_store::paths::game_db(t.home.path(), other()).exists());
    assert!(!ringrift_store::paths::game_db(s.home.path(), key()).exists());
    assert_eq!(h.health_check().details["watched"], "t:square8_2p(event)");

    // Each cycle keeps it fed; COMPLETED ends the watch.
    store(a.path())
        .insert_games(&[game_of(key(), "k3", "a")])
        .expect("insert");
    h.run_cycle(&ctx).await.expect("cycle");
    assert_eq!(ids(t.home.path()), ["k1", "k2", "k3"]);
    h.handle_event(
        &ctx,
        &training("completed", "continuous_training_loop@t", key()),
    )
    .await
    .expect("completed");
    store(a.path())
        .insert_games(&[game_of(key(), "k4", "a")])
        .expect("insert");
    h.run_cycle(&ctx).await.expect("cycle");
    assert_eq!(ids(t.home.path()), ["k1", "k2", "k3"]);
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
        let (ctx, _) = Context::for_test("training_node_watcher", home.path(), toml).expect("ctx");
        let e = build(&ctx).err().expect("refused");
        assert!(handler_base::is_config_error(&e), "{toml}: {e:#}");
        assert!(format!("{e:#}").contains(key), "{toml}: {e:#}");
    }
}
