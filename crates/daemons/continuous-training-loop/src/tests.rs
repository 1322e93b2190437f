//! continuous_training_loop with a fake train job and a file work queue.

use super::*;
use handler_base::Recorded;
use ringrift_contracts::wire::{payload_json, report_json};
use ringrift_jobs::FakeJobs;
use ringrift_store::work_queue::SqliteWorkQueue;
use ringrift_store::work_queue::{NewWork, WorkStatus};
use wire::event::Payload;

fn setup(dir: &std::path::Path, jobs: Arc<FakeJobs>) -> Trainer {
    let queue: Arc<dyn WorkQueue> = Arc::new(SqliteWorkQueue::open(&dir.join("wq.db")).unwrap());
    let state = StateStore::open(dir, &INFO).unwrap();
    let ledger = Ledger::open(dir).unwrap().trainer(&INFO).unwrap();
    Trainer::new(
        LoopConfig::default(),
        "ctl@test".into(),
        dir.to_owned(),
        queue,
        jobs,
        state,
        ledger,
    )
}

fn ok_jobs() -> Arc<FakeJobs> {
    FakeJobs::new(|r| {
        let report = TrainReport {
            config_key: r.vars["config_key"].parse().unwrap(),
            samples: 10,
            train_rows: 9,
            val_rows: 1,
            epochs: 1,
            hidden: 8,
            params: 100,
            generation: 1,
            train_loss: 1.5,
            val_value_mse: 0.5,
            val_policy_ce: 1.0,
            val_policy_top1: 0.3,
            val_value_mse_baseline: 0.6,
            elapsed_s: 0.1,
            samples_per_s: 100.0,
            output: r.vars["output"].clone().into(),
            sha256: "m".into(),
        };
        report_json(r.kind, &report).map_err(|e| e.to_string())
    })
}

/// Queues a training item for a real export file under the home (its SHA-256 as
/// announced, unless `sha` overrides it).
fn queue_training_with(t: &Trainer, wm: i64, sha: Option<&str>) -> String {
    let npz = t.home.join(format!("data/training/hex8_2p_after{wm}.npz"));
    std::fs::create_dir_all(npz.parent().unwrap()).unwrap();
    std::fs::write(&npz, format!("npz {wm}")).unwrap();
    let (real, _) = ringrift_store::manifest::hash_file(&npz).unwrap();
    let npz = npz.display().to_string();
    let p = payload_json(&TrainingItem {
        npz_path: npz.clone(),
        npz_paths: vec![npz],
        npz_sha256: sha.map_or(real, str::to_owned),
        rows: 10,
        watermark: wm,
    })
    .unwrap();
    t.queue
        .enqueue(&NewWork::new(
            WorkKind::Training,
            Some("hex8_2p".parse().unwrap()),
            1,
            p,
        ))
        .unwrap()
}

fn queue_training(t: &Trainer, wm: i64) -> String {
    queue_training_with(t, wm, None)
}

#[tokio::test]
async fn an_export_whose_sha_differs_from_its_announcement_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = ok_jobs();
    let t = setup(dir.path(), jobs.clone());
    let id = queue_training_with(&t, 100, Some("0000"));
    let rec = Recorded::default();
    assert!(t.step(&rec).await.unwrap());
    assert!(
        jobs.calls().is_empty(),
        "no training on a file that is not the announced one"
    );
    let failed = rec.payloads().into_iter().find_map(|p| match p {
        Payload::TrainingFailed(f) => Some(f),
        _ => None,
    });
    let f = failed.expect("TRAINING_FAILED");
    assert!(f.error.contains("SHA-256") && f.run_id == id, "{f:?}");
}

#[tokio::test]
async fn trains_a_claimed_item_and_reports_start_and_completion() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = ok_jobs();
    let t = setup(dir.path(), jobs.clone());
    let id = queue_training(&t, 100);
    let rec = Recorded::default();
    assert!(t.step(&rec).await.unwrap());
    assert!(!t.step(&rec).await.unwrap(), "queue empty");
    let p = rec.payloads();
    assert!(matches!(&p[0], Payload::TrainingStarted(s) if s.run_id == id));
    assert!(matches!(&p[1], Payload::TrainingCompleted(c) if c.run_id == id && c.generation == 1));
    assert_eq!(
        t.queue.get(&id).unwrap().unwrap().status,
        WorkStatus::Completed
    );
    assert_eq!(jobs.calls()[0].key, "train:hex8_2p");
}

#[tokio::test]
async fn data_already_trained_on_is_not_trained_again() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = ok_jobs();
    let t = setup(dir.path(), jobs.clone());
    queue_training(&t, 100);
    queue_training(&t, 100);
    let rec = Recorded::default();
    while t.step(&rec).await.unwrap() {}
    queue_training(&t, 90);
    while t.step(&rec).await.unwrap() {}
    assert_eq!(
        jobs.calls().len(),
        1,
        "one training for watermark 100, none for the older 90"
    );
}

#[tokio::test]
async fn a_restarted_loop_resumes_the_item_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = ok_jobs();
    let t = setup(dir.path(), jobs.clone());
    let id = queue_training(&t, 100);
    // The previous process claimed it and died.
    t.queue
        .claim("ctl@test", &[WorkKind::Training], Duration::from_secs(3600))
        .unwrap()
        .unwrap();
    let t2 = setup(dir.path(), jobs.clone());
    assert!(t2.step(&Recorded::default()).await.unwrap());
    assert_eq!(
        t2.queue.get(&id).unwrap().unwrap().status,
        WorkStatus::Completed
    );
}

#[tokio::test]
async fn a_resumed_item_continues_from_the_model_its_first_attempt_chose() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = ok_jobs();
    let t = setup(dir.path(), jobs.clone());
    let models = paths::models_dir(dir.path()).join("hex8_2p");
    std::fs::create_dir_all(&models).unwrap();
    let first = models.join("gen0001_w50.rrm");
    std::fs::write(&first, b"1").unwrap();
    queue_training(&t, 100);
    t.queue
        .claim("ctl@test", &[WorkKind::Training], Duration::from_secs(3600))
        .unwrap()
        .unwrap();
    // The previous process chose gen 1, started the job and died; the job went on and
    // wrote gen 2, which is now the newest model.
    let held = t.queue.held_by("ctl@test").unwrap();
    let mut st = Trained {
        generation: 1,
        ..Trained::default()
    };
    st.started = Some(Started {
        item_id: held[0].item_id.clone(),
        init: Some(first.display().to_string()),
    });
    t.state.put("hex8_2p", &st).await.unwrap();
    std::fs::write(models.join("gen0002_w100.rrm"), b"2").unwrap();
    let t2 = setup(dir.path(), jobs.clone());
    assert!(t2.step(&Recorded::default()).await.unwrap());
    assert_eq!(
        jobs.calls()[0].vars["init"],
        first.display().to_string(),
        "the resumed job is the one the first attempt started"
    );
    let st: Trained = t2.state.get("hex8_2p").await.unwrap().unwrap();
    assert_eq!((st.generation, st.started), (2, None));
    // A new item chooses afresh: the newest generation.
    queue_training(&t2, 200);
    assert!(t2.step(&Recorded::default()).await.unwrap());
    assert!(jobs.calls()[1].vars["init"].ends_with("gen0002_w100.rrm"));
}

#[tokio::test]
async fn a_failed_job_publishes_training_failed_and_returns_the_item() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = FakeJobs::new(|_| Err("out of memory".into()));
    let t = setup(dir.path(), jobs);
    let id = queue_training(&t, 100);
    let rec = Recorded::default();
    t.step(&rec).await.unwrap();
    assert!(
        rec.payloads()
            .iter()
            .any(|p| matches!(p, Payload::TrainingFailed(f) if f.error.contains("out of memory")))
    );
    let item = t.queue.get(&id).unwrap().unwrap();
    assert_eq!(
        (item.status, item.attempts),
        (WorkStatus::Pending, 1),
        "retried later"
    );
}
