//! In process through `Context::for_test`: `build`, an NPZ_EXPORT_COMPLETED handled, a
//! cycle queues training and publishes WORK_QUEUED.

use super::*;
use ringrift_proto::wire::event::Payload;

#[tokio::test]
async fn build_handle_export_and_queue_training() {
    let home = tempfile::tempdir().unwrap();
    let (ctx, published) =
        Context::for_test(INFO, home.path(), "[training_trigger]\ncooldown_s = 0\n").unwrap();
    assert_eq!(
        ctx.lifecycle.cycle_interval,
        std::time::Duration::from_secs(60),
        "the declared default"
    );
    let h = build(&ctx).unwrap();
    h.on_start(&ctx).await.unwrap();
    let p = wire::NpzExportCompleted {
        path: "/d/7.npz".into(),
        rows: 100,
        sha256: "x".into(),
        games: 10,
        watermark: 7,
    };
    let ev = Event::new(Payload::NpzExportCompleted(p)).with_config("hex8_2p");
    h.handle_event(&ctx, &ev).await.unwrap();
    h.run_cycle(&ctx).await.unwrap();
    let queued: Vec<_> = published
        .payloads()
        .into_iter()
        .filter(|p| matches!(p, Payload::WorkQueued(w) if w.kind == "training"))
        .collect();
    assert_eq!(queued.len(), 1, "{:?}", published.payloads());
    h.run_cycle(&ctx).await.unwrap();
    assert_eq!(
        published.events().len(),
        1,
        "in flight: nothing queued twice"
    );
}
