//! In process through `Context::for_test`: `build` with a scripted train job run by the
//! real job runner, WORK_QUEUED handled: the queued training item is trained on and
//! TRAINING_STARTED / TRAINING_COMPLETED are published with the export's SHA-256.

use super::*;
use ringrift_contracts::wire::payload_json;
use ringrift_store::work_queue::{NewWork, WorkStatus};

#[tokio::test]
async fn build_and_train_a_queued_item() {
    let home = tempfile::tempdir().unwrap();
    let npz = paths::training_dir(home.path()).join("hex8_2p_after0.npz");
    std::fs::create_dir_all(npz.parent().unwrap()).unwrap();
    std::fs::write(&npz, b"rows").unwrap();
    let (sha, _) = ringrift_store::manifest::hash_file(&npz).unwrap();
    let output = paths::models_dir(home.path()).join("hex8_2p/gen0001_w7.rrm");
    let report = ringrift_contracts::example::train("hex8_2p".parse().unwrap(), &output);
    let jobs = ringrift_jobs::scripted_job(home.path(), JobKind::Train, &report).unwrap();
    let (ctx, published) =
        Context::for_test(INFO.name, home.path(), &format!("[jobs]\n{jobs}")).unwrap();
    let h = build(&ctx).unwrap();
    let queue = ringrift_store::work_queue::open_home(home.path()).unwrap();
    let item = TrainingItem {
        npz_path: npz.display().to_string(),
        npz_paths: vec![npz.display().to_string()],
        npz_sha256: sha.clone(),
        rows: 10,
        watermark: 7,
    };
    let id = queue
        .enqueue(&NewWork::new(
            WorkKind::Training,
            Some("hex8_2p".parse().unwrap()),
            1,
            payload_json(&item).unwrap(),
        ))
        .unwrap();
    let ev = ringrift_proto::Event::new(wire::event::Payload::WorkQueued(wire::WorkItem {
        work_id: id.clone(),
        kind: "training".into(),
        ..Default::default()
    }));
    h.handle_event(&ctx, &ev).await.unwrap();
    assert_eq!(
        queue.get(&id).unwrap().map(|i| i.status),
        Some(WorkStatus::Completed)
    );
    assert!(output.exists(), "the job wrote its model");
    let p = published.payloads();
    assert!(
        matches!(&p[..], [wire::event::Payload::TrainingStarted(s), wire::event::Payload::TrainingCompleted(c)]
            if s.run_id == id && c.run_id == id && c.npz_sha256 == sha && c.generation == 1),
        "{p:?}"
    );
    assert!(h.health_check().message.contains("generation 1"));
    // The checkpoint is in the ledger, where maintenance reads the watermark.
    let cps = ringrift_ledger::Ledger::open(home.path())
        .unwrap()
        .checkpoints()
        .await
        .unwrap();
    assert!(
        matches!(&cps[..], [c] if c.config.to_string() == "hex8_2p" && c.generation == 1
            && c.watermark == 7 && c.model == output.display().to_string()),
        "{cps:?}"
    );
}
