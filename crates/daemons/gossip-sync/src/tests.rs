//! In-process tests: a round asks this node's own data server and every peer, writes
//! `data/gossip/view.json` that `GossipView::load` reads, keeps a silent node's last
//! figures with its error, drops nodes gone from cluster.toml; config errors.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_writes_the_view_of_every_node_and_keeps_the_last_figures_of_a_silent_one() {
    let a = server("a").await;
    let b = server("b").await;
    store(a.home.path(), key())
        .insert_games(&[game("a1", "a", key())])
        .expect("a");
    store(b.home.path(), key())
        .insert_games(&[
            game("a1", "a", key()),
            game("b1", "b", key()),
            game("b2", "b", key()),
        ])
        .expect("b");
    std::fs::create_dir_all(b.home.path().join("models")).expect("models");
    std::fs::write(b.home.path().join("models/notes.txt"), b"12345").expect("model file");
    std::fs::create_dir_all(b.home.path().join("data/training")).expect("training");
    std::fs::write(b.home.path().join("data/training/x.npz"), b"1234567").expect("data file");
    std::fs::write(
        a.home.path().join("cluster.toml"),
        cluster(&[
            ("a", "\"coordinator\"", a.port, false),
            ("b", "\"selfplay\"", b.port, false),
            ("dead", "\"selfplay\"", 1, false),
        ]),
    )
    .expect("cluster");
    let (h, ctx, _) = daemon(a.home.path(), "a", "[gossip_sync]\ntimeout_s = 2\n");
    h.run_cycle(&ctx).await.expect("round");

    let v = GossipView::load(a.home.path()).expect("view");
    assert_eq!(v.nodes.len(), 3);
    let (va, vb, vd) = (&v.nodes["a"], &v.nodes["b"], &v.nodes["dead"]);
    assert!(va.seen_ms.is_some() && vb.seen_ms.is_some() && vd.seen_ms.is_none());
    assert!(vd.error.is_some());
    assert_eq!(vb.model_files, 1);
    assert_eq!(vb.model_bytes, 5);
    // Game stores are not files of the manifest (games move as records): the NPZ alone.
    assert_eq!((vb.data_files, vb.data_bytes), (1, 7));
    assert_eq!(vb.batches.iter().map(|x| x.count).sum::<u64>(), 3);
    // Batch (square8_2p, a, hour): on both nodes.
    let copies = v.replication();
    let hour = 1_700_000_000_000i64 / 3_600_000;
    assert_eq!(copies[&(key(), "a".to_string(), hour)], (2, 1));
    assert_eq!(copies[&(key(), "b".to_string(), hour)], (1, 2));
    assert!(h.health_check().message.starts_with("2 of 3"));

    // b goes silent: its figures stay, with the error; dead leaves cluster.toml.
    let seen_b = vb.seen_ms;
    drop(b);
    std::fs::write(
        a.home.path().join("cluster.toml"),
        cluster(&[
            ("a", "\"coordinator\"", a.port, false),
            ("b", "\"selfplay\"", 1, false),
        ]),
    )
    .expect("cluster");
    let (h, ctx, _) = daemon(a.home.path(), "a", "[gossip_sync]\ntimeout_s = 2\n");
    h.run_cycle(&ctx).await.expect("round");
    let v = GossipView::load(a.home.path()).expect("view");
    assert_eq!(v.nodes.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(v.nodes["b"].seen_ms, seen_b);
    assert_eq!(v.nodes["b"].batches.len(), 2);
    assert!(v.nodes["b"].error.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_fails_the_round_and_bad_settings_are_config_errors() {
    let home = tempfile::tempdir().expect("home");
    std::fs::write(
        home.path().join("cluster.toml"),
        cluster(&[("a", "\"coordinator\"", 1, false)]),
    )
    .expect("cluster");
    let (h, ctx, _) = daemon(home.path(), "a", "[gossip_sync]\ntimeout_s = 1\n");
    // One node, no data server of its own: nothing to ask, not a failure.
    h.run_cycle(&ctx).await.expect("nothing to ask");
    // A data server that has gone (a stale address file): asked, no answer, failed.
    std::fs::create_dir_all(home.path().join("run")).expect("run");
    std::fs::write(home.path().join("run/data_server.addr"), "127.0.0.1:1\n").expect("addr");
    let e = h.run_cycle(&ctx).await.expect_err("nobody answered");
    assert!(e.to_string().contains("no node answered"), "{e}");
    assert!(
        GossipView::path(home.path()).exists(),
        "the errors are written too"
    );

    for (toml, key) in [
        ("[gossip_sync]\ntimeout_s = 0\n", "gossip_sync.timeout_s"),
        ("[gossip_sync]\ninterval = 1\n", "interval"),
    ] {
        let home = tempfile::tempdir().expect("home");
        let e = ringrift_test_support::refused("gossip_sync", build, home.path(), toml);
        assert!(format!("{e:#}").contains(key), "{toml}: {e:#}");
    }
}
