//! In-process tests: this node promotes; a peer's real data_server (another temp home)
//! shows whether the peer holds the model yet.

use super::*;
use ringrift_test_support::data_server as testing;
use std::path::Path;

const KEY: &str = "hex8_2p";

fn config() -> ConfigKey {
    KEY.parse().unwrap()
}

fn promote_in(home: &Path, generation: u32) -> String {
    testing::promote_example(home, config(), generation, generation as u8, 5000)
}

struct Setup2 {
    here: tempfile::TempDir,
    /// The peer `b`, with its data server.
    peer: testing::Server,
}

async fn two_nodes() -> Setup2 {
    let here = tempfile::tempdir().unwrap();
    let peer = testing::server("b").await;
    std::fs::write(
        here.path().join("cluster.toml"),
        testing::cluster(&[
            ("test", "\"coordinator\"", 1, false),
            ("b", "\"selfplay\"", peer.port, false),
        ]),
    )
    .unwrap();
    Setup2 { here, peer }
}

impl Setup2 {
    /// The peer gets this node's canonical model file of `format` (as its model_sync
    /// would install it).
    fn peer_installs(&self, format: models::ModelFormat) {
        let models_b = ringrift_store::paths::models_dir(self.peer.home.path());
        std::fs::create_dir_all(&models_b).unwrap();
        std::fs::copy(
            models::canonical_path(self.here.path(), config(), format),
            models_b.join(format!("canonical_{KEY}.{}", format.ext())),
        )
        .unwrap();
    }
}

/// `evs` is one MODEL_DISTRIBUTED of payload `sha` naming both nodes.
fn assert_distributed_to_both(evs: &[Event], sha: &str) {
    assert_eq!(evs.len(), 1, "{evs:?}");
    let Payload::ModelDistributed(m) = &evs[0].payload else {
        panic!("{evs:?}")
    };
    assert_eq!(m.model_sha256, sha);
    assert_eq!(m.nodes, vec!["b".to_owned(), "test".to_owned()]);
}

fn promoted(sha: &str, node: &str) -> Event {
    let mut ev = Event::new(Payload::ModelPromoted(wire::ModelPromoted {
        model_sha256: sha.into(),
        ..Default::default()
    }))
    .with_config(KEY);
    ev.source = format!("unified_promotion@{node}");
    ev
}

#[tokio::test]
async fn distributed_is_announced_once_every_node_holds_the_file() {
    let s = two_nodes().await;
    let (d, ctx, rec) =
        ringrift_test_support::daemon("model_distribution", build, s.here.path(), "test", "");
    let sha = promote_in(s.here.path(), 3);
    // Promotions made elsewhere are not this daemon's.
    d.handle_event(&ctx, &promoted(&sha, "b")).await.unwrap();
    d.run_cycle(&ctx).await.unwrap();
    assert!(rec.events().is_empty());
    d.handle_event(&ctx, &promoted(&sha, "test")).await.unwrap();
    d.run_cycle(&ctx).await.unwrap();
    assert!(rec.events().is_empty(), "the peer does not have it yet");
    // A restart goes on tracking it.
    let d = build(&ctx).unwrap();
    assert_eq!(
        d.health_check().details.get("pending").map(String::as_str),
        Some("1")
    );
    s.peer_installs(models::ModelFormat::Rrm);
    d.run_cycle(&ctx).await.unwrap();
    assert_distributed_to_both(&rec.events(), &sha);
    d.run_cycle(&ctx).await.unwrap();
    assert_eq!(rec.events().len(), 1, "announced once");
}

#[tokio::test]
async fn a_node_still_without_the_model_after_the_deadline_is_reported_once() {
    let s = two_nodes().await;
    let (d, ctx, rec) = ringrift_test_support::daemon(
        "model_distribution",
        build,
        s.here.path(),
        "test",
        "[model_distribution]\ndeadline_s = 0.001\n",
    );
    let sha = promote_in(s.here.path(), 1);
    d.handle_event(&ctx, &promoted(&sha, "test")).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while rec.events().is_empty() && std::time::Instant::now() < deadline {
        d.run_cycle(&ctx).await.unwrap();
    }
    d.run_cycle(&ctx).await.unwrap();
    let evs = rec.events();
    assert_eq!(evs.len(), 1, "{evs:?}");
    let Payload::DataSyncFailed(f) = &evs[0].payload else {
        panic!("{evs:?}")
    };
    assert_eq!(
        (f.source_node.as_str(), f.target_node.as_str()),
        ("test", "b")
    );
    assert!(f.error.contains("not on b"), "{}", f.error);
    let h = d.health_check();
    assert!(h.message.contains("hex8_2p@b"), "{}", h.message);
}

#[tokio::test]
async fn bad_settings_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (toml, key) in [
        (
            "[model_distribution]\ndeadline_s = 0\n",
            "model_distribution.deadline_s",
        ),
        (
            "[model_distribution]\ntimeout_s = nan\n",
            "model_distribution.timeout_s",
        ),
        ("[model_distribution]\nother = 1\n", "other"),
    ] {
        let r = Context::for_test("model_distribution", dir.path(), toml)
            .and_then(|(ctx, _)| build(&ctx).map(|_| ()));
        let err = r.expect_err(toml);
        assert!(format!("{err:#}").contains(key), "{toml}: {err:#}");
    }
}

/// An external trainer's ONNX promotion completes too: the peer's `canonical_*.onnx` with
/// the promoted file counts (only `.rrm` was looked at before).
#[tokio::test]
async fn an_onnx_promotion_is_announced_once_every_node_holds_it() {
    let s = two_nodes().await;
    let (d, ctx, rec) =
        ringrift_test_support::daemon("model_distribution", build, s.here.path(), "test", "");
    let dir = ringrift_store::paths::models_dir(s.here.path());
    std::fs::create_dir_all(&dir).unwrap();
    let onnx = dir.join("gen2.onnx");
    std::fs::write(&onnx, models::example_onnx(config(), 2, 5_000)).unwrap();
    let sha = models::identify_file(&onnx).unwrap().payload_sha256;
    models::promote(
        s.here.path(),
        config(),
        &onnx,
        "gen2",
        &sha,
        None,
        None,
        models::Fence::Leader(1),
    )
    .unwrap();
    d.handle_event(&ctx, &promoted(&sha, "test")).await.unwrap();
    d.run_cycle(&ctx).await.unwrap();
    assert!(rec.events().is_empty(), "the peer does not have it yet");
    s.peer_installs(models::ModelFormat::Onnx);
    d.run_cycle(&ctx).await.unwrap();
    assert_distributed_to_both(&rec.events(), &sha);
}
