//! training_trigger: pure decisions, then the daemon core with an in-file work queue.

use super::*;
use handler_base::Recorded;
use ringrift_store::work_queue::SqliteWorkQueue;
use std::time::Duration;

fn npz(wm: i64, rows: u64) -> Npz {
    Npz {
        path: format!("/d/{wm}.npz"),
        sha256: "s".into(),
        rows,
        watermark: wm,
    }
}

#[test]
fn decisions_name_their_reason() {
    let cfg = TriggerConfig {
        cooldown_s: 60.0,
        min_rows: 10,
        min_quality: 0.5,
        ..Default::default()
    };
    let mut st = TriggerState::default();
    assert!(matches!(decide(&st, &cfg, 0), Decision::Wait(w) if w.contains("no exported data")));
    st.latest = Some(npz(100, 5));
    assert!(matches!(decide(&st, &cfg, 0), Decision::Wait(w) if w.contains("min_rows")));
    st.latest = Some(npz(100, 50));
    assert_eq!(decide(&st, &cfg, 0), Decision::Queue(npz(100, 50)));
    st.in_flight = Some("w1".into());
    assert!(matches!(decide(&st, &cfg, 0), Decision::Wait(w) if w.contains("in flight")));
    st.in_flight = None;
    st.queued_watermark = 100;
    assert!(matches!(decide(&st, &cfg, 0), Decision::Wait(w) if w.contains("not newer")));
    st.latest = Some(npz(200, 50));
    st.last_done_ms = 1_000;
    assert!(matches!(decide(&st, &cfg, 30_000), Decision::Wait(w) if w.contains("cooldown")));
    assert!(matches!(decide(&st, &cfg, 61_000), Decision::Queue(_)));
    st.quality = Some(0.2);
    assert!(matches!(decide(&st, &cfg, 61_000), Decision::Wait(w) if w.contains("quality")));
}

fn trigger(dir: &std::path::Path) -> Trigger {
    let queue: Arc<dyn WorkQueue> = Arc::new(SqliteWorkQueue::open(&dir.join("wq.db")).unwrap());
    let state = StateStore::open(dir, &INFO).unwrap();
    Trigger::new(
        TriggerConfig {
            cooldown_s: 0.0,
            ..Default::default()
        },
        vec!["hex8_2p".parse().unwrap()],
        queue,
        state,
    )
}

fn export_event(wm: i64) -> Event {
    let p = wire::NpzExportCompleted {
        path: format!("/d/{wm}.npz"),
        rows: 100,
        sha256: "x".into(),
        games: 10,
        watermark: wm,
    };
    Event::new(wire::event::Payload::NpzExportCompleted(p)).with_config("hex8_2p")
}

#[tokio::test]
async fn duplicate_export_events_queue_one_training() {
    let dir = tempfile::tempdir().unwrap();
    let t = trigger(dir.path());
    let rec = Recorded::default();
    t.on_event(&export_event(50), &rec, 1).await.unwrap();
    t.on_event(&export_event(50), &rec, 2).await.unwrap();
    t.on_event(&export_event(60), &rec, 3).await.unwrap();
    let queued: Vec<_> = rec
        .payloads()
        .into_iter()
        .filter(|p| matches!(p, wire::event::Payload::WorkQueued(_)))
        .collect();
    assert_eq!(queued.len(), 1, "one training in flight at a time");
    assert_eq!(
        t.queue.open_items(WorkKind::Training, None).unwrap().len(),
        1
    );
}

#[tokio::test]
async fn restart_after_enqueue_before_save_adopts_the_open_item() {
    let dir = tempfile::tempdir().unwrap();
    let t = trigger(dir.path());
    let rec = Recorded::default();
    t.on_event(&export_event(50), &rec, 1).await.unwrap();
    // A crash that lost the state write: forget in_flight.
    let mut st: TriggerState = t.state.get("hex8_2p").await.unwrap().unwrap();
    st.in_flight = None;
    st.queued_watermark = 0;
    t.state.put("hex8_2p", &st).await.unwrap();
    let t2 = trigger(dir.path());
    t2.cycle(&rec, 5).await.unwrap();
    assert_eq!(
        t2.queue.open_items(WorkKind::Training, None).unwrap().len(),
        1,
        "no second item"
    );
}

#[tokio::test]
async fn finished_item_frees_the_config_even_without_the_event() {
    let dir = tempfile::tempdir().unwrap();
    let t = trigger(dir.path());
    let rec = Recorded::default();
    t.on_event(&export_event(50), &rec, 1).await.unwrap();
    let item = t
        .queue
        .claim("w", &[WorkKind::Training], Duration::from_secs(60))
        .unwrap()
        .unwrap();
    t.queue
        .complete(&item.item_id, "w", &serde_json::json!({}))
        .unwrap();
    t.on_event(&export_event(70), &rec, 2).await.unwrap();
    assert_eq!(
        t.queue.open_items(WorkKind::Training, None).unwrap().len(),
        0,
        "still in flight until reconciled"
    );
    t.cycle(&rec, 3).await.unwrap();
    let open = t.queue.open_items(WorkKind::Training, None).unwrap();
    assert_eq!(open.len(), 1);
    let p: ringrift_contracts::payload::TrainingItem =
        ringrift_contracts::wire::parse_payload(&open[0].item_id, &open[0].payload).unwrap();
    assert_eq!(p.watermark, 70);
}
