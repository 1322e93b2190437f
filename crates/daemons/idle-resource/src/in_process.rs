//! In process through `Context::for_test`: `build` with the real probe and one cycle.

use super::*;

#[tokio::test]
async fn build_and_run_a_cycle() {
    let home = tempfile::tempdir().unwrap();
    let (ctx, published) = Context::for_test(INFO.name, home.path(), "").unwrap();
    let h = build(&ctx).unwrap();
    h.run_cycle(&ctx).await.unwrap();
    let queue = ringrift_store::work_queue::open_home(home.path()).unwrap();
    let d = queue.depth().unwrap();
    // Every detection queues work and is published; no detection does neither.
    assert_eq!(
        published.events().is_empty(),
        d.pending == 0,
        "{:?}",
        published.payloads()
    );
    assert!(!h.health_check().message.is_empty());
}
