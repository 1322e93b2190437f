//! In process through `Context::for_test`: `build`, PIPELINE_PAUSED / RESUMED handled,
//! the cycle fills the queue only while not paused.

use super::*;
use ringrift_proto::wire;

#[tokio::test]
async fn build_pause_and_resume_through_the_handler() {
    let home = tempfile::tempdir().unwrap();
    let (ctx, _published) = Context::for_test(INFO.name, home.path(), "").unwrap();
    let h = build(&ctx).unwrap();
    let queue = ringrift_pipeline::open_queue(home.path()).unwrap();
    let pending = || queue.depth().unwrap().pending;
    let paused = Event::new(wire::event::Payload::PipelinePaused(
        wire::PipelineControl {
            reason: "disk".into(),
        },
    ));
    h.handle_event(&ctx, &paused).await.unwrap();
    h.run_cycle(&ctx).await.unwrap();
    assert_eq!(pending(), 0);
    assert!(
        h.health_check().message.contains("paused"),
        "{:?}",
        h.health_check()
    );
    let resumed = Event::new(wire::event::Payload::PipelineResumed(
        wire::PipelineControl {
            reason: String::new(),
        },
    ));
    h.handle_event(&ctx, &resumed).await.unwrap();
    h.run_cycle(&ctx).await.unwrap();
    assert!(pending() > 0);
}
