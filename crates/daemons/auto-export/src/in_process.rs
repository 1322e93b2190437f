//! In process through `Context::for_test`: `build` with a scripted export job run by the
//! real job runner, NEW_GAMES_AVAILABLE handled: the export runs and
//! NPZ_EXPORT_COMPLETED names the file and its SHA-256.

use super::*;
use ringrift_store::games::{GameRecord, GameStore};

#[tokio::test]
async fn build_and_export_on_new_games() {
    let home = tempfile::tempdir().unwrap();
    let config: ConfigKey = "hex8_2p".parse().unwrap();
    let games: Vec<GameRecord> = (0..3)
        .map(|i| GameRecord {
            game_id: format!("g{i}"),
            config_key: config,
            players: vec!["a".into(), "b".into()],
            winner: Some(0),
            moves: vec![1, 2, 3],
            source_node: "n".into(),
            quality_score: 1.0,
            created_at: 0,
            policy: None,
            search_values: None,
        })
        .collect();
    GameStore::open(&paths::game_db(home.path(), config))
        .unwrap()
        .insert_games(&games)
        .unwrap();
    let output = paths::training_dir(home.path()).join("hex8_2p_after0.npz");
    let report = ExportReport {
        config_key: config,
        games: 3,
        rows: 30,
        output: output.clone(),
        sha256: "written by the job".into(),
        bytes: 1,
        max_seq: 3,
        elapsed_s: 0.1,
        rows_per_s: 300.0,
        skipped: 0,
    };
    let jobs = ringrift_jobs::scripted_job(home.path(), JobKind::Export, &report).unwrap();
    let toml = format!("[auto_export]\nthreshold = 2\n[jobs]\n{jobs}");
    let (ctx, published) = Context::for_test(INFO.name, home.path(), &toml).unwrap();
    let h = build(&ctx).unwrap();
    let ev = ringrift_proto::Event::new(wire::event::Payload::NewGamesAvailable(
        wire::NewGamesAvailable {
            new_games: 3,
            ..Default::default()
        },
    ))
    .with_config("hex8_2p");
    h.handle_event(&ctx, &ev).await.unwrap();
    let (sha, _) = ringrift_store::manifest::hash_file(&output).unwrap();
    let done: Vec<_> = published
        .payloads()
        .into_iter()
        .filter_map(|p| match p {
            wire::event::Payload::NpzExportCompleted(n) => Some(n),
            _ => None,
        })
        .collect();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(
        (
            done[0].path.as_str(),
            done[0].watermark,
            done[0].rows,
            &done[0].sha256
        ),
        (output.to_str().unwrap(), 3, 30, &sha)
    );
    assert!(
        h.health_check()
            .details
            .values()
            .any(|v| v.contains("exported 30 rows"))
    );
}
