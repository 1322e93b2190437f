//! auto_export decisions with fake jobs and a fake game count.

use super::*;
use handler_base::{ClientError, Recorded};
use ringrift_contracts::wire::report_json;
use ringrift_jobs::FakeJobs;
use std::sync::atomic::{AtomicI64, Ordering};

struct FakeGames(AtomicI64);

#[async_trait::async_trait]
impl Games for FakeGames {
    async fn since(&self, _c: ConfigKey, wm: i64) -> anyhow::Result<(u64, i64)> {
        let max = self.0.load(Ordering::SeqCst);
        Ok(((max - wm).max(0) as u64, max))
    }
}

/// The ledger's export writer of `dir`.
fn exporter(dir: &std::path::Path) -> ExportWriter {
    Ledger::open(dir).unwrap().exporter(&INFO).unwrap()
}

fn setup(dir: &std::path::Path, max_seq: i64) -> (Exporter, Arc<FakeJobs>, Arc<FakeGames>) {
    let games = Arc::new(FakeGames(AtomicI64::new(max_seq)));
    let g2 = games.clone();
    let jobs = FakeJobs::new(move |req| {
        let out = req.vars["output"].clone();
        std::fs::create_dir_all(std::path::Path::new(&out).parent().unwrap()).unwrap();
        std::fs::write(&out, b"npz bytes").unwrap();
        let max = g2.0.load(Ordering::SeqCst);
        let since: i64 = req.vars["since"].parse().unwrap();
        let r = ExportReport {
            config_key: req.vars["config_key"].parse().unwrap(),
            games: (max - since) as usize,
            rows: (max - since) as usize * 10,
            output: out.into(),
            sha256: "s".into(),
            bytes: 9,
            max_seq: max,
            elapsed_s: 0.1,
            rows_per_s: 1.0,
            skipped: 0,
        };
        report_json(req.kind, &r).map_err(|e| e.to_string())
    });
    let cfg = ExportConfig {
        threshold: 100,
        ..Default::default()
    };
    let state = StateStore::open(dir, &INFO).unwrap();
    let e = Exporter::new(
        cfg,
        vec!["hex8_2p".parse().unwrap()],
        dir.to_owned(),
        jobs.clone(),
        games.clone(),
        state,
        exporter(dir),
    );
    (e, jobs, games)
}

#[tokio::test]
async fn below_threshold_nothing_happens() {
    let dir = tempfile::tempdir().unwrap();
    let (e, jobs, _) = setup(dir.path(), 99);
    let rec = Recorded::default();
    e.check_all(&rec).await.unwrap();
    assert!(jobs.calls().is_empty() && rec.events().is_empty());
}

#[tokio::test]
async fn at_threshold_exports_once_and_advances_the_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let (e, jobs, games) = setup(dir.path(), 150);
    let rec = Recorded::default();
    e.check_all(&rec).await.unwrap();
    e.check_all(&rec).await.unwrap();
    assert_eq!(jobs.calls().len(), 1, "second check sees no new games");
    let evs = rec.events();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].id, "npz:hex8_2p:150");
    let wire::event::Payload::NpzExportCompleted(p) = &evs[0].payload else {
        panic!()
    };
    assert_eq!((p.rows, p.watermark, p.sha256.len()), (1500, 150, 64));
    // Others read the export and its watermark in the ledger.
    let ledger = Ledger::open(dir.path()).unwrap();
    let ex = ledger.exports().await.unwrap();
    assert!(
        matches!(&ex[..], [x] if x.watermark == 150 && x.rows == 1500 && x.sha256 == p.sha256),
        "{ex:?}"
    );
    games.0.store(260, Ordering::SeqCst);
    e.check_all(&rec).await.unwrap();
    assert_eq!(jobs.calls()[1].vars["since"], "150");
    assert_eq!(ledger.exports().await.unwrap()[0].watermark, 260);
}

#[tokio::test]
async fn a_restart_before_the_watermark_was_saved_repeats_with_the_same_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let (e, _, _) = setup(dir.path(), 150);
    let rec = Recorded::default();
    e.check_all(&rec).await.unwrap();
    // Simulate a crash after the ack but before the state write: forget the state.
    e.state
        .put("hex8_2p", &ExportState::default())
        .await
        .unwrap();
    let (e2, _, _) = setup(dir.path(), 150);
    e2.check_all(&rec).await.unwrap();
    let ids: Vec<String> = rec.events().iter().map(|e| e.id.clone()).collect();
    assert_eq!(
        ids,
        vec!["npz:hex8_2p:150", "npz:hex8_2p:150"],
        "same id: the router dedups the repeat"
    );
}

#[tokio::test]
async fn a_failed_export_does_not_move_the_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let games = Arc::new(FakeGames(AtomicI64::new(500)));
    let jobs = FakeJobs::new(|_| Err("disk full".into()));
    let state = StateStore::open(dir.path(), &INFO).unwrap();
    let e = Exporter::new(
        ExportConfig {
            threshold: 10,
            ..Default::default()
        },
        vec!["hex8_2p".parse().unwrap()],
        dir.path().to_owned(),
        jobs,
        games,
        state,
        exporter(dir.path()),
    );
    let rec = Recorded::default();
    let err = e.check_all(&rec).await.unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(e.state.get::<ExportState>("hex8_2p").await.unwrap(), None);
    assert!(rec.events().is_empty());
}

/// The router is down when the export is announced (the daemon then dies).
struct Down;

#[async_trait::async_trait]
impl Publish for Down {
    async fn publish_stored(&self, _ev: ringrift_proto::Event) -> Result<(), ClientError> {
        Err(ClientError::Closed)
    }
    async fn publish_acked(&self, _ev: ringrift_proto::Event) -> Result<(), ClientError> {
        Err(ClientError::Closed)
    }
    fn publish_latest(&self, _ev: ringrift_proto::Event) {}
    fn buffered(&self) -> usize {
        0
    }
}

#[tokio::test]
async fn an_export_written_before_a_crash_is_announced_not_exported_over() {
    let dir = tempfile::tempdir().unwrap();
    let (e, jobs, games) = setup(dir.path(), 150);
    assert!(e.check_all(&Down).await.is_err());
    let npz = dir.path().join("data/training/hex8_2p_after0.npz");
    let written = std::fs::read(&npz).unwrap();
    // More games arrive while the daemon is down; the restarted daemon must announce
    // the file it wrote, not export the same name again with more games.
    games.0.store(200, Ordering::SeqCst);
    let (e2, jobs2, games2) = setup(dir.path(), 200);
    let rec = Recorded::default();
    e2.check_all(&rec).await.unwrap();
    assert_eq!(jobs.calls().len() + jobs2.calls().len(), 1, "exported once");
    assert_eq!(
        std::fs::read(&npz).unwrap(),
        written,
        "the announced file is unchanged"
    );
    let evs = rec.events();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].id, "npz:hex8_2p:150");
    let wire::event::Payload::NpzExportCompleted(p) = &evs[0].payload else {
        panic!()
    };
    let (sha, _) = ringrift_store::manifest::hash_file(&npz).unwrap();
    assert_eq!((p.watermark, &p.sha256), (150, &sha));
    // The next export starts after what was announced.
    games2.0.store(300, Ordering::SeqCst);
    e2.check_all(&rec).await.unwrap();
    assert_eq!(jobs2.calls()[0].vars["since"], "150");
}

#[tokio::test]
async fn value_blend_is_passed_to_the_export_job_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (mut e, jobs, _) = setup(dir.path(), 150);
    e.check_all(&Recorded::default()).await.unwrap();
    assert_eq!(jobs.calls()[0].vars["value_blend"], "0.5", "the default");
    let dir = tempfile::tempdir().unwrap();
    let (e2, jobs, _) = setup(dir.path(), 150);
    e = e2;
    e.cfg.value_blend = 0.25;
    e.check_all(&Recorded::default()).await.unwrap();
    assert_eq!(jobs.calls()[0].vars["value_blend"], "0.25");

    let home = tempfile::tempdir().unwrap();
    let toml = "[auto_export]\nvalue_blend = 1.5\n";
    let (ctx, _) = Context::for_test(INFO.name, home.path(), toml).unwrap();
    let err = build(&ctx).err().expect("refused");
    assert!(handler_base::is_config_error(&err), "{err:#}");
    assert!(
        format!("{err:#}").contains("auto_export.value_blend"),
        "{err:#}"
    );
}
