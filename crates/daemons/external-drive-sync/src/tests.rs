//! In process through `Context::for_test`: `build`, a first cycle mirrors data/ (the game
//! database as a snapshot that includes rows still in its WAL) and models/ with a
//! manifest, a second copies nothing, changed files are copied again, and a missing or
//! unmounted target is DEGRADED with nothing written.

use super::*;
use handler_base::{HealthStatus, Recorded};
use ringrift_store::games::{GameRecord, GameStore};
use ringrift_store::manifest::{Manifest, hash_file};
use std::path::Path;

fn game(id: &str) -> GameRecord {
    GameRecord {
        game_id: id.into(),
        config_key: "hex8_2p".parse().unwrap(),
        players: vec!["a".into(), "b".into()],
        winner: Some(1),
        moves: vec![1, 2, 3],
        source_node: "n".into(),
        quality_score: 0.5,
        created_at: 1,
        policy: None,
        search_values: None,
    }
}

fn syncs(rec: &Recorded) -> Vec<(&'static str, wire::DataSync)> {
    rec.payloads()
        .into_iter()
        .filter_map(|p| match p {
            wire::event::Payload::DataSyncStarted(d) => Some(("started", d)),
            wire::event::Payload::DataSyncCompleted(d) => Some(("completed", d)),
            wire::event::Payload::DataSyncFailed(d) => Some(("failed", d)),
            _ => None,
        })
        .collect()
}

/// Games in a mirrored database, opened read-only (the copy stays as written).
fn mirrored_games(p: &Path) -> i64 {
    let c = rusqlite::Connection::open_with_flags(p, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.query_row("SELECT COUNT(*) FROM games", [], |r| r.get(0))
        .unwrap()
}

fn write(p: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

#[tokio::test]
async fn mirrors_changed_files_only_verified_with_a_manifest() {
    let home = tempfile::tempdir().unwrap();
    let drive = tempfile::tempdir().unwrap();
    let h = home.path();
    let db = h.join("data/games/hex8_2p.db");
    // Kept open: its rows stay in the WAL, which a copy of the main file would miss.
    let store = GameStore::open(&db).unwrap();
    store.insert_games(&[game("g1"), game("g2")]).unwrap();
    write(&h.join("data/training/hex8_2p.npz"), b"npz bytes v1");
    write(&h.join("models/canonical_hex8_2p.rrm"), &vec![7u8; 100_000]);
    std::os::unix::fs::symlink(
        "canonical_hex8_2p.rrm",
        h.join("models/ringrift_best_hex8_2p"),
    )
    .unwrap();
    write(&h.join("data/quarantine/bad.db.1.x"), b"quarantined");
    write(&h.join("data/training/.x.npz.tmp-1-2"), b"partial");

    let toml = format!(
        "[external_drive_sync]\npath = {:?}\nrequire_mount = false\n",
        drive.path().display().to_string()
    );
    let (d, ctx, rec) = ringrift_test_support::daemon(INFO.name, build, h, "test", &toml);
    d.run_cycle(&ctx).await.unwrap();

    let ev = syncs(&rec);
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(ev[0].0, "started");
    assert_eq!(ev[1].0, "completed");
    assert_eq!(ev[1].1.files, 3);
    assert_eq!(
        ev[1].1.target_node,
        format!("external:{}", drive.path().display())
    );
    assert_eq!(ev[1].1.source_node, "test");
    assert!(ev[1].1.error.is_empty());

    let m = drive.path();
    assert_eq!(
        std::fs::read(m.join("data/training/hex8_2p.npz")).unwrap(),
        b"npz bytes v1"
    );
    assert_eq!(
        std::fs::read(m.join("models/canonical_hex8_2p.rrm")).unwrap(),
        vec![7u8; 100_000]
    );
    assert_eq!(
        std::fs::read_link(m.join("models/ringrift_best_hex8_2p")).unwrap(),
        Path::new("canonical_hex8_2p.rrm")
    );
    assert!(
        !m.join("data/quarantine").exists() && !m.join("data/training/.x.npz.tmp-1-2").exists()
    );
    assert!(!m.join("data/games/hex8_2p.db-wal").exists());
    // The database copy is self-contained and holds the rows still in the source's WAL.
    assert_eq!(mirrored_games(&m.join("data/games/hex8_2p.db")), 2);

    let manifest = Manifest::load(&m.join(mirror::MANIFEST)).unwrap();
    assert_eq!(
        manifest.files.keys().cloned().collect::<Vec<_>>(),
        vec![
            "data/games/hex8_2p.db".to_owned(),
            "data/training/hex8_2p.npz".to_owned(),
            "models/canonical_hex8_2p.rrm".to_owned()
        ]
    );
    for rel in manifest.files.keys() {
        let (sha, size) = hash_file(&m.join(rel)).unwrap();
        assert_eq!(
            (sha, size),
            (manifest.files[rel].sha256.clone(), manifest.files[rel].size)
        );
    }
    let health = d.health_check();
    assert_eq!(health.status, HealthStatus::Running);

    // Second cycle: nothing changed, nothing copied, no events.
    d.run_cycle(&ctx).await.unwrap();
    assert_eq!(syncs(&rec).len(), 2);
    assert_eq!(d.health_check().details["last_cycle_files"], "0");

    // A changed file and a new game are copied again; after a restart too, the state
    // remembers the rest.
    write(
        &h.join("data/training/hex8_2p.npz"),
        b"npz bytes, version 2",
    );
    store.insert_games(&[game("g3")]).unwrap();
    let (ctx2, rec2) = Context::for_test(INFO.name, h, &toml).unwrap();
    let d2 = build(&ctx2).unwrap();
    d2.run_cycle(&ctx2).await.unwrap();
    let ev = syncs(&rec2);
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(ev[1].1.files, 2, "the npz and the database, not the model");
    assert_eq!(
        std::fs::read(m.join("data/training/hex8_2p.npz")).unwrap(),
        b"npz bytes, version 2"
    );
    assert_eq!(mirrored_games(&m.join("data/games/hex8_2p.db")), 3);
    let manifest = Manifest::load(&m.join(mirror::MANIFEST)).unwrap();
    assert_eq!(
        manifest.files["data/training/hex8_2p.npz"].sha256,
        hash_file(&h.join("data/training/hex8_2p.npz")).unwrap().0
    );

    // A mirrored file deleted on the drive is copied again.
    std::fs::remove_file(m.join("models/canonical_hex8_2p.rrm")).unwrap();
    d2.run_cycle(&ctx2).await.unwrap();
    assert_eq!(syncs(&rec2)[3].1.files, 1);
    assert!(m.join("models/canonical_hex8_2p.rrm").exists());
}

#[tokio::test]
async fn missing_or_unmounted_target_is_degraded_and_untouched() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    write(&h.join("data/training/hex8_2p.npz"), b"npz");
    let drive = tempfile::tempdir().unwrap();
    let missing = drive.path().join("usb");

    let toml = format!(
        "[external_drive_sync]\npath = {:?}\n",
        missing.display().to_string()
    );
    let (d, ctx, rec) = ringrift_test_support::daemon(INFO.name, build, h, "test", &toml);
    for _ in 0..3 {
        d.run_cycle(&ctx).await.unwrap();
    }
    let health = d.health_check();
    assert_eq!(health.status, HealthStatus::Degraded);
    assert!(
        health.message.contains(&missing.display().to_string()),
        "{}",
        health.message
    );
    assert!(
        health.message.contains("does not exist"),
        "{}",
        health.message
    );
    assert!(!missing.exists(), "nothing created");
    assert!(syncs(&rec).is_empty());

    // Present but a plain directory, and require_mount defaults to true.
    std::fs::create_dir(&missing).unwrap();
    d.run_cycle(&ctx).await.unwrap();
    let health = d.health_check();
    assert_eq!(health.status, HealthStatus::Degraded);
    assert!(
        health.message.contains("not a mount point"),
        "{}",
        health.message
    );
    assert_eq!(
        std::fs::read_dir(&missing).unwrap().count(),
        0,
        "nothing written"
    );
    assert!(syncs(&rec).is_empty());

    // Unset: degraded, nothing to do.
    let (d, ctx, _) = ringrift_test_support::daemon(INFO.name, build, h, "test", "");
    d.run_cycle(&ctx).await.unwrap();
    assert_eq!(d.health_check().status, HealthStatus::Degraded);
}

#[tokio::test]
async fn relative_path_is_a_config_error() {
    let home = tempfile::tempdir().unwrap();
    let err = ringrift_test_support::refused(
        INFO.name,
        build,
        home.path(),
        "[external_drive_sync]\npath = \"mnt/x\"\n",
    );
    assert!(
        err.to_string().contains("external_drive_sync.path"),
        "{err:#}"
    );
}
