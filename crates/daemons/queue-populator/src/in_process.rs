//! In process through `Context::for_test`: `build`, PIPELINE_PAUSED / RESUMED handled,
//! the cycle fills the queue only while not paused (the suppliers' shared contract).

use super::*;

#[tokio::test]
async fn build_pause_and_resume_through_the_handler() {
    let home = tempfile::tempdir().unwrap();
    ringrift_loop::alloc::check_pause_and_resume(INFO.name, build, home.path())
        .await
        .unwrap();
}
