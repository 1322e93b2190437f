//! In process through `Context::for_test`: `build` and a cycle that sees a queue over
//! `max_depth` publishes QUEUE_ALERT.

use super::*;
use ringrift_store::work_queue::{NewWork, WorkKind};

#[tokio::test]
async fn build_and_alert_on_overflow() {
    let home = tempfile::tempdir().unwrap();
    let (ctx, published) =
        Context::for_test(INFO.name, home.path(), "[queue_monitor]\nmax_depth = 1\n").unwrap();
    let h = build(&ctx).unwrap();
    h.run_cycle(&ctx).await.unwrap();
    assert!(published.events().is_empty(), "an empty queue is no alert");
    let queue = ringrift_store::work_queue::open_home(home.path()).unwrap();
    for _ in 0..3 {
        let w = NewWork::new(WorkKind::Selfplay, None, 0, serde_json::json!({}));
        queue.enqueue(&w).unwrap();
    }
    h.run_cycle(&ctx).await.unwrap();
    assert!(
        published
            .payloads()
            .iter()
            .any(|p| matches!(p, wire::event::Payload::QueueAlert(_))),
        "{:?}",
        published.payloads()
    );
}
