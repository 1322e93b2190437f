//! In process through `Context::for_test`: `build`, `on_start`, an event handled and a
//! cycle; the config's stage shows in health.

use super::*;

#[tokio::test]
async fn build_handle_and_cycle() {
    let home = tempfile::tempdir().unwrap();
    let (ctx, published) = Context::for_test(INFO.name, home.path(), "").unwrap();
    let h = build(&ctx).unwrap();
    h.on_start(&ctx).await.unwrap();
    let p = wire::NpzExportCompleted {
        path: "/d/1.npz".into(),
        rows: 10,
        sha256: "x".into(),
        games: 10,
        watermark: 1,
    };
    let ev = Event::new(wire::event::Payload::NpzExportCompleted(p)).with_config("hex8_2p");
    h.handle_event(&ctx, &ev).await.unwrap();
    h.run_cycle(&ctx).await.unwrap();
    let health = h.health_check();
    assert!(health.message.contains("hex8_2p"), "{health:?}");
    assert!(published.events().is_empty(), "nothing stalled yet");
}
