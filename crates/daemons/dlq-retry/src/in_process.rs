//! In process: `build` with `Context::for_test` against the real router binary started in a
//! temp home (loopback port 0; `ringrift_test_support`); a real dead letter is retried by one cycle.

use super::*;
use ringrift_test_support::Home;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_and_retry_a_dead_letter() {
    let home = Home::new();
    let (_router, router_addr) = home.start_router_async(&[]).await;
    let (ctx, _published) = Context::for_test(
        INFO.name,
        home.path(),
        "[dlq_retry]\nbase_delay_s = 0.001\n",
    )
    .unwrap();
    let ctx = ctx.with_router(&router_addr).unwrap();
    let h = build(&ctx).unwrap();
    let mut c = ctx.client.clone();
    c.publish(wire::Event {
        id: "poison".into(),
        r#type: wire::EventType::External as i32,
        payload: Some(wire::event::Payload::Json("{}".into())),
        ..Default::default()
    })
    .await
    .unwrap();
    let req = wire::SubscribeRequest {
        consumer: "c".into(),
        types: vec![wire::EventType::External as i32],
        start: Some(wire::subscribe_request::Start::FromSeq(1)),
        ..Default::default()
    };
    let mut sub = handler_base::router_client::Subscription::new(ctx.client.clone(), req);
    let mut dead = false;
    for _ in 0..20 {
        let ev = sub.next().await.unwrap();
        sub.nack(ev.seq, "poison").await.unwrap();
        let letters = c
            .list_dead_letters(wire::ListDeadLettersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .letters;
        if !letters.is_empty() {
            dead = true;
            break;
        }
    }
    assert!(dead, "the event became a dead letter");
    h.run_cycle(&ctx).await.unwrap();
    let health = h.health_check();
    assert_eq!(
        health.details.get("retried_total").map(String::as_str),
        Some("1"),
        "{health:?}"
    );
}
