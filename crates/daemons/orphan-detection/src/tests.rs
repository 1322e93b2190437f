//! In process through `Context::for_test`: `build`, a cycle that merges an orphan game DB
//! into the canonical stores and quarantines a corrupt one, leaves busy, known and foreign
//! databases alone, and never reports a file twice (also across a restart).

use super::*;
use ringrift_store::games::GameRecord;

fn game(id: &str, config: &str) -> GameRecord {
    let config_key: ConfigKey = config.parse().unwrap();
    GameRecord {
        game_id: id.into(),
        config_key,
        players: (0..config_key.players()).map(|i| format!("p{i}")).collect(),
        winner: Some(0),
        moves: vec![1, 2, 3],
        source_node: "elsewhere".into(),
        quality_score: 0.5,
        created_at: 1,
        policy: None,
        search_values: None,
    }
}

fn age(p: &Path, secs: u64) {
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(secs))
        .unwrap();
}

fn games_db(p: &Path, games: &[GameRecord]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    GameStore::open(p).unwrap().insert_games(games).unwrap();
    age(p, 600);
}

fn orphan_events(rec: &handler_base::Recorded) -> Vec<wire::OrphanDetected> {
    rec.payloads()
        .into_iter()
        .filter_map(|p| match p {
            wire::event::Payload::OrphanDetected(o) => Some(o),
            _ => None,
        })
        .collect()
}

fn count(p: &Path) -> u64 {
    GameStore::open(p).unwrap().count().unwrap()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

const TOML: &str = "[orphan_detection]\nsettle_s = 60\n";

#[tokio::test]
async fn merges_valid_orphans_quarantines_corrupt_ones_once() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let hex = paths::game_db(h, "hex8_2p".parse().unwrap());
    let sq = paths::game_db(h, "square8_3p".parse().unwrap());
    games_db(&hex, &[game("a", "hex8_2p")]);
    // A worker's canonical-pattern store is known, never an orphan.
    let worker = paths::games_dir(h).join("hex8_2p_worker1.db");
    games_db(&worker, &[game("w", "hex8_2p")]);
    let orphan = h.join("data/selfplay/x.db");
    games_db(
        &orphan,
        &[
            game("a", "hex8_2p"),
            game("b", "hex8_2p"),
            game("c", "square8_3p"),
        ],
    );
    let corrupt = paths::games_dir(h).join("old.db");
    std::fs::write(&corrupt, b"this is not a database at all").unwrap();
    age(&corrupt, 600);
    let foreign = h.join("data/other/tool.db");
    std::fs::create_dir_all(foreign.parent().unwrap()).unwrap();
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    age(&foreign, 600);
    let busy = h.join("data/selfplay/busy.db");
    games_db(&busy, &[game("z", "hex8_2p")]);
    age(&busy, 0);
    let hidden = paths::games_dir(h).join(".hex8_2p.db.tmp-1-abc");
    std::fs::write(&hidden, b"partial").unwrap();
    age(&hidden, 600);

    let (d, ctx, rec) = ringrift_test_support::daemon(INFO.name, build, h, "test", TOML);
    d.run_cycle(&ctx).await.unwrap();

    let mut ev = orphan_events(&rec);
    ev.sort_by(|a, b| a.path.cmp(&b.path));
    let got: Vec<(String, u64)> = ev.iter().map(|o| (o.path.clone(), o.games)).collect();
    assert_eq!(
        got,
        vec![
            (corrupt.to_string_lossy().into_owned(), 0),
            (orphan.to_string_lossy().into_owned(), 3),
        ]
    );
    // Merged by game_id into each config's canonical store.
    assert_eq!(count(&hex), 2, "a (already there) + b");
    assert_eq!(count(&sq), 1);
    assert_eq!(count(&worker), 1);
    // Moved, never deleted: the merged one marked merged, the corrupt one with its reason.
    assert!(!orphan.exists() && !corrupt.exists());
    let orphans = files_in(&paths::quarantine_dir(h).join("orphans"));
    assert_eq!(orphans.len(), 2, "{orphans:?}");
    let note = orphans.iter().find(|n| n.ends_with(".reason")).unwrap();
    let note =
        std::fs::read_to_string(paths::quarantine_dir(h).join("orphans").join(note)).unwrap();
    assert!(
        note.contains("merged by orphan_detection: 2 new of 3 games"),
        "{note}"
    );
    let q = files_in(&paths::quarantine_dir(h));
    let note = q
        .iter()
        .find(|n| n.starts_with("old.db") && n.ends_with(".reason"))
        .unwrap();
    let note = std::fs::read_to_string(paths::quarantine_dir(h).join(note)).unwrap();
    assert!(note.contains("not an SQLite database"), "{note}");
    // Left alone: being written, another program's database, a temp file.
    assert!(busy.exists() && foreign.exists() && hidden.exists());
    let health = d.health_check();
    assert_eq!(health.details["being_written"], "1");
    assert_eq!(health.details["other_databases"], "1");

    // Nothing new: no event; the quarantined copies are not orphans again.
    d.run_cycle(&ctx).await.unwrap();
    assert_eq!(orphan_events(&rec).len(), 2);
    assert_eq!(count(&hex), 2);

    // Once it settles, the busy one is found (the scan is not a one-off).
    age(&busy, 600);
    d.run_cycle(&ctx).await.unwrap();
    assert_eq!(orphan_events(&rec).len(), 3);
    assert_eq!(count(&hex), 3);
}

/// A merge that fails after the report is retried each cycle, and neither the retry nor
/// a restart reports the file again.
#[tokio::test]
async fn a_failed_merge_is_retried_without_reporting_again() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let orphan = h.join("data/selfplay/y.db");
    games_db(&orphan, &[game("a", "hex8_2p"), game("b", "hex8_2p")]);
    // The canonical store cannot be opened: a directory in its place.
    let hex = paths::game_db(h, "hex8_2p".parse().unwrap());
    std::fs::create_dir_all(&hex).unwrap();

    let (d, ctx, rec) = ringrift_test_support::daemon(INFO.name, build, h, "test", TOML);
    let err = d.run_cycle(&ctx).await.unwrap_err();
    assert!(err.to_string().contains("data/selfplay/y.db"), "{err:#}");
    assert_eq!(orphan_events(&rec).len(), 1);
    assert!(orphan.exists(), "not moved before it is merged");
    d.run_cycle(&ctx).await.unwrap_err();
    assert_eq!(orphan_events(&rec).len(), 1, "retry does not report again");

    // Restart: the persisted state remembers the report.
    let (ctx2, rec2) = Context::for_test(INFO.name, h, TOML).unwrap();
    let d2 = build(&ctx2).unwrap();
    d2.run_cycle(&ctx2).await.unwrap_err();
    assert!(
        orphan_events(&rec2).is_empty(),
        "{:?}",
        orphan_events(&rec2)
    );

    std::fs::remove_dir(&hex).unwrap();
    d2.run_cycle(&ctx2).await.unwrap();
    assert!(orphan_events(&rec2).is_empty());
    assert_eq!(count(&hex), 2);
    assert!(!orphan.exists());
}

#[tokio::test]
async fn bad_settle_is_a_config_error() {
    let home = tempfile::tempdir().unwrap();
    let err = ringrift_test_support::refused(
        INFO.name,
        build,
        home.path(),
        "[orphan_detection]\nsettle_s = -1\n",
    );
    assert!(
        err.to_string().contains("orphan_detection.settle_s"),
        "{err:#}"
    );
}
