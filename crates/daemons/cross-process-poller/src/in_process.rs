//! In process: `build` with `Context::for_test` against the real router binary started in a
//! temp home (loopback port 0; `ringrift_test_support`); one cycle bridges a row of the events table into the log.

use super::*;
use ringrift_test_support::Home;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_and_bridge_a_row() {
    let home = Home::new();
    let (_router, router_addr) = home.start_router_async(&[]).await;
    let (ctx, _published) = Context::for_test(INFO.name, home.path(), "").unwrap();
    let ctx = ctx.with_router(&router_addr).unwrap();
    let h = build(&ctx).unwrap();
    h.on_start(&ctx).await.unwrap();
    let db = home.path().join("data/cross_process_events.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute(
        "INSERT INTO events (event_type, payload) VALUES ('EXTERNAL', '{}')",
        [],
    )
    .unwrap();
    h.run_cycle(&ctx).await.unwrap();
    let head = ctx
        .client
        .clone()
        .stats(wire::StatsRequest {})
        .await
        .unwrap()
        .into_inner()
        .head_seq;
    assert_eq!(head, 1);
    let published: Option<i64> = c
        .query_row("SELECT router_seq FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(published, Some(1));
}
