//! In process through `Context::for_test`: `build` and one cycle (a maintenance pass)
//! reported in health.

use super::*;

#[tokio::test]
async fn build_and_run_a_pass() {
    let home = tempfile::tempdir().unwrap();
    let (ctx, _published) = Context::for_test(INFO.name, home.path(), "").unwrap();
    let h = build(&ctx).unwrap();
    assert_eq!(h.health_check().message, "no pass yet");
    h.run_cycle(&ctx).await.unwrap();
    assert_eq!(h.health_check().message, "last pass clean");
}
