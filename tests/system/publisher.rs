//! router-client's `Publisher` against the real router: batches stay under the router's
//! 8 MiB message limit when events are near the 64 KiB event limit, and an event the
//! router refuses is reported by id instead of blocking the ones behind it.

use ringrift_proto::Event;
use ringrift_proto::wire::{self, event::Payload};
use ringrift_system_tests::{Home, router_log, wait_for_async};
use std::collections::HashSet;
use std::time::Duration;

fn padded(id: &str, bytes: usize) -> Event {
    Event::new(Payload::Json(format!(
        "{{\"pad\": \"{}\"}}",
        "x".repeat(bytes)
    )))
    .with_id(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_near_64_kib_reach_the_router_in_batches_under_its_limit() {
    const N: usize = 300; // 300 × 60 KiB ≈ 18 MiB: one count-capped batch would be refused.
    let home = Home::new();
    let (mut router, addr) = home.start_router("127.0.0.1:0", &[]);
    router.kill9();
    let p = router_client::Publisher::spawn(
        router_client::connect_lazy(&addr).unwrap(),
        "publisher-test@local",
        1_000,
    );
    for i in 0..N {
        p.publish(padded(&format!("big:{i}"), 60 << 10)).unwrap();
    }
    // Too large for the router (over 64 KiB): refused alone, by id.
    let refused = tokio::spawn({
        let p = p.clone();
        async move { p.publish_acked(padded("too-big", 70 << 10)).await }
    });
    wait_for_async("all accepted", Duration::from_secs(10), || {
        let n = p.buffered();
        async move { (n == N + 1).then_some(()) }
    })
    .await;
    let (_router, addr) = home.start_router(&addr, &[]);
    let err = tokio::time::timeout(Duration::from_secs(60), refused)
        .await
        .expect("the oversized event is answered")
        .unwrap()
        .expect_err("the router refuses a 70 KiB event");
    assert!(err.to_string().contains("too-big"), "{err}");
    wait_for_async("the outbox drained", Duration::from_secs(60), || {
        let n = p.buffered();
        async move { (n == 0).then_some(()) }
    })
    .await;
    let ids: HashSet<String> = router_log(&addr)
        .await
        .into_iter()
        .filter(|e| e.r#type == wire::EventType::External as i32)
        .map(|e| e.id)
        .collect();
    assert_eq!(ids.len(), N, "every event arrived once");
    assert!(!ids.contains("too-big"));
}
