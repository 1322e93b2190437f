//! In-process tests: a real data_server in one temp home serves the promoting node's
//! models; model_sync in another home follows it.

use super::*;
use ringrift_test_support::data_server as testing;
use std::path::Path;

const KEY: &str = "hex8_2p";

fn config() -> ConfigKey {
    KEY.parse().unwrap()
}

/// Promotes a model of `generation` (200 kB of `fill`) in `home`; returns its payload sha.
fn promote_in(home: &Path, generation: u32, fill: u8) -> String {
    testing::promote_example(home, config(), generation, fill, 200_000)
}

struct Pair {
    /// The promoting node `a`, with its data server.
    a: testing::Server,
    b: tempfile::TempDir,
    ctx: Context,
    rec: handler_base::Recorded,
    sync: Arc<dyn Handler>,
}

async fn pair() -> Pair {
    let a = testing::server("a").await;
    let (b, ctx, rec, sync) = follower(&a);
    Pair {
        a,
        b,
        ctx,
        rec,
        sync,
    }
}

/// A home whose model_sync follows the data server `a`.
fn follower(
    a: &testing::Server,
) -> (
    tempfile::TempDir,
    Context,
    handler_base::Recorded,
    Arc<dyn Handler>,
) {
    let b = tempfile::tempdir().unwrap();
    std::fs::write(
        b.path().join("cluster.toml"),
        testing::cluster(&[
            ("test", "\"selfplay\"", 1, false),
            ("a", "\"coordinator\"", a.port, false),
        ]),
    )
    .unwrap();
    let (sync, ctx, rec) = ringrift_test_support::daemon("model_sync", build, b.path(), "test", "");
    (b, ctx, rec, sync)
}

/// The generation and payload SHA-256 of `home`'s canonical model.
fn held(home: &Path) -> (u32, String) {
    let c = models::canonical(home, config())
        .unwrap()
        .expect("a canonical model");
    (c.generation, c.sha256)
}

fn promoted(sha: &str) -> Event {
    let mut ev = Event::new(Payload::ModelPromoted(wire::ModelPromoted {
        model_path: "/elsewhere/gen.rrm".into(),
        canonical_path: "/elsewhere/canonical_hex8_2p.rrm".into(),
        model_sha256: sha.into(),
        ..Default::default()
    }))
    .with_config(KEY);
    ev.source = "unified_promotion@a".into();
    ev
}

#[tokio::test]
async fn a_promotion_elsewhere_is_installed_here_verified_with_its_link() {
    let p = pair().await;
    let sha = promote_in(p.a.home.path(), 1, 7);
    p.sync.handle_event(&p.ctx, &promoted(&sha)).await.unwrap();
    let c = models::canonical(p.b.path(), config())
        .unwrap()
        .expect("installed");
    assert_eq!(c.sha256, sha);
    let link = std::fs::read_link(models::best_link(p.b.path(), config())).unwrap();
    assert_eq!(link, Path::new("canonical_hex8_2p.rrm"));
    let kinds: Vec<_> = p.rec.events().iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EventType::DataSyncStarted,
            EventType::DataSyncCompleted,
            EventType::ModelDistributed
        ]
    );
    // The same event again (a redelivery) changes nothing.
    p.sync.handle_event(&p.ctx, &promoted(&sha)).await.unwrap();
    assert_eq!(p.rec.events().len(), 3);
    // Our own promotions are not fetched from anyone.
    let mut own = promoted("ff");
    own.source = "unified_promotion@test".into();
    p.sync.handle_event(&p.ctx, &own).await.unwrap();
    assert_eq!(p.rec.events().len(), 3);
}

#[tokio::test]
async fn the_cycle_catches_up_to_a_newer_generation() {
    let p = pair().await;
    promote_in(p.a.home.path(), 1, 1);
    p.sync.run_cycle(&p.ctx).await.unwrap();
    assert_eq!(
        models::canonical(p.b.path(), config())
            .unwrap()
            .unwrap()
            .generation,
        1
    );
    let sha2 = promote_in(p.a.home.path(), 2, 2);
    p.sync.run_cycle(&p.ctx).await.unwrap();
    let c = models::canonical(p.b.path(), config()).unwrap().unwrap();
    assert_eq!((c.generation, c.sha256.as_str()), (2, sha2.as_str()));
    // The replaced model is backed up, not lost.
    let backups = std::fs::read_dir(ringrift_store::paths::models_dir(p.b.path()).join("backup"))
        .unwrap()
        .count();
    assert!(backups >= 1);
}

/// A promotion that changes the format (an external trainer's ONNX model after ours) is
/// followed, by event and by catch-up: one canonical model here, the `.onnx` one.
#[tokio::test]
async fn an_onnx_canonical_model_is_followed_and_replaces_the_rrm_one() {
    let p = pair().await;
    promote_in(p.a.home.path(), 1, 1);
    p.sync.run_cycle(&p.ctx).await.unwrap();
    let a_models = ringrift_store::paths::models_dir(p.a.home.path());
    let onnx = a_models.join("gen2.onnx");
    std::fs::write(&onnx, models::example_onnx(config(), 2, 100_000)).unwrap();
    let sha2 = models::identify_file(&onnx).unwrap().payload_sha256;
    let c1 = models::canonical(p.a.home.path(), config())
        .unwrap()
        .unwrap();
    models::promote(
        p.a.home.path(),
        config(),
        &onnx,
        "gen2",
        &sha2,
        Some(&c1.sha256),
        None,
        models::Fence::Leader(1),
    )
    .unwrap();
    p.sync.handle_event(&p.ctx, &promoted(&sha2)).await.unwrap();
    let here = ringrift_store::paths::models_dir(p.b.path());
    let c = models::canonical(p.b.path(), config()).unwrap().unwrap();
    assert_eq!((c.generation, c.sha256.as_str()), (2, sha2.as_str()));
    assert_eq!(c.path, here.join("canonical_hex8_2p.onnx"));
    assert!(!here.join("canonical_hex8_2p.rrm").exists());
    let link = std::fs::read_link(models::best_link(p.b.path(), config())).unwrap();
    assert_eq!(link, Path::new("canonical_hex8_2p.onnx"));
    // A node that missed the event catches up by the ONNX model's generation.
    let (late, late_ctx, _, late_sync) = follower(&p.a);
    late_sync.run_cycle(&late_ctx).await.unwrap();
    let c = models::canonical(late.path(), config()).unwrap().unwrap();
    assert_eq!((c.generation, c.sha256.as_str()), (2, sha2.as_str()));
}

#[tokio::test]
async fn a_byte_flipped_on_the_sources_disk_is_quarantined_never_installed() {
    let p = pair().await;
    let sha1 = promote_in(p.a.home.path(), 1, 1);
    p.sync.handle_event(&p.ctx, &promoted(&sha1)).await.unwrap();
    let sha2 = promote_in(p.a.home.path(), 2, 2);
    // Let the server hash the good file, then rot one byte in place (same size and
    // mtime, so its cached hash, and the manifest, still name the good content).
    let client =
        ringrift_transfer::DataClient::new(None, std::time::Duration::from_secs(5)).unwrap();
    let peer = p.a.peer();
    manifest(&client, &peer, Root::Models).await.unwrap();
    let f = models::canonical_path(p.a.home.path(), config(), models::ModelFormat::Rrm);
    let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&f).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0x01;
    let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &bytes[last..last + 1], last as u64).unwrap();
    file.set_modified(mtime).unwrap();
    drop(file);
    let err = p
        .sync
        .handle_event(&p.ctx, &promoted(&sha2))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("quarantined"), "{err:#}");
    let c = models::canonical(p.b.path(), config()).unwrap().unwrap();
    assert_eq!(c.sha256, sha1, "the old canonical model stays");
    let q = ringrift_store::paths::quarantine_dir(p.b.path()).join("model_sync");
    assert!(std::fs::read_dir(q).unwrap().count() >= 1);
    assert!(
        p.rec
            .events()
            .iter()
            .any(|e| e.kind == EventType::DataSyncFailed)
    );
}

#[tokio::test]
async fn bad_settings_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (toml, key) in [
        ("[model_sync]\nper_host = 0\n", "model_sync.per_host"),
        ("[model_sync]\ntimeout_s = -1\n", "model_sync.timeout_s"),
        ("[model_sync]\nbogus = 1\n", "bogus"),
    ] {
        let r = Context::for_test("model_sync", dir.path(), toml)
            .and_then(|(ctx, _)| build(&ctx).map(|_| ()));
        let err = r.expect_err(toml);
        assert!(format!("{err:#}").contains(key), "{toml}: {err:#}");
    }
}

/// Node a promoted with token 7 after this home's canonical model was written by a newer
/// leader (token 8): the copy is refused before its model is downloaded, by event and by
/// catch-up, the event is acked, and health counts it. A promotion with token 9 is
/// installed and brings its token here, so a stale swap here is refused afterwards.
#[tokio::test]
async fn a_deposed_leaders_promotion_is_not_copied_and_a_newer_token_travels() {
    let p = pair().await;
    let ours = testing::promote_example_as(p.b.path(), config(), 1, 1, 200_000, 8);
    let stale = testing::promote_example_as(p.a.home.path(), config(), 2, 2, 200_000, 7);
    p.sync
        .handle_event(&p.ctx, &promoted(&stale))
        .await
        .expect("acked: a stale promotion never fits");
    p.sync.run_cycle(&p.ctx).await.expect("catch-up");
    let c = models::canonical(p.b.path(), config()).unwrap().unwrap();
    assert_eq!((c.sha256.as_str(), c.fence_token), (ours.as_str(), 8));
    assert!(
        p.rec.events().is_empty(),
        "nothing downloaded: {:?}",
        p.rec.events()
    );
    assert_eq!(p.sync.health_check().details["fenced"], "2");

    let newer = testing::promote_example_as(p.a.home.path(), config(), 3, 3, 200_000, 9);
    p.sync
        .handle_event(&p.ctx, &promoted(&newer))
        .await
        .unwrap();
    let c = models::canonical(p.b.path(), config()).unwrap().unwrap();
    assert_eq!((c.sha256.as_str(), c.fence_token), (newer.as_str(), 9));
    let (h, bytes) = models::example(config(), 4, b"stale").unwrap();
    let m = ringrift_store::paths::models_dir(p.b.path()).join("gen4.rrm");
    std::fs::write(&m, bytes).unwrap();
    let err = models::promote(
        p.b.path(),
        config(),
        &m,
        "gen4",
        &h.payload_sha256,
        Some(&newer),
        None,
        models::Fence::Leader(8),
    )
    .expect_err("token 8 is stale here now");
    assert!(
        matches!(
            err,
            ringrift_store::StoreError::Fenced { token: 8, seen: 9 }
        ),
        "{err:?}"
    );
}

/// A MODEL_PROMOTED of a generation older than ours (a late or replayed event, a peer
/// behind us) installs nothing: ours stays, no transfer is started.
#[tokio::test]
async fn an_older_generation_promoted_elsewhere_does_not_replace_ours() {
    let p = pair().await;
    let ours = promote_in(p.b.path(), 3, 3);
    let theirs = promote_in(p.a.home.path(), 2, 2);
    p.sync
        .handle_event(&p.ctx, &promoted(&theirs))
        .await
        .unwrap();
    assert_eq!(held(p.b.path()), (3, ours.clone()));
    assert!(p.rec.events().is_empty(), "{:?}", p.rec.events());
    // The cycle's catch-up leaves it too; a newer generation there is then followed.
    p.sync.run_cycle(&p.ctx).await.unwrap();
    assert_eq!(held(p.b.path()), (3, ours));
    let newer = promote_in(p.a.home.path(), 4, 4);
    p.sync
        .handle_event(&p.ctx, &promoted(&newer))
        .await
        .unwrap();
    assert_eq!(held(p.b.path()), (4, newer));
}

/// Catch-up follows durable peers only: an ephemeral node (no data_server in its shipped
/// profile) is not asked, whatever it would answer; before, every cycle asked it (and
/// failed, on the shipped cluster).
#[tokio::test]
async fn catch_up_asks_durable_peers_only() {
    let a = testing::server("a").await;
    let spot = testing::server("spot").await;
    promote_in(a.home.path(), 1, 1);
    promote_in(spot.home.path(), 5, 5);
    let b = tempfile::tempdir().unwrap();
    let toml = testing::cluster(&[
        ("test", "\"selfplay\"", 1, false),
        ("a", "\"coordinator\"", a.port, false),
        ("spot", "\"selfplay\"", spot.port, false),
    ]);
    let at = toml.find("name = \"spot\"").expect("spot");
    let toml = format!("{}ephemeral = true\n{}", &toml[..at], &toml[at..]);
    std::fs::write(b.path().join("cluster.toml"), toml).unwrap();
    let (sync, ctx, _rec) =
        ringrift_test_support::daemon("model_sync", build, b.path(), "test", "");
    sync.run_cycle(&ctx).await.unwrap();
    assert_eq!(held(b.path()).0, 1, "followed the durable peer only");
    assert_eq!(sync.health_check().details["peers"], "1");
}
