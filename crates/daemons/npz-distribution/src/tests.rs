//! In-process tests: the exporting node's real data_server in one temp home, a training
//! node in another.

use super::*;
use ringrift_test_support::data_server as testing;
use std::path::Path;

struct Two {
    /// The exporting node `c`, with its data server.
    exporter: testing::Server,
    here: tempfile::TempDir,
}

async fn two(role_here: &str) -> Two {
    let exporter = testing::server("c").await;
    let here = tempfile::tempdir().unwrap();
    let roles = format!("{role_here:?}");
    std::fs::write(
        here.path().join("cluster.toml"),
        testing::cluster(&[
            ("test", &roles, 1, false),
            ("c", "\"coordinator\"", exporter.port, false),
        ]),
    )
    .unwrap();
    Two { exporter, here }
}

fn export(home: &Path, name: &str, bytes: &[u8]) -> Event {
    let dir = ringrift_store::paths::training_dir(home);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let (sha, _) = ringrift_store::manifest::hash_file(&path).unwrap();
    let mut ev = Event::new(Payload::NpzExportCompleted(wire::NpzExportCompleted {
        path: path.display().to_string(),
        rows: 10,
        sha256: sha,
        games: 1,
        watermark: 1,
    }))
    .with_config("hex8_2p");
    ev.source = "auto_export@c".into();
    ev
}

#[tokio::test]
async fn a_training_node_receives_the_announced_file_verified() {
    let t = two("training").await;
    let ev = export(
        t.exporter.home.path(),
        "hex8_2p_after7.npz",
        &[7u8; 300_000],
    );
    let (d, ctx, rec) =
        ringrift_test_support::daemon("npz_distribution", build, t.here.path(), "test", "");
    d.handle_event(&ctx, &ev).await.unwrap();
    let local = ringrift_store::paths::training_dir(t.here.path()).join("hex8_2p_after7.npz");
    assert_eq!(std::fs::read(&local).unwrap(), vec![7u8; 300_000]);
    let kinds: Vec<_> = rec.events().iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EventType::DataSyncStarted,
            EventType::DataSyncCompleted,
            EventType::NpzDistributed
        ]
    );
    // Redelivered: already here, nothing moves.
    d.handle_event(&ctx, &ev).await.unwrap();
    assert_eq!(rec.events().len(), 3);
}

#[tokio::test]
async fn a_file_that_differs_from_its_announcement_is_never_installed() {
    let t = two("training").await;
    let ev = export(t.exporter.home.path(), "x.npz", &[1u8; 50_000]);
    // Replaced since the export with other content: a newer export, not fetched.
    export(t.exporter.home.path(), "x.npz", &[2u8; 50_000]);
    let (d, ctx, rec) =
        ringrift_test_support::daemon("npz_distribution", build, t.here.path(), "test", "");
    d.handle_event(&ctx, &ev).await.unwrap();
    assert!(
        !ringrift_store::paths::training_dir(t.here.path())
            .join("x.npz")
            .exists()
    );
    assert!(rec.events().is_empty());
}

#[tokio::test]
async fn other_roles_do_not_receive_and_bad_roles_are_refused() {
    let t = two("selfplay").await;
    let ev = export(t.exporter.home.path(), "y.npz", &[3u8; 1000]);
    let (d, ctx, rec) =
        ringrift_test_support::daemon("npz_distribution", build, t.here.path(), "test", "");
    d.handle_event(&ctx, &ev).await.unwrap();
    assert!(rec.events().is_empty());
    assert!(d.health_check().message.contains("not a receiving node"));
    let r = Context::for_test(
        "npz_distribution",
        t.here.path(),
        "[npz_distribution]\nroles = [\"trainer\"]\n",
    )
    .and_then(|(ctx, _)| build(&ctx).map(|_| ()));
    let err = r.expect_err("bad role");
    assert!(
        format!("{err:#}").contains("npz_distribution.roles"),
        "{err:#}"
    );
}
