//! Tests of the pieces of game transfer that need no server: query encoding, the
//! watermark file across reopen, the gossip view file. (Push and pull against a real
//! data server are tested in `ringrift-data-server`'s `games_tests`.)

use super::*;

fn key() -> ConfigKey {
    "hex8_2p".parse().expect("key")
}

#[test]
fn queries_encode_and_decode() {
    let f = GameFilter {
        min_quality: Some(0.7),
        source_node: Some("n 1/x".into()),
        hour: Some(493_000),
    };
    let q = games_query(key(), 5, 100, &f);
    assert_eq!(
        q,
        "/games?config=hex8_2p&after=5&limit=100&min_quality=0.7&source_node=n%201%2Fx&hour=493000"
    );
    assert_eq!(percent_decode("n%201%2Fx").as_deref(), Some("n 1/x"));
    assert_eq!(percent_decode("a+b").as_deref(), Some("a b"));
    assert_eq!(percent_decode("%zz"), None);
    assert_eq!(percent_decode("%4"), None);
    assert_eq!(percent_decode("%ff"), None, "not UTF-8");
}

#[test]
fn watermarks_survive_a_reopen_and_are_per_link() {
    let dir = tempfile::tempdir().expect("dir");
    let w = Watermarks::for_daemon(dir.path(), "auto_sync").expect("open");
    assert_eq!(w.get("b", key(), Direction::Push).expect("get"), 0);
    w.set("b", key(), Direction::Push, 42).expect("set");
    w.set("b", key(), Direction::Pull, 7).expect("set");
    w.set("c", key(), Direction::Push, 3).expect("set");
    drop(w);
    let w = Watermarks::for_daemon(dir.path(), "auto_sync").expect("reopen");
    assert_eq!(w.get("b", key(), Direction::Push).expect("get"), 42);
    assert_eq!(w.get("b", key(), Direction::Pull).expect("get"), 7);
    assert_eq!(
        w.get("b", "hex8_3p".parse().expect("k"), Direction::Push)
            .expect("get"),
        0
    );
    assert_eq!(
        w.min_push(&["b".into(), "c".into()], key()).expect("min"),
        3
    );
    assert_eq!(w.all().expect("all").len(), 3);
    assert!(dir.path().join("run/sync/auto_sync.db").exists());
}

#[test]
fn the_gossip_view_round_trips_and_counts_copies() {
    let dir = tempfile::tempdir().expect("dir");
    assert_eq!(
        GossipView::load(dir.path()).expect("empty"),
        GossipView::default()
    );
    let batch = |count| BatchSummary {
        config: key(),
        source_node: "a".into(),
        hour: 1,
        count,
    };
    let mut v = GossipView {
        updated_ms: 5,
        ..Default::default()
    };
    v.nodes.insert(
        "a".into(),
        NodeView {
            seen_ms: Some(5),
            batches: vec![batch(10)],
            ..Default::default()
        },
    );
    v.nodes.insert(
        "b".into(),
        NodeView {
            seen_ms: Some(4),
            batches: vec![batch(7)],
            ..Default::default()
        },
    );
    v.save(dir.path()).expect("save");
    let back = GossipView::load(dir.path()).expect("load");
    assert_eq!(back, v);
    assert_eq!(back.replication()[&(key(), "a".to_string(), 1)], (2, 10));
    std::fs::write(GossipView::path(dir.path()), b"{not json").expect("corrupt");
    assert!(matches!(
        GossipView::load(dir.path()),
        Err(StoreError::Corrupt { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pacer_spreads_requests_at_the_rate() {
    assert!(Pacer::new(0).is_none(), "0 = unlimited");
    let p = Pacer::new(1_000_000).expect("pacer");
    let t0 = Instant::now();
    // 3 × 0.4 MB at 1 MB/s: the third may start at 0.8 s, not before.
    for _ in 0..3 {
        p.take(400_000).await;
    }
    let e = t0.elapsed().as_secs_f64();
    assert!(e >= 0.79, "{e}");
    assert!(e < 5.0, "{e}");
}
