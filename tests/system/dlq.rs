//! Dead letters beyond the happy path: dlq_retry goes on past a letter whose retry fails,
//! a RETRYING letter whose consumer never comes back returns to DEAD, and a letter whose
//! event retention removed is still redelivered from the letter's own copy.

use crate::router::{client, next, subscribe_durable, work, work_id};
use ringrift_proto::wire;
use ringrift_system_tests::{Home, wait_for_async};
use std::time::Duration;

type Client = handler_base::router_client::Client;

/// Publishes `id` and has durable consumer `consumer` nack it once (the router runs with
/// `max_deliver=1`), so it is dead-lettered; returns the consumer's open stream.
async fn dead_letter(c: &mut Client, consumer: &str, id: &str) -> tonic::Streaming<wire::Event> {
    let head = crate::router::stats(c).await.head_seq;
    let mut s = subscribe_durable(c, consumer, head + 1).await;
    c.publish(work(id)).await.unwrap();
    let ev = next(&mut s).await;
    assert_eq!(work_id(&ev), id);
    let r = c
        .nack(wire::NackRequest {
            consumer: consumer.into(),
            seq: ev.seq,
            reason: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.dead_lettered);
    s
}

async fn letters(c: &mut Client) -> Vec<wire::DeadLetter> {
    c.list_dead_letters(wire::ListDeadLettersRequest {
        consumer: String::new(),
        include_resolved: true,
    })
    .await
    .unwrap()
    .into_inner()
    .letters
}

async fn letter_state(c: &mut Client, id: u64) -> Option<wire::DeadLetterState> {
    letters(c)
        .await
        .into_iter()
        .find(|l| l.id == id)
        .and_then(|l| wire::DeadLetterState::try_from(l.state).ok())
}

async fn wait_letter_state(c: &Client, id: u64, want: wire::DeadLetterState) {
    wait_for_async(
        &format!("letter {id} {want:?}"),
        Duration::from_secs(10),
        || {
            let mut c = c.clone();
            async move { (letter_state(&mut c, id).await == Some(want)).then_some(()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_retry_goes_on_past_a_letter_whose_retry_fails() {
    let home = Home::new();
    let (_router, addr) =
        home.start_router("127.0.0.1:0", &["--set", "event_router.max_deliver=1"]);
    // The first letter belongs to a consumer the router does not know (gone): its retry
    // fails with NOT_FOUND on every pass.
    let db = rusqlite::Connection::open(home.path().join("events/events.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.execute(
        "INSERT INTO dead_letters (consumer, seq, type, reason, failures, dead_ms, state, data) VALUES ('ghost', 999999, 0, 'test', 1, 0, 1, x'')",
        [],
    )
    .unwrap();
    let mut c = client(&addr).await;
    let mut s = dead_letter(&mut c, "worker", "w1").await;
    let ls = letters(&mut c).await;
    assert_eq!(ls.len(), 2);
    assert!(
        ls[0].consumer == "ghost" && ls[1].consumer == "worker",
        "{ls:?}"
    );
    let good = ls[1].id;
    let _retry = home.spawn(
        "ringrift-dlq-retry",
        &[
            "--router",
            &addr,
            "--set",
            "dlq_retry.base_delay_s=0.05",
            "--set",
            "dlq_retry.cycle_interval_s=0.1",
        ],
    );
    // The second letter is redelivered although the first fails before it.
    let ev = next(&mut s).await;
    assert_eq!(work_id(&ev), "w1");
    c.ack(wire::AckRequest {
        consumer: "worker".into(),
        seq: ev.seq,
        ..Default::default()
    })
    .await
    .unwrap();
    wait_letter_state(&c, good, wire::DeadLetterState::Delivered).await;
    let ghost = letters(&mut c)
        .await
        .into_iter()
        .find(|l| l.consumer == "ghost")
        .unwrap();
    assert_eq!(ghost.state, wire::DeadLetterState::Dead as i32, "{ghost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrying_letter_whose_consumer_never_returns_goes_back_to_dead() {
    let home = Home::new();
    let (_router, addr) = home.start_router(
        "127.0.0.1:0",
        &[
            "--set",
            "event_router.max_deliver=1",
            "--set",
            "event_router.dlq_retrying_timeout_s=0.3",
        ],
    );
    let mut c = client(&addr).await;
    drop(dead_letter(&mut c, "gone", "w2").await);
    let id = letters(&mut c).await[0].id;
    let r = c
        .retry_dead_letter(wire::RetryDeadLetterRequest { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.letter.unwrap().state,
        wire::DeadLetterState::Retrying as i32
    );
    wait_letter_state(&c, id, wire::DeadLetterState::Dead).await;
    // Once the consumer is back, the next retry delivers it.
    let mut s = subscribe_durable(&mut c, "gone", 1).await;
    c.retry_dead_letter(wire::RetryDeadLetterRequest { id })
        .await
        .unwrap();
    assert_eq!(work_id(&next(&mut s).await), "w2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_letter_whose_event_retention_removed_is_redelivered_from_its_own_data() {
    let home = Home::new();
    let (_router, addr) = home.start_router(
        "127.0.0.1:0",
        &[
            "--set",
            "event_router.max_deliver=1",
            "--set",
            "event_router.retention_max_events=1",
            "--set",
            "event_router.retention_interval_s=0.05",
        ],
    );
    let mut c = client(&addr).await;
    let mut s = dead_letter(&mut c, "late", "w3").await;
    let letter = letters(&mut c).await.remove(0);
    c.publish(work("w4")).await.unwrap();
    let db = rusqlite::Connection::open(home.path().join("events/events.db")).unwrap();
    ringrift_system_tests::wait_for(
        "retention removed the event",
        Duration::from_secs(10),
        || {
            let n: i64 = db
                .query_row(
                    "SELECT COUNT(*) FROM events WHERE seq = ?1",
                    [letter.seq as i64],
                    |r| r.get(0),
                )
                .unwrap_or(1);
            (n == 0).then_some(())
        },
    );
    c.retry_dead_letter(wire::RetryDeadLetterRequest { id: letter.id })
        .await
        .unwrap();
    let mut got = Vec::new();
    while !got.contains(&"w3".to_owned()) {
        let ev = next(&mut s).await;
        got.push(work_id(&ev));
        if work_id(&ev) == "w3" {
            assert_eq!(ev.seq, letter.seq, "the letter keeps its seq");
        }
    }
}
